"""What the whole process (one event loop, every model) is doing: decides when a request may run on the loop.

A batcher hands each batch to a worker thread, so the event loop can keep receiving while the model runs.
When the server is idle that hand-off and the wake-up back cost more than they buy, so a lone request may
run on the event loop itself (`batcher.BatchPolicy.inline`). That is safe only while nothing else wants
the loop, which the loop cannot see directly: requests that arrive while it is busy wait inside gRPC,
uncounted. Two signs of load are used instead:
- another request is in flight (batchers, and live generation streams, whose steps the loop delivers);
- a request reached a batcher sooner than `QUIET_GAP_S` after the previous answer: too soon for a client
  to have received that answer and sent a new request, so it was already waiting.
Either sign turns inline runs off for `HOLD_S`, and every new sign extends that.
"""

from __future__ import annotations

QUIET_GAP_S = 0.00025
"""Shorter than any client round trip (a bare grpc.aio echo takes 0.4 ms here), longer than the loop needs to
move from one answer to the next waiting request (under 0.1 ms)."""
HOLD_S = 0.05


class Activity:
    in_flight = 0
    """Batcher requests submitted and not yet answered, plus live generation streams (event loop only)."""
    last_answer = 0.0
    """`time.monotonic()` when a batcher last answered a request."""
    busy_until = 0.0

    @classmethod
    def alone(cls, now: float) -> bool:
        """Whether a request submitted at `now` (and already counted in `in_flight`) has the process to itself."""
        if cls.in_flight > 1 or now - cls.last_answer < QUIET_GAP_S:
            cls.busy_until = now + HOLD_S
            return False
        return now >= cls.busy_until
