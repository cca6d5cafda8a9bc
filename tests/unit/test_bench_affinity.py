"""bench/affinity.py: the CPU lists the benches take for --server-cpus and --client-cpus."""

from __future__ import annotations

import os

import pytest

from bench import affinity


def test_cpu_lists_take_numbers_and_ranges():
    available = sorted(os.sched_getaffinity(0))
    first = available[0]
    assert affinity.cpu_set(str(first)) == {first}
    if first + 1 in available:
        assert affinity.cpu_set(f"{first},{first + 1}") == {first, first + 1}
        assert affinity.cpu_set(f"{first}-{first + 1}") == {first, first + 1}


@pytest.mark.parametrize("text", ["a", "1-", "-1", "0;1", ""])
def test_a_cpu_list_that_does_not_parse_names_the_form_expected(text):
    with pytest.raises(ValueError, match="expected numbers and ranges such as 0,1 or 2-7"):
        affinity.cpu_set(text)


def test_cpus_this_process_may_not_use_are_refused():
    missing = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(ValueError, match=rf"CPUs \[{missing}\] are not available"):
        affinity.cpu_set(str(missing))


def test_no_placement_asked_measures_nothing():
    assert affinity.placement(None, None) is None
