"""Routing: first match wins per recipient, @mssante on the trust list, per-lab and
per-patient splits, unmatched recipients, and `portique routes test`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.config import Config, RouteConfig, parse_config
from gateway.routes import explain_route, mssante_predicates, plan_copies
from gateway.trustlist import load_trust_list
from gateway.verdicts import Action
from tests.connectors._helpers import LISTED_DOMAIN, SAMPLE_TRUST_LIST, VALID_INS

TRUST = load_trust_list(SAMPLE_TRUST_LIST)
IS_MSS = TRUST.is_mssante_address
IS_LISTED = TRUST.contains

ROUTES = (
    RouteConfig("mssante", ("@mssante",), "deliver", "mssante"),
    RouteConfig("labs", ("*@labo-dupont.fr", "*@*.protheses.test"), "pseudonymise", "relay"),
    RouteConfig("patients", ("*@patients.example",), "own-data-only", "relay"),
    RouteConfig("blocked", ("*@blocked.test",), "reject"),
    RouteConfig("default", ("*@*",), "reject-if-phi", "relay"),
)


def by_route(copies: list[Any]) -> dict[tuple[str, str], tuple[str, ...]]:
    return {(c.route, c.audience): c.recipients for c in copies}


def test_first_match_wins_per_recipient() -> None:
    routes = (
        RouteConfig("special", ("*@labo-dupont.fr",), "hold"),
        *ROUTES,
    )
    copies = plan_copies(["a@labo-dupont.fr", "b@gmail.com"], routes, IS_MSS)
    assert [(c.route, c.action) for c in copies] == [
        ("special", Action.HOLD),
        ("default", Action.REJECT_IF_PHI),
    ]


def test_three_audiences_three_copies() -> None:
    rcpts = [f"dr.x@{LISTED_DOMAIN}", "commandes@labo-dupont.fr", "ami@gmail.com"]
    copies = plan_copies(rcpts, ROUTES, IS_MSS)
    assert [(c.route, c.action, c.connector, c.recipients) for c in copies] == [
        ("mssante", Action.DELIVER, "mssante", (rcpts[0],)),
        ("labs", Action.PSEUDONYMISE, "relay", (rcpts[1],)),
        ("default", Action.REJECT_IF_PHI, "relay", (rcpts[2],)),
    ]
    assert copies[1].audience == "labo-dupont.fr"
    assert copies[0].audience == copies[2].audience == ""


def test_mssante_is_an_exact_domain_match() -> None:
    rcpts = [
        f"dr.x@{LISTED_DOMAIN}",
        f"dr.y@sub.{LISTED_DOMAIN}",
        "dr.z@unknown.mssante.fr",
        "dr.w@mssante.apicrypt.org",
    ]
    groups = by_route(plan_copies(rcpts, ROUTES, IS_MSS))
    assert groups[("mssante", "")] == (rcpts[0], rcpts[3])
    assert groups[("default", "")] == (rcpts[1], rcpts[2])


def test_without_a_trust_list_mssante_matches_nothing() -> None:
    copies = plan_copies([f"dr.x@{LISTED_DOMAIN}"], ROUTES, None)
    assert [c.route for c in copies] == ["default"]


def test_patient_addresses_need_a_valid_ins_and_are_never_rerouted() -> None:
    good = f"{VALID_INS}@patient.mssante.fr"
    bad = "279035121518988@patient.mssante.fr"
    copies = plan_copies([good, bad], ROUTES, IS_MSS, is_mssante_domain=IS_LISTED)
    assert [(c.route, c.action, c.recipients) for c in copies] == [
        ("mssante", Action.DELIVER, (good,)),
        ("", Action.REJECT, (bad,)),
    ]
    # Without the domain predicate (older callers), the bad one does not reach MSSanté.
    legacy = plan_copies([bad], ROUTES, IS_MSS)
    assert legacy[0].route == "default"


def test_each_lab_domain_gets_its_own_copy() -> None:
    rcpts = [
        "a@labo-dupont.fr",
        "b@nord.protheses.test",
        "c@labo-dupont.fr",
        "d@sud.protheses.test",
    ]
    copies = plan_copies(rcpts, ROUTES, IS_MSS)
    assert by_route(copies) == {
        ("labs", "labo-dupont.fr"): ("a@labo-dupont.fr", "c@labo-dupont.fr"),
        ("labs", "nord.protheses.test"): ("b@nord.protheses.test",),
        ("labs", "sud.protheses.test"): ("d@sud.protheses.test",),
    }
    assert all(c.action == Action.PSEUDONYMISE for c in copies)


def test_own_data_only_copies_are_per_recipient_with_the_patient() -> None:
    roster = {"jeanne@patients.example": "P1", "paul@patients.example": "P2"}
    rcpts = ["jeanne@patients.example", "paul@patients.example", "inconnu@patients.example"]
    copies = plan_copies(rcpts, ROUTES, IS_MSS, own_patient_of=lambda a: roster.get(a.lower()))
    assert [(c.recipients, c.own_patient) for c in copies] == [
        (("jeanne@patients.example",), "P1"),
        (("paul@patients.example",), "P2"),
        (("inconnu@patients.example",), None),
    ]
    assert all(c.action == Action.OWN_DATA_ONLY and c.audience == "" for c in copies)


def test_unmatched_and_reject_routes() -> None:
    routes = ROUTES[:-1]  # no default
    copies = plan_copies(["x@gmail.com", "y@blocked.test", "z@gmail.com"], routes, IS_MSS)
    assert [(c.route, c.action, c.connector, c.recipients) for c in copies] == [
        ("", Action.REJECT, "", ("x@gmail.com", "z@gmail.com")),
        ("blocked", Action.REJECT, "", ("y@blocked.test",)),
    ]


def test_duplicate_recipients_get_one_copy() -> None:
    copies = plan_copies(["A@Labo-Dupont.fr", "a@labo-dupont.fr"], ROUTES, IS_MSS)
    assert [c.recipients for c in copies] == [("A@Labo-Dupont.fr",)]


def test_overrides_and_unknown_files_travel_with_the_copy() -> None:
    route = RouteConfig(
        "labs", ("*@labo-dupont.fr",), "pseudonymise", "relay", {"birth_date": "generalise"}, "pass"
    )
    (copy,) = plan_copies(["a@labo-dupont.fr"], (route,))
    assert copy.overrides == {"birth_date": "generalise"}
    assert copy.unknown_files == "pass"


def test_default_route_when_none_configured() -> None:
    cfg = Config()
    copies = plan_copies(["x@gmail.com"], cfg.effective_routes())
    assert [(c.route, c.action, c.connector) for c in copies] == [
        ("default", Action.REJECT_IF_PHI, "outbox")
    ]


addresses = st.from_regex(
    r"[a-z]{1,6}@(labo-dupont\.fr|gmail\.com|[a-z]{1,5}\.protheses\.test|adsea29\.mssante\.fr|blocked\.test|patients\.example|x\.org)",
    fullmatch=True,
)


@settings(deadline=None)  # wall-clock deadlines flake on a loaded 2-core runner
@given(st.lists(addresses, max_size=12), st.booleans())
def test_every_recipient_in_exactly_one_copy(rcpts: list[str], with_default: bool) -> None:
    routes = ROUTES if with_default else ROUTES[:-1]
    copies = plan_copies(rcpts, routes, IS_MSS, is_mssante_domain=IS_LISTED)
    flat = [r for c in copies for r in c.recipients]
    assert sorted(flat) == sorted(set(rcpts))
    for c in copies:
        if c.action == Action.PSEUDONYMISE:
            assert {r.rpartition("@")[2] for r in c.recipients} == {c.audience}
        if c.action == Action.OWN_DATA_ONLY:
            assert len(c.recipients) == 1
        if c.route == "mssante":
            assert all(IS_MSS(r) for r in c.recipients)


# --- config, explain and CLI -----------------------------------------------------------


def write_config(tmp_path: Path) -> Path:
    shutil.copy(SAMPLE_TRUST_LIST, tmp_path / "liste.xml")
    (tmp_path / "ca.pem").write_text("")
    cfg = tmp_path / "portique.toml"
    cfg.write_text(
        """
data_dir = "data"
[connectors.relay]
host = "127.0.0.1"
port = 2526
tls = "none"
[connectors.mssante]
host = "smtp.operateur.example"
port = 587
client_cert = "client.pem"
client_key = "client.key"
ca_file = "ca.pem"
trust_list = "liste.xml"
[connectors.lab_dupont]
type = "lab_https"
url = "https://upload.labo-dupont.example/api"
[[routes]]
name = "mssante"
match = ["@mssante"]
action = "deliver"
connector = "mssante"
[[routes]]
name = "labs"
match = ["*@labo-dupont.fr"]
action = "pseudonymise"
connector = "lab_dupont"
[[routes]]
name = "ordinary"
match = ["*@gmail.com"]
action = "reject-if-phi"
connector = "relay"
"""
    )
    return cfg


def test_explain_route(tmp_path: Path) -> None:
    from gateway.config import load_config

    cfg = load_config(write_config(tmp_path))
    is_mss, listed = mssante_predicates(cfg)
    assert is_mss is not None and listed is not None
    d = explain_route(f"dr.x@{LISTED_DOMAIN}", cfg, is_mss, listed)
    assert (d.route, d.action, d.connector, d.connector_type, d.pattern, d.on_trust_list) == (
        "mssante", "deliver", "mssante", "mssante", "@mssante", True,
    )  # fmt: skip
    d = explain_route("a@labo-dupont.fr", cfg, is_mss, listed)
    assert (d.route, d.connector, d.connector_type, d.on_trust_list) == (
        "labs", "lab_dupont", "lab_https", False,
    )  # fmt: skip
    d = explain_route("x@elsewhere.org", cfg, is_mss, listed)
    assert (d.route, d.action, d.note) == ("", "reject", "no route matches")


def test_cli_routes_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    status = main(["routes", "test", "-c", str(cfg), f"dr.x@{LISTED_DOMAIN}", "a@labo-dupont.fr"])
    out = capsys.readouterr().out
    assert status == 0
    assert f"dr.x@{LISTED_DOMAIN}\n  route:      mssante (match '@mssante')" in out
    assert "connector:  mssante (type mssante)" in out
    assert "connector:  lab_dupont (type lab_https)" in out
    assert out.count("MSSanté:    domain listed") == 1
    assert out.count("MSSanté:    domain not listed") == 1

    status = main(["routes", "test", "-c", str(cfg), "279035121518988@patient.mssante.fr"])
    out = capsys.readouterr().out
    assert status == 1
    assert "rejected, nothing sent" in out and "valid INS" in out


def test_cli_routes_test_without_mssante(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('data_dir = "d"\n')
    assert main(["routes", "test", "-c", str(cfg), "x@gmail.com"]) == 0
    out = capsys.readouterr().out
    assert "route:      default" in out and "(type outbox)" in out
    assert "no trust list configured" in out


def test_parse_config_route_defaults() -> None:
    cfg = parse_config({"connectors": {"relay": {"host": "127.0.0.1", "tls": "none", "port": 25}}})
    assert [r.connector for r in cfg.effective_routes()] == ["relay"]


def test_cli_routes_test_with_unreadable_trust_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "liste.xml").write_bytes(b"<ListeBlancheMSSante")
    assert main(["routes", "test", "-c", str(cfg), f"dr.x@{LISTED_DOMAIN}"]) == 1
    captured = capsys.readouterr()
    assert "not well-formed" in captured.err
    assert "rejected, nothing sent" in captured.out  # no catch-all route in this config
    assert "MSSanté:    trust list unreadable" in captured.out
