"""Configuration: unknown keys and insecure combinations are errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config, parse_config
from gateway.errors import ConfigError


def test_embedded_defaults_route_everything_through_reject_if_phi_to_outbox() -> None:
    cfg = parse_config({})
    assert cfg.smtp.listen == "127.0.0.1:2525"
    (route,) = cfg.effective_routes()
    assert (route.match, route.action, route.connector) == (("*",), "reject-if-phi", "outbox")
    assert cfg.effective_connectors()["outbox"].type == "outbox"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"smtp": {"listn": "x"}}, "smtp.listn"),
        ({"bogus": 1}, "bogus"),
        ({"smtp": {"allowed_networks": ["0.0.0.0/0"]}}, "smtp.allowed_networks"),
        (
            {"connectors": {"relay": {"host": "smtp.example.net", "tls": "none"}}},
            "connectors.relay.tls",
        ),
        ({"connectors": {"relay": {"host": "h", "tls": "sometimes"}}}, "connectors.relay.tls"),
        (
            {"connectors": {"mssante": {"host": "h", "ca_file": "c", "trust_list": "t"}}},
            "client_cert",
        ),
        (
            {
                "routes": [
                    {"name": "r", "match": ["*"], "action": "teleport", "connector": "outbox"}
                ]
            },
            "routes[0].action",
        ),
        (
            {"routes": [{"name": "r", "match": ["*"], "action": "deliver", "connector": "nope"}]},
            "routes[0].connector",
        ),
        ({"smtp": {"max_recipients": "many"}}, "smtp.max_recipients"),
    ],
)
def test_bad_config_names_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_config(data)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    (sub / "portique.toml").write_text(
        'data_dir = "state"\n[connectors.relay]\nhost = "127.0.0.1"\nport = 25\ntls = "none"\n'
    )
    cfg = load_config(sub / "portique.toml")
    assert cfg.data_dir == sub.resolve() / "state"
    assert cfg.effective_routes()[0].connector == "relay"
