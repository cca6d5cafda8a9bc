"""`errors.quoted`: client strings echoed in error messages are quoted and bounded."""

from __future__ import annotations

import pytest

from service.errors import quoted


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("add_sub", "'add_sub'"),
        ("", "''"),
        ("it's", '"it\'s"'),
        ("a\nb\x00", "'a\\nb\\x00'"),
        (b"ok\xff", "'ok\\\\xff'"),
    ],
)
def test_short_values_are_quoted_like_repr(value: str | bytes, expected: str) -> None:
    assert quoted(value) == expected


def test_long_strings_are_cut_with_the_count_left_out() -> None:
    assert quoted("x" * 70) == repr("x" * 64) + "…(6 more characters)"
    assert quoted("é" * 10, limit=4) == "'éééé'…(6 more characters)"
    assert quoted(b"abcdef", limit=2) == "'ab'…(4 more characters)"


def test_a_megabyte_stays_short() -> None:
    assert len(quoted("n" * (1 << 20))) < 100
    assert quoted("n" * 64) == repr("n" * 64)
