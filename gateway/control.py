"""Control socket: the operator's line to a running gateway.

A Unix socket `<data_dir>/control.sock`, mode 0600 (only the gateway's user), speaking
one JSON object per line: request `{"cmd": "queue.list", "args": {...}}`, reply
`{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`. Errors are fixed
phrases; no exception text crosses the socket.

When no gateway runs, the CLI acts on data_dir directly (`OfflineControl`), through the
same `dispatch` table, so both paths give the same answers.

Commands: queue.list, queue.show {id}, queue.retry {id}, queue.delete {id},
lockdown.on, lockdown.off, lockdown.status, ping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any, Protocol

from gateway.errors import PortiqueError
from gateway.logging import get_logger

log = get_logger("portique.control")

# One request line at most 64 KiB: commands are tiny; this bounds a misbehaving client.
MAX_REQUEST = 64 * 1024
# A client that sends nothing for this long is dropped, in seconds.
CLIENT_TIMEOUT = 30.0


class QueueOps(Protocol):
    """What the control commands need: DeliveryQueue (online) or an offline stand-in."""

    def list(self) -> Any: ...
    def show(self, queue_id: str) -> Any: ...
    def retry(self, queue_id: str) -> bool: ...
    def delete(self, queue_id: str, user: str = "") -> bool: ...
    def set_lockdown(self, on: bool, user: str = "") -> None: ...
    @property
    def lockdown(self) -> bool: ...


def dispatch(queue: QueueOps, cmd: str, args: dict[str, Any]) -> Any:
    """Run one command; raises KeyError for unknown commands or missing arguments."""
    user = str(args.get("user", "cli"))
    if cmd == "ping":
        return "pong"
    if cmd == "queue.list":
        return [e.as_dict() for e in queue.list()]
    if cmd == "queue.show":
        entry = queue.show(str(args["id"]))
        return entry.as_dict() if entry is not None else None
    if cmd == "queue.retry":
        return queue.retry(str(args["id"]))
    if cmd == "queue.delete":
        return queue.delete(str(args["id"]), user=user)
    if cmd == "lockdown.on":
        queue.set_lockdown(True, user=user)
        return True
    if cmd == "lockdown.off":
        queue.set_lockdown(False, user=user)
        return False
    if cmd == "lockdown.status":
        return queue.lockdown
    raise KeyError(cmd)


class ControlServer:
    def __init__(self, service: Any, path: Path) -> None:
        self.service = service
        self.path = path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            if _socket_alive(self.path):
                raise OSError("another gateway is running on this data_dir")
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), CLIENT_TIMEOUT)
                except (TimeoutError, ValueError):
                    break
                if not line:
                    break
                reply = self.handle(line[:MAX_REQUEST])
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            cmd = str(request["cmd"])
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "malformed request"}
        try:
            result = dispatch(self.service.queue, cmd, args)
        except KeyError:
            return {"ok": False, "error": "unknown command or missing argument"}
        except Exception as exc:
            log.error("control_command_failed", cmd=cmd, error=type(exc).__name__)
            return {"ok": False, "error": "command failed"}
        log.info("control_command", cmd=cmd)
        return {"ok": True, "result": result}


def _socket_alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


class ControlError(PortiqueError):
    pass


def send_command(path: Path, cmd: str, args: dict[str, Any] | None = None) -> Any:
    """Blocking client for the CLI. Raises ConnectionError when no gateway listens."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(CLIENT_TIMEOUT)
    try:
        s.connect(str(path))
        s.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "command failed")))
    return reply.get("result")


def run_command(data_dir: Path, cmd: str, args: dict[str, Any] | None = None) -> Any:
    """Through the running gateway if there is one, else directly on data_dir."""
    path = data_dir / "control.sock"
    if path.exists():
        try:
            return send_command(path, cmd, args)
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # stale socket: no gateway runs
    return run_offline(data_dir, cmd, args or {})


def run_offline(data_dir: Path, cmd: str, args: dict[str, Any]) -> Any:
    from crypto.aead import Sealer
    from crypto.keys import load_keys
    from gateway.config import QueueConfig
    from gateway.events import EventBus, LogSink
    from gateway.queue import DeliveryQueue, QueueStore

    ring = load_keys(data_dir)
    store = QueueStore(data_dir, Sealer(ring))
    events = EventBus()
    events.subscribe(LogSink(ring.digest_key))
    queue = DeliveryQueue(
        store, QueueConfig(), {}, events, hostname="", bounce_connector=lambda _s: ""
    )
    try:
        try:
            return dispatch(queue, cmd, args)
        except KeyError as exc:
            raise ControlError("unknown command or missing argument") from exc
    finally:
        store.close()
