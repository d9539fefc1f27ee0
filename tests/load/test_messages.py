"""The message mix: sizes, unique ids, valid planted NIRs, and a leak finder that finds
planted values and nothing else."""

from __future__ import annotations

import email
import email.policy

import messages
import pytest
import sink
from stdnum.fr import nir as stdnum_nir


def test_every_planted_nir_has_a_valid_key() -> None:
    pool = messages.patient_pool()
    assert len(pool) == messages.POOL_SIZE
    for p in pool:
        assert stdnum_nir.is_valid(p.nir), p


def test_pool_is_deterministic_and_repr_hides_values() -> None:
    a = messages.patient_pool(3)
    b = messages.patient_pool.__wrapped__(3)
    assert a == b
    assert a != messages.patient_pool(4)
    assert a[0].last_name not in repr(a[0])
    assert a[0].nir not in repr(a[0])


@pytest.mark.parametrize(
    ("kind", "low", "high"),
    [("lab", 1_800, 2_600), ("html", 25_000, 40_000), ("stl", 6_800_000, 7_300_000)],
)
def test_sizes_follow_the_issue_mix(kind: str, low: int, high: int) -> None:
    (_lid, _idx, data), *_ = messages.generate("t", 1, kind)
    assert low <= len(data) <= high
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_ids_are_unique_and_parse_back_and_mix_interleaves() -> None:
    items = list(messages.generate("run1", 20, "lab:3,html:1"))
    ids = [lid for lid, _, _ in items]
    assert len(set(ids)) == 20
    kinds = [messages.parse_load_id(lid)[2] for lid in ids]  # type: ignore[index]
    assert kinds.count("lab") == 15 and kinds.count("html") == 5
    assert "html" in kinds[:4]  # interleaved, not all labs first
    for lid, idx, data in items:
        assert sink.load_id_of(data) == lid
        assert messages.parse_load_id(lid)[3] == idx  # type: ignore[index]


@pytest.mark.parametrize("spec", ["pizza", "lab:-1", "lab:0", "lab:x"])
def test_bad_mix_is_a_clear_error(spec: str) -> None:
    with pytest.raises(ValueError):
        messages.parse_mix(spec)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("lab", {"name", "nir", "phone", "email"}),
        ("html", {"name", "nir", "phone", "email"}),
        ("stl", {"name"}),
    ],
)
def test_leak_finder_sees_planted_values_through_transfer_encodings(
    kind: str, expected: set[str]
) -> None:
    (lid, idx, data), *_ = messages.generate("t", 1, kind)
    # The values sit inside quoted-printable or base64: a raw byte search misses some.
    found = set(messages.find_leaks(sink.decoded_content(data), idx))
    assert found == expected
    got_id, leaks = sink.check_message(data, messages.DEFAULT_SEED, messages.CHECKED_KINDS)
    assert got_id == lid
    assert set(leaks) == expected


def pseudonymise_for_test(data: bytes, idx: int) -> bytes:
    """What a pseudonymising relay does, crudely: re-encode the text with tokens."""
    p = messages.patient_pool()[idx]
    msg = email.message_from_bytes(data, policy=email.policy.default)
    body = msg.get_content()
    for value in (p.full_name, p.last_name, p.nir_spaced, p.nir, p.phone, p.email, p.birth_date):
        body = body.replace(value, "PAT-TOKEN")
    msg.set_content(body, charset="utf-8", cte="quoted-printable")
    return msg.as_bytes(policy=email.policy.SMTP)


def test_leak_finder_is_quiet_on_a_pseudonymised_message() -> None:
    (_lid, idx, data), *_ = messages.generate("t", 1, "lab")
    clean = pseudonymise_for_test(data, idx)
    assert messages.find_leaks(sink.decoded_content(clean), idx) == ()
    # Only the message's own patient is looked for: another patient's values are absent.
    pool = messages.patient_pool()
    other = next(q.index for q in pool if q.last_name != pool[idx].last_name)
    assert messages.find_leaks(sink.decoded_content(data), other) == ()


def test_leak_finder_matches_case_accent_and_separator_variants() -> None:
    p = messages.patient_pool()[0]
    text = (
        f"{messages.ascii_fold(p.full_name).upper()} / {p.nir[:5]}-{p.nir[5:10]}.{p.nir[10:]}"
    ).encode()
    assert set(messages.find_leaks(text, 0)) == {"name", "nir"}


def test_sample_files_and_roster(tmp_path) -> None:  # type: ignore[no-untyped-def]
    roster = tmp_path / "roster.csv"
    assert (
        messages.main(
            ["--out", str(tmp_path / "m"), "--count", "2", "--lf", "--roster-csv", str(roster)]
        )
        == 0
    )
    files = sorted((tmp_path / "m").glob("*.eml"))
    assert len(files) == 2
    assert b"\r\n" not in files[0].read_bytes()
    lines = roster.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("last_name,first_name,birth_date")
    assert len(lines) == messages.POOL_SIZE + 1
