"""HyperscanMatcher's re-read shortcuts give the candidates finditer gives on the whole text.

The engine-level hypothesis tests (test_properties) compare findings; these compare the
matchers' candidates directly, on folded (ASCII) text built to exercise the shortcuts:
several triggers of one shape in one window, with gaps between them (e-mails, ages), runs
of capitals before a junction (names).
"""

from __future__ import annotations

from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.scan.matchers import (
    HyperscanMatcher,
    ReMatcher,
    _after_barrier,
    _located_starts,
    hyperscan_available,
)

pytestmark = pytest.mark.skipif(not hyperscan_available(), reason="Hyperscan not installed")

TOKENS = st.sampled_from(
    [
        " ",
        "  ",
        "\n",
        ", ",
        ") ou au ",
        "@",
        "a@b.fr",
        "jean.dupont@free.fr",
        "x-y_z+1@mail.example.com",
        "@@",
        ".",
        "-",
        "accueil",
        "cabinet-tilleuls.fr",
        "a" * 40,
        "B" * 35,
        "Prochain controle prevu le 19/11/2024. ",
        "patient de ",
        "agee de ",
        "Age : ",
        "(72 ans)",
        "45 ans",
        "3 mois",
        " an ",
        "DUPONT ",
        "LE ",
        "N'",
        "D'",
        "Jean ",
        "Jean-Pierre ",
        "Marie",
        "MARTIN-DUBOIS",
        "Dr ",
        "Mme ",
        "pour ",
        "12 rue des Lilas",
        "75012 Paris",
        "06 12 34 56 78",
        "02/11/2024",
    ]
)


@lru_cache(maxsize=1)
def matchers() -> tuple[HyperscanMatcher, ReMatcher]:
    return HyperscanMatcher([]), ReMatcher([])


@settings(max_examples=600, deadline=None)
@given(parts=st.lists(TOKENS, max_size=40))
def test_hyperscan_and_re_find_the_same_shape_candidates(parts: list[str]) -> None:
    folded = "".join(parts)
    hyperscan, re_matcher = matchers()
    data = folded.encode("ascii")
    assert sorted(hyperscan.shapes(folded, data)) == sorted(re_matcher.shapes(folded, data))


def test_two_emails_in_one_window_are_both_found_across_the_gap() -> None:
    folded = "ecrire a jean.dupont@free.fr) ou au 07 10 87 54 21. " * 3 + "x accueil@cab.fr"
    hyperscan, re_matcher = matchers()
    data = folded.encode("ascii")
    found = hyperscan.shapes(folded, data)
    assert sorted(found) == sorted(re_matcher.shapes(folded, data))
    assert sum(1 for name, _, _ in found if name == "email") == 4


@settings(max_examples=600, deadline=None)
@given(parts=st.lists(TOKENS, max_size=40))
def test_located_starts_are_every_position_the_locator_reaches_the_anchor_from(
    parts: list[str],
) -> None:
    """_located_starts stops searching a window once the rest of it is one word: the
    starts it returns are still all those a match at each position of the window finds."""
    folded = "".join(parts)
    data = folded.encode("ascii")
    hyperscan, _ = matchers()
    for shape_index, spans in hyperscan._shape_db.scan_grouped(data):
        plan = hyperscan._plans[shape_index]
        if plan.locate is None:
            continue
        triggers = sorted(set(spans[0::2]))
        expected = set()
        for trigger in triggers:
            anchor = trigger + plan.offset
            low = max(0, anchor - plan.before)
            if plan.alphabet is not None:
                low = _after_barrier(data, low, anchor, plan.alphabet)
            expected |= {
                position
                for position in range(low, anchor)
                if plan.locate.match(folded, position, anchor) is not None
            }
        assert _located_starts(plan, folded, data, triggers) == sorted(expected)
