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

The second sign rests on a machine where the loop takes less than `QUIET_GAP_S` from one answer to the next
waiting request. Where it takes longer (slower cores, a sandbox's slower network stack), requests waiting
behind each other would look like one client's back-to-back requests and run one by one on the loop, never
batching: each runs to its answer without yielding, so the next never sees another in flight. Hence a probe:
after `PROBE_AFTER` lone runs in a row that each came within `PROBE_GAP_S` of the previous answer, the next
runs in a worker thread (on the same session as a lone run on the loop), and while it runs there, requests
already waiting reach the batcher and show the load. Probes that find nobody waiting come ever more rarely
(`PROBE_AFTER_MAX`): a client alone pays a thread hand-off for under 1% of its requests, and when load begins
after it, at most that many waiting requests run one by one before a probe finds them.
"""

from __future__ import annotations

QUIET_GAP_S = 0.00025
"""Shorter than any client round trip (a bare grpc.aio echo takes 0.4 ms here), longer than the loop needs to
move from one answer to the next waiting request (under 0.1 ms)."""
HOLD_S = 0.05
PROBE_AFTER = 16
PROBE_AFTER_MAX = 128
"""A probe that finds nobody waiting doubles the run of lone requests before the next one, up to this; one that
follows a sign of load (since the previous probe) brings it back to `PROBE_AFTER`."""
PROBE_GAP_S = 0.002
"""Lone runs closer than this to the previous answer count towards a probe; a later one starts the count again."""


class Activity:
    in_flight = 0
    """Batcher requests submitted and not yet answered, plus live generation streams (event loop only)."""
    last_answer = 0.0
    """`time.monotonic()` when a batcher last answered a request."""
    busy_until = 0.0
    streak = 0
    """Requests in a row found alone, each within `PROBE_GAP_S` of the previous answer."""
    probe_after = PROBE_AFTER
    signs = 0
    """Signs of load seen so far; `signs_at_probe` as it was at the last probe."""
    signs_at_probe = 0

    @classmethod
    def alone(cls, now: float) -> bool:
        """Whether a request submitted at `now` (and already counted in `in_flight`) has the process to itself."""
        if cls.in_flight > 1 or now - cls.last_answer < QUIET_GAP_S:
            cls.busy_until = now + HOLD_S
            cls.signs += 1
            return False
        return now >= cls.busy_until

    @classmethod
    def probe(cls, now: float) -> bool:
        """Whether a request found `alone` at `now` should run in a worker thread all the same, as the probe."""
        cls.streak = cls.streak + 1 if now - cls.last_answer < PROBE_GAP_S else 0
        if cls.streak <= cls.probe_after:
            return False
        loaded = cls.signs != cls.signs_at_probe
        cls.probe_after = PROBE_AFTER if loaded else min(2 * cls.probe_after, PROBE_AFTER_MAX)
        cls.streak, cls.signs_at_probe = 0, cls.signs
        return True
