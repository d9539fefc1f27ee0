"""Fixtures for relay tests: a sink and a running in-process Portique."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.service import Service
from tests.relay._helpers import Sink, make_config


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = await Sink().start()
    yield s
    await s.stop()
    gc.collect()  # surface unclosed sockets here, not in another area's test


@pytest.fixture
async def portique_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    services: list[Service] = []

    async def start(sink_port: int | None, **kwargs: Any) -> Service:
        service_kwargs = kwargs.pop("service_kwargs", {})
        cfg = make_config(tmp_path / "data", sink_port, **kwargs)
        svc = Service(cfg, **service_kwargs)
        await svc.start()
        services.append(svc)
        return svc

    yield start
    for svc in services:
        await svc.stop(grace=0.5)
    gc.collect()
