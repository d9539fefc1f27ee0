"""The fast address-header parser gives exactly what email.utils.getaddresses gives."""

from __future__ import annotations

from email.utils import getaddresses

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.pipeline.message import parse_address_list

# Characters that matter to the address grammar, plus letters with and without accents.
_ALPHABET = st.sampled_from(list("aZé0 .,;:<>@\"()\\[]'_-+#!~ß\t") + ["É", "ü"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.text(_ALPHABET, max_size=40), min_size=1, max_size=3))
@example(["Cabinet dentaire du Parc <secretariat@cabinet-dentaire.test>"])
@example(["Élodie Dupré <e.d@x.fr>", "commandes@labo.test"])
@example(["A  B <a@b.c>"])
@example(["J. D <a@b.c>"])
@example(['"Dupont, Jean" <j@x.fr>'])
@example(["a@b.c, d@e.f"])
@example(["Undisclosed recipients:;"])
def test_same_pairs_as_getaddresses(values: list[str]) -> None:
    assert parse_address_list(values) == getaddresses(values)


def test_common_shapes_parsed() -> None:
    assert parse_address_list(["Laboratoire de prothese <commandes@labo.test>"]) == [
        ("Laboratoire de prothese", "commandes@labo.test")
    ]
    assert parse_address_list(["<a@b.c>", "d@e.f"]) == [("", "a@b.c"), ("", "d@e.f")]


_WORD = st.text(st.sampled_from(list("aZé0_-+'.!ü")), min_size=1, max_size=8)
_ADDRESS = st.builds(lambda a, b: f"{a}@{b}", _WORD, _WORD)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.one_of(
            _ADDRESS,
            _ADDRESS.map(lambda a: f"<{a}>"),
            st.builds(
                lambda words, sep, a: f"{sep.join(words)} <{a}>",
                st.lists(_WORD, min_size=1, max_size=4),
                st.sampled_from([" ", "  ", "\t"]),
                _ADDRESS,
            ),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_same_pairs_on_address_shapes(values: list[str]) -> None:
    """Values shaped like real headers, so that the fast path is taken often."""
    assert parse_address_list(values) == getaddresses(values)
