"""deploy/grafana/portique.json and deploy/prometheus.yml stay in step with the code:
every series the dashboard queries is one that gateway.metrics exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.config import MetricsConfig, parse_listen
from gateway.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_SERIES = re.compile(r"\bportique_[a-z0-9_]+")


def exported_series() -> set[str]:
    metrics = Metrics()
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        kind = family.type
        if kind == "counter":
            names.add(family.name + "_total")
        elif kind == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def dashboard_panels() -> list[dict]:
    data = json.loads((DEPLOY / "grafana" / "portique.json").read_text(encoding="utf-8"))
    assert data["title"] == "Portique" and data["uid"]
    return [p for p in data["panels"] if p["type"] != "row"]


def test_dashboard_queries_only_exported_series() -> None:
    exported = exported_series()
    queried: set[str] = set()
    for panel in dashboard_panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queried.update(_SERIES.findall(target["expr"]))
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, f"unknown series: {sorted(queried - exported)}"


def test_dashboard_covers_every_family_the_issue_lists() -> None:
    queried = {
        name
        for panel in dashboard_panels()
        for target in panel["targets"]
        for name in _SERIES.findall(target["expr"])
    }
    for required in (
        "portique_messages_received_total",
        "portique_messages_processed_total",
        "portique_messages_delivered_total",
        "portique_findings_total",
        "portique_scan_duration_seconds_bucket",
        "portique_end_to_end_latency_seconds_bucket",
        "portique_queue_depth",
        "portique_queue_oldest_age_seconds",
        "portique_delivery_attempts_total",
        "portique_delivery_failures_total",
        "portique_tls_handshake_failures_total",
        "portique_bytes_received_total",
        "portique_bytes_sent_total",
        "portique_audit_chain_ok",
        "portique_lockdown",
        "portique_client_cert_expiry_timestamp_seconds",
    ):
        assert required in queried, required


def test_dashboard_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard_panels():
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps at {(x, y)}"
                cells.add((x, y))


def test_prometheus_scrapes_the_default_metrics_port() -> None:
    text = (DEPLOY / "prometheus.yml").read_text(encoding="utf-8")
    _, port = parse_listen(MetricsConfig().listen)
    assert f'"portique:{port}"' in text
    assert "metrics_path: /metrics" in text
