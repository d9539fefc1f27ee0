"""Asyncio SMTP load driver: sends a message mix over N connections, then checks that every
accepted message reached the sink, pseudonymised, and prints throughput and latency.

Trust boundary: the driver talks to the gateway under test over loopback SMTP, and learns
about deliveries from a verifying sink (sink.py), either in this process or in another
one through its JSON-lines report. It never prints a planted value: leaks are counted by
kind, messages are named by `X-Load-Id`.

Invariants:
- Every message carries a unique `X-Load-Id`; an accepted message that never reaches the
  sink within `--settle` seconds is "missing", and the exit status is then 1.
- With `--expect pseudonymised` (the default) any planted name, NIR, phone or e-mail that
  reaches the sink is a leak, and the exit status is 1. With `--expect plain` the reverse
  is checked (every arrival still carries its planted values), which validates the
  checker itself and is right for a `deliver` route.
- Latency is measured from the moment the client has written the final dot to the moment
  the sink received it (`time.monotonic()`, system-wide on Linux).

Modes:
- maximum rate (default): N connections send M messages back to back;
- fixed rate `--rate R`: messages are offered at R msg/s (for latency at half the
  maximum sustained rate);
- sustained `--rate R --duration S`: R*S messages, e.g. 10 msg/s for 600 s (zero-loss soak).

Examples:
    python load-tests/driver.py --self-test -n 4 -m 200           # driver straight to its sink
    python load-tests/driver.py --port 2525 --sink-port 2600 -n 20 -m 2000 --mix lab
    python load-tests/driver.py --port 2525 --sink-port 2600 --rate 50 -m 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import messages  # noqa: E402
import sink as sink_mod  # noqa: E402

# Reply wait per SMTP command, seconds. The gateway's own budget for the final dot is
# 30 s (smtp.data_reply_budget); waiting a little longer shows its 4xx instead of ours.
COMMAND_TIMEOUT = 60.0
# How long to wait after the last acceptance for deliveries to reach the sink (seconds):
# covers the gateway's queue poll interval and one delivery round, not retry backoff.
DEFAULT_SETTLE = 60.0
# Poll period when following an external sink's report file, seconds.
REPORT_POLL = 0.05


class SmtpReplyError(Exception):
    def __init__(self, stage: str, code: int) -> None:
        super().__init__(f"{stage}: {code}")
        self.stage = stage
        self.code = code


@dataclass
class LoadOptions:
    host: str = "127.0.0.1"
    port: int = 2525
    connections: int = 4
    count: int = 100
    mix: str = "lab"
    pipelining: bool = True
    tls: bool = False
    cafile: str = ""  # verify the gateway's certificate against this CA; "" = no verify
    rate: float = 0.0  # msg/s offered; 0 = as fast as the connections go
    duration: float = 0.0  # with rate: count = rate * duration
    expect: str = "pseudonymised"  # pseudonymised | plain | any
    settle: float = DEFAULT_SETTLE
    seed: int = messages.DEFAULT_SEED
    run: str = ""
    sender: str = messages.SENDER
    recipient: str = messages.LAB_RECIPIENT
    files: tuple[str, ...] = ()  # .eml files to send instead of generated messages
    helo: str = "load-driver.test"

    def total(self) -> int:
        if self.rate > 0 and self.duration > 0:
            return max(1, int(self.rate * self.duration))
        return self.count


@dataclass
class Sent:
    load_id: str
    patient: int
    size: int
    end_of_data: float
    accepted_at: float


@dataclass
class LoadReport:
    offered: int = 0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # "stage:code" -> count
    errors: dict[str, int] = field(default_factory=dict)  # exception name -> count
    arrived: int = 0
    missing: int = 0
    unknown_arrivals: int = 0
    duplicate_arrivals: int = 0
    leaks: dict[str, int] = field(default_factory=dict)  # kind -> messages leaking it
    not_plain: int = 0  # with expect=plain: arrivals that had lost planted values
    accepted_bytes: int = 0
    accept_seconds: float = 0.0
    deliver_seconds: float = 0.0
    accepted_per_s: float = 0.0
    delivered_per_s: float = 0.0
    mb_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)  # end of DATA -> sink
    accept_latency_ms: dict[str, float] = field(default_factory=dict)  # end of DATA -> 250
    offered_rate: float = 0.0
    connections: int = 0
    pipelining: bool = False
    tls: bool = False
    mix: str = ""
    expect: str = ""
    peak_rss_kib: dict[int, int] = field(default_factory=dict)  # --watch-pid: pid -> VmHWM

    def ok(self) -> bool:
        bad_leaks = self.expect == "pseudonymised" and any(self.leaks.values())
        return (
            self.missing == 0
            and not bad_leaks
            and self.not_plain == 0
            and not self.errors
            and not self.refused
            and self.accepted == self.offered
        )


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        # Nearest-rank percentile: the smallest value with at least q of the data at or below.
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {
        "p50": round(pick(0.50) * 1000, 2),
        "p95": round(pick(0.95) * 1000, 2),
        "p99": round(pick(0.99) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


# --- a minimal SMTP client (pipelining-aware; aiosmtplib does not pipeline) -------------


class SmtpConnection:
    def __init__(self, opts: LoadOptions) -> None:
        self.opts = opts
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.extensions: set[str] = set()
        # Where the conversation is, so that a timeout or reset is reported by stage.
        self.stage = "connect"

    async def _reply(self) -> tuple[int, list[bytes]]:
        assert self.reader is not None
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), COMMAND_TIMEOUT)
            if not line:
                raise ConnectionError("connection closed by server")
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines

    async def _command(self, cmd: bytes, stage: str, ok: int = 250) -> list[bytes]:
        assert self.writer is not None
        self.stage = stage
        self.writer.write(cmd + b"\r\n")
        await self.writer.drain()
        code, lines = await self._reply()
        if code != ok:
            raise SmtpReplyError(stage, code)
        return lines

    def _parse_ehlo(self, lines: list[bytes]) -> None:
        self.extensions = {ln[4:].split(b" ")[0].strip().upper().decode() for ln in lines[1:]}

    async def connect(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.opts.host, self.opts.port), COMMAND_TIMEOUT
        )
        self.reader, self.writer = reader, writer
        self.stage = "greeting"
        code, _ = await self._reply()
        if code != 220:
            raise SmtpReplyError("greeting", code)
        self._parse_ehlo(await self._command(b"EHLO " + self.opts.helo.encode(), "ehlo"))
        if self.opts.tls:
            if "STARTTLS" not in self.extensions:
                raise SmtpReplyError("starttls-not-offered", 0)
            await self._command(b"STARTTLS", "starttls", ok=220)
            ctx = ssl.create_default_context(cafile=self.opts.cafile or None)
            if not self.opts.cafile:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            await writer.start_tls(ctx, server_hostname=self.opts.host)
            self._parse_ehlo(await self._command(b"EHLO " + self.opts.helo.encode(), "ehlo-tls"))

    async def send(self, data: bytes) -> tuple[float, float]:
        """Send one message; returns (end_of_data, accepted_at) monotonic times."""
        assert self.writer is not None
        mail = b"MAIL FROM:<" + self.opts.sender.encode() + b"> SIZE=" + str(len(data)).encode()
        rcpt = b"RCPT TO:<" + self.opts.recipient.encode() + b">"
        if "SIZE" not in self.extensions:
            mail = mail.split(b" SIZE=")[0]
        if self.opts.pipelining and "PIPELINING" in self.extensions:
            self.stage = "mail-rcpt-data"
            self.writer.write(mail + b"\r\n" + rcpt + b"\r\nDATA\r\n")
            await self.writer.drain()
            codes = [(await self._reply())[0] for _ in range(3)]
            for stage, code, want in zip(
                ("mail", "rcpt", "data"), codes, (250, 250, 354), strict=True
            ):
                if code != want:
                    if codes[2] == 354:  # server still expects data: end it empty
                        self.writer.write(b".\r\n")
                        await self._reply()
                    await self._command(b"RSET", "rset")
                    raise SmtpReplyError(stage, code)
        else:
            await self._command(mail, "mail")
            try:
                await self._command(rcpt, "rcpt")
            except SmtpReplyError:
                await self._command(b"RSET", "rset")
                raise
            await self._command(b"DATA", "data", ok=354)
        self.stage = "body"
        body = dot_stuff(data)
        self.writer.write(body)
        await asyncio.wait_for(self.writer.drain(), COMMAND_TIMEOUT)
        # End of DATA: the body is with the kernel and the transport buffer is empty, so the
        # 3-byte final dot goes out in this write; the sink cannot have seen it earlier.
        self.stage = "dot"
        end_of_data = time.monotonic()
        self.writer.write(b".\r\n")
        await asyncio.wait_for(self.writer.drain(), COMMAND_TIMEOUT)
        code, _ = await self._reply()
        if code != 250:
            raise SmtpReplyError("dot", code)
        return end_of_data, time.monotonic()

    async def close(self) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(b"QUIT\r\n")
            await self.writer.drain()
            await asyncio.wait_for(self._reply(), 5.0)
        except (TimeoutError, OSError, ConnectionError, ValueError):
            pass
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
        self.writer = None


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2 transparency, and a final CRLF before the dot line."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    data = data.replace(b"\r\n.", b"\r\n..")
    return b"." + data if data.startswith(b".") else data


# --- arrivals ----------------------------------------------------------------------------


class ArrivalTracker:
    """Collects sink arrivals; `wait_for(ids, deadline)` returns when all have arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[str, sink_mod.Arrival] = {}
        self.unknown = 0
        self.duplicates = 0
        self._changed = asyncio.Event()

    def add(self, arrival: sink_mod.Arrival) -> None:
        if not arrival.load_id:
            self.unknown += 1
        elif arrival.load_id in self.arrivals:
            self.duplicates += 1  # allowed (at-least-once), counted
        else:
            self.arrivals[arrival.load_id] = arrival
        self._changed.set()

    async def wait_for(self, ids: set[str], deadline: float) -> None:
        while not ids.issubset(self.arrivals.keys()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return

    async def follow_report(self, path: Path, stop: asyncio.Event) -> None:
        """Tail an external sink's JSON-lines report."""
        offset = 0
        pending = b""
        while True:
            chunk = _read_tail(path, offset)
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    d = json.loads(line)
                    self.add(
                        sink_mod.Arrival(
                            d["id"], d["t"], d["size"], tuple(d["leaks"]), d.get("rcpts", 1)
                        )
                    )
            if stop.is_set() and not chunk:
                return
            await asyncio.sleep(REPORT_POLL)


def _read_tail(path: Path, offset: int) -> bytes:
    """Bytes appended to `path` since `offset` (small reads of a local report file)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read()
    except FileNotFoundError:
        return b""


# --- the load itself ---------------------------------------------------------------------


def message_source(opts: LoadOptions) -> Iterator[tuple[str, int, bytes]]:
    if opts.files:
        datas = [
            Path(f).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for f in opts.files
        ]
        for seq in range(opts.total()):
            data = datas[seq % len(datas)]
            lid = messages.load_id(opts.run, seq, messages.FILE_KIND, 0)
            # Files carry no X-Load-Id of their own: prepend one per copy.
            yield lid, -1, f"X-Load-Id: {lid}\r\n".encode() + data
        return
    yield from messages.generate(opts.run, opts.total(), opts.mix, opts.seed)


async def send_load(opts: LoadOptions, report: LoadReport) -> tuple[list[Sent], float]:
    """Run the load; returns what was accepted and the time of the first connection."""
    queue: asyncio.Queue[tuple[str, int, bytes] | None] = asyncio.Queue(
        maxsize=opts.connections * 2
    )
    sent: list[Sent] = []
    refused: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    started = time.monotonic()

    async def worker() -> None:
        conn: SmtpConnection | None = None
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                lid, patient, data = item
                try:
                    if conn is None:
                        conn = SmtpConnection(opts)
                        await conn.connect()
                    end_of_data, accepted_at = await conn.send(data)
                    sent.append(Sent(lid, patient, len(data), end_of_data, accepted_at))
                except SmtpReplyError as exc:
                    refused[f"{exc.stage}:{exc.code}"] += 1
                    if exc.code in (421, 0) or exc.stage in ("greeting", "ehlo", "starttls"):
                        await _drop(conn)
                        conn = None
                except (TimeoutError, OSError, ConnectionError, ssl.SSLError, ValueError) as exc:
                    stage = conn.stage if conn is not None else "connect"
                    errors[f"{type(exc).__name__} at {stage}"] += 1
                    await _drop(conn)
                    conn = None
        finally:
            await _drop(conn)

    async def produce() -> None:
        interval = 1.0 / opts.rate if opts.rate > 0 else 0.0
        for i, item in enumerate(message_source(opts)):
            if interval:
                delay = started + i * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await queue.put(item)
        for _ in range(opts.connections):
            await queue.put(None)

    workers = [asyncio.create_task(worker()) for _ in range(opts.connections)]
    await produce()
    await asyncio.gather(*workers)
    report.refused = dict(refused)
    report.errors = dict(errors)
    return sent, started


async def _drop(conn: SmtpConnection | None) -> None:
    if conn is not None:
        await conn.close()


async def run_load(opts: LoadOptions, tracker: ArrivalTracker) -> LoadReport:
    if not opts.run:
        opts.run = f"r{os.getpid()}x{int(time.time()) % 100000}"
    report = LoadReport(
        offered=opts.total(),
        connections=opts.connections,
        pipelining=opts.pipelining,
        tls=opts.tls,
        mix=opts.mix if not opts.files else "files",
        expect=opts.expect,
        offered_rate=opts.rate,
    )
    sent, started = await send_load(opts, report)
    report.accepted = len(sent)
    report.accepted_bytes = sum(s.size for s in sent)
    if sent:
        last_accept = max(s.accepted_at for s in sent)
        report.accept_seconds = last_accept - started
        report.accepted_per_s = round(report.accepted / report.accept_seconds, 2)
        report.mb_per_s = round(report.accepted_bytes / report.accept_seconds / 1e6, 3)
        report.accept_latency_ms = percentiles([s.accepted_at - s.end_of_data for s in sent])
        ids = {s.load_id for s in sent}
        await tracker.wait_for(ids, time.monotonic() + opts.settle)
        arrived = [tracker.arrivals[s.load_id] for s in sent if s.load_id in tracker.arrivals]
        report.arrived = len(arrived)
        report.missing = report.accepted - report.arrived
        report.unknown_arrivals = tracker.unknown
        report.duplicate_arrivals = tracker.duplicates
        leaks: Counter[str] = Counter()
        for s in sent:
            a = tracker.arrivals.get(s.load_id)
            if a is None:
                continue
            leaks.update(a.leaks)
            if opts.expect == "plain" and s.patient >= 0 and not a.leaks:
                report.not_plain += 1
        report.leaks = dict(leaks)
        if arrived:
            report.deliver_seconds = max(a.arrived for a in arrived) - started
            report.delivered_per_s = round(report.arrived / report.deliver_seconds, 2)
            by_id = {s.load_id: s for s in sent}
            report.latency_ms = percentiles(
                [a.arrived - by_id[a.load_id].end_of_data for a in arrived]
            )
    return report


def peak_rss_kib(pid: int) -> dict[int, int]:
    """VmHWM (peak resident set, KiB) of a process and its child processes, by pid."""
    out: dict[int, int] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                out[current] = int(line.split()[1])
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                continue
    return out


def format_report(r: LoadReport) -> str:
    lat = r.latency_ms
    acc = r.accept_latency_ms
    lines = [
        f"connections={r.connections} pipelining={'on' if r.pipelining else 'off'} "
        f"tls={'on' if r.tls else 'off'} mix={r.mix} expect={r.expect}"
        + (f" offered_rate={r.offered_rate:g}/s" if r.offered_rate else ""),
        f"offered {r.offered}  accepted {r.accepted}  arrived {r.arrived}  missing {r.missing}"
        f"  duplicates {r.duplicate_arrivals}  unknown {r.unknown_arrivals}",
        f"accepted msg/s {r.accepted_per_s}  delivered msg/s {r.delivered_per_s}"
        f"  MB/s {r.mb_per_s}  (accept {r.accept_seconds:.2f} s, deliver {r.deliver_seconds:.2f} s)",
        "latency end of DATA -> sink ms: "
        + (
            f"p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}"
            if lat
            else "n/a"
        ),
        "latency end of DATA -> 250 ms:  "
        + (
            f"p50 {acc['p50']}  p95 {acc['p95']}  p99 {acc['p99']}  max {acc['max']}"
            if acc
            else "n/a"
        ),
    ]
    if r.peak_rss_kib:
        lines.append(
            "gateway peak RSS (VmHWM) MiB: "
            + ", ".join(
                f"pid {pid}: {kib / 1024:.0f}" for pid, kib in sorted(r.peak_rss_kib.items())
            )
        )
    if r.refused:
        lines.append("refused: " + ", ".join(f"{k} x{v}" for k, v in sorted(r.refused.items())))
    if r.errors:
        lines.append("errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(r.errors.items())))
    if r.leaks:
        lines.append(
            "planted values found at the sink (by kind): "
            + ", ".join(f"{k} in {v} msg" for k, v in sorted(r.leaks.items()))
        )
    if r.not_plain:
        lines.append(f"arrivals without their planted values (expect=plain): {r.not_plain}")
    lines.append("RESULT: " + ("OK" if r.ok() else "FAIL"))
    return "\n".join(lines)


# --- profile summary (py-spy folded stacks, as compare_postfix.sh --profile writes them) ----

_FRAME_LINE = re.compile(r":\d+\)$")


# Leaf frames that are a thread waiting for work, not work: ThreadPoolExecutor's
# `work_queue.get(block=True)` (py-spy does not see these threads as idle).
_IDLE_LEAVES = ("_worker (", "concurrent/futures/thread.py:81)")  # (prefix, suffix)


def _frame_name(frame: str) -> str:
    """`send (gateway/smtp.py:120)` -> `send (gateway/smtp.py)`: lines merged per function."""
    frame = _FRAME_LINE.sub(")", frame.strip())
    for marker in ("/site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            frame = head + "(" + tail.split(marker, 1)[1]
    return frame


def _area(frame: str) -> str:
    """Which component a (leaf) frame belongs to, by its file."""
    path = frame.partition("(")[2].rstrip(")")
    top = path.split("/")[0] if "/" in path else path
    if top in ("gateway", "connectors", "crypto"):
        parts = path.split("/")
        return "/".join(parts[:2]).removesuffix(".py")
    return top.removesuffix(".py") or "?"


def summarise_profile(path: Path, top: int = 25) -> str:
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    area: Counter[str] = Counter()
    total = 0
    idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        leaf_raw = stack.rsplit(";", 1)[-1].strip()
        if leaf_raw.startswith(_IDLE_LEAVES[0]) and leaf_raw.endswith(_IDLE_LEAVES[1]):
            idle += n  # a pool thread blocked waiting for work: py-spy counts it as busy
            continue
        frames = [
            _frame_name(f)
            for f in stack.split(";")
            if "(" in f and not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        total += n
        leaf[frames[-1]] += n
        area[_area(frames[-1])] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        return "no samples"

    def table(title: str, counts: Counter[str]) -> list[str]:
        rows = [f"{title}", "  %   samples  function"]
        rows += [f"{100 * c / total:5.1f} {c:8d}  {name}" for name, c in counts.most_common(top)]
        return rows

    out = [
        f"{total} busy samples, all threads and processes "
        f"({idle} more were idle thread-pool waits, left out). "
        "Runner.run as a leaf is uvloop's C loop: epoll waits plus C-level I/O callbacks."
    ]
    out += table("self time by component (leaf frame's module):", area)
    out += table("self time by function:", leaf)
    out += table("inclusive time by function:", inclusive)
    return "\n".join(out)


# --- offline pipeline cost (what a pseudonymising route adds per message, no I/O) --------


def measure_pipeline_cost(kind: str, count: int, seed: int = messages.DEFAULT_SEED) -> str:
    """Run gateway.pipeline.process_message on `count` generated messages of one kind, with a
    scan engine built once from the planted patients as roster; report ms per message,
    verdicts, and any planted value left in the rewritten copies."""
    import secrets
    import tempfile

    from gateway.config import load_config
    from gateway.pipeline import RouteCopy, process_message
    from gateway.roster import parse_roster_csv
    from gateway.scan import build_engine
    from gateway.verdicts import Action

    cfg = load_config(None)
    digest_key, pseudonym_key = secrets.token_bytes(32), secrets.token_bytes(32)
    with tempfile.TemporaryDirectory() as tmp:
        roster = Path(tmp) / "roster.csv"
        messages.write_roster_csv(roster, seed)
        patients = parse_roster_csv(roster.read_bytes(), pseudonym_key)
    built = time.perf_counter()
    engine = build_engine(
        patients=patients,
        practice=cfg.practice,
        digest_key=digest_key,
        pseudonym_key=pseudonym_key,
        engine=cfg.scan.engine,
    )
    built = time.perf_counter() - built
    copy = RouteCopy(
        route="labs",
        action=Action.PSEUDONYMISE,
        connector="relay",
        recipients=(messages.LAB_RECIPIENT,),
        audience="labo.test",
    )
    batch = list(messages.generate("cost", count, kind, seed))
    started = time.perf_counter()
    outcomes = [
        (idx, process_message(raw, [copy], engine, limits=cfg.files).copies[0])
        for _lid, idx, raw in batch
    ]
    elapsed = time.perf_counter() - started
    verdicts: Counter[str] = Counter()
    leaks: Counter[str] = Counter()
    for idx, outcome in outcomes:
        verdicts[outcome.verdict.value + (f" ({outcome.reason})" if outcome.reason else "")] += 1
        if outcome.data is not None:
            leaks.update(messages.find_leaks(sink_mod.decoded_content(outcome.data), idx, seed))
    return (
        f"{kind}: {count} messages in {elapsed:.3f} s on one core: "
        f"{1000 * elapsed / count:.2f} ms/message, {count / elapsed:.1f} msg/s "
        f"(engine built once in {built:.3f} s)\n"
        f"verdicts: {dict(verdicts)}\nplanted values left (by kind): {dict(leaks) or 'none'}"
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", default="127.0.0.1", help="gateway address")
    ap.add_argument("--port", type=int, default=2525, help="gateway SMTP port")
    ap.add_argument("-n", "--connections", type=int, default=4, help="concurrent connections")
    ap.add_argument("-m", "--messages", type=int, default=100, help="messages to send")
    ap.add_argument(
        "--mix", default="lab", help="kinds and weights: lab, html, stl, e.g. lab:90,html:9,stl:1"
    )
    ap.add_argument("--file", action="append", default=[], help=".eml file to send (repeatable)")
    ap.add_argument("--no-pipelining", action="store_true", help="one command per round trip")
    ap.add_argument("--tls", action="store_true", help="STARTTLS before MAIL")
    ap.add_argument("--cafile", default="", help="verify the gateway certificate with this CA")
    ap.add_argument("--rate", type=float, default=0.0, help="offered msg/s (0: maximum)")
    ap.add_argument("--duration", type=float, default=0.0, help="with --rate: seconds to sustain")
    ap.add_argument("--expect", choices=("pseudonymised", "plain", "any"), default="pseudonymised")
    ap.add_argument(
        "--settle", type=float, default=DEFAULT_SETTLE, help="seconds to wait for arrivals"
    )
    ap.add_argument("--seed", type=int, default=messages.DEFAULT_SEED)
    ap.add_argument("--recipient", default=messages.LAB_RECIPIENT)
    sinks = ap.add_mutually_exclusive_group()
    sinks.add_argument(
        "--sink-port", type=int, help="run the verifying sink in this process on this port"
    )
    sinks.add_argument("--sink-report", help="follow an external sink.py --report file")
    sinks.add_argument("--no-sink", action="store_true", help="count acceptances only")
    ap.add_argument(
        "--self-test", action="store_true", help="send straight to an in-process sink (no gateway)"
    )
    ap.add_argument("--json", help="also write the report as JSON to this file")
    ap.add_argument(
        "--watch-pid", type=int, help="report peak RSS of this gateway process and its children"
    )
    ap.add_argument(
        "--pipeline-cost",
        metavar="KIND",
        choices=messages.KINDS,
        help="no SMTP: time the pseudonymising pipeline on -m messages of KIND and exit",
    )
    ap.add_argument(
        "--summarise-profile",
        metavar="FOLDED",
        help="print top functions of a py-spy raw profile and exit",
    )
    return ap


async def amain(args: argparse.Namespace) -> LoadReport:
    opts = LoadOptions(
        host=args.host,
        port=args.port,
        connections=args.connections,
        count=args.messages,
        mix=args.mix,
        pipelining=not args.no_pipelining,
        tls=args.tls,
        cafile=args.cafile,
        rate=args.rate,
        duration=args.duration,
        expect=args.expect,
        settle=args.settle,
        seed=args.seed,
        recipient=args.recipient,
        files=tuple(args.file),
    )
    tracker = ArrivalTracker()
    stop = asyncio.Event()
    follower = None
    sink = None
    if args.self_test or args.sink_port is not None:
        state = sink_mod.SinkState(seed=args.seed, on_arrival=tracker.add)
        sink = await sink_mod.VerifyingSink(state).start(args.sink_port or 0)
        if args.self_test:
            opts.port = sink.port
        print(f"sink listening on 127.0.0.1:{sink.port}", file=sys.stderr)
    elif args.sink_report:
        follower = asyncio.create_task(tracker.follow_report(Path(args.sink_report), stop))
    else:
        opts.settle = 0.0
    try:
        report = await run_load(opts, tracker)
    finally:
        stop.set()
        if follower is not None:
            await follower
        if sink is not None:
            await sink.stop()
    if args.watch_pid:
        report.peak_rss_kib = peak_rss_kib(args.watch_pid)
    if args.no_sink:
        # Without a sink nothing can be verified: report acceptance only.
        report.missing = 0
        report.arrived = 0
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.pipeline_cost:
        print(measure_pipeline_cost(args.pipeline_cost, args.messages, args.seed))
        return 0
    if args.summarise_profile:
        print(summarise_profile(Path(args.summarise_profile)))
        return 0
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency on Linux
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        report = runner.run(amain(args))
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
