"""Console sessions, CSRF tokens and the login rate limiter (all in memory).

Trust boundary: the session cookie and form fields come from the browser (untrusted).

Invariants:
- A session id is 256 random bits; the cookie carries only that id. Sessions live in
  this process's memory: a restart logs everyone out, which is the safe direction.
- A session is dropped after `idle_timeout` seconds without a request.
- Each session has its own CSRF token; every POST must carry it (compared in constant
  time). Anonymous sessions exist so that the login form has a token too.
- The session id changes when the user authenticates (no session fixation).
- Failed logins are counted per user name and per client IP in a sliding window;
  at `max_failures` further attempts are refused without checking the password.
- Memory is bounded: at most MAX_SESSIONS sessions (anonymous ones evicted first, oldest
  first) and MAX_TRACKED_KEYS rate-limit keys (oldest first).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gateway.admin.users import Role

# 10,000 sessions: a practice has a handful of staff; this bounds memory against a
# client that opens anonymous sessions in a loop (~1 KB each -> ~10 MB).
MAX_SESSIONS = 10_000
# 10,000 rate-limit keys (user names + IPs), same reasoning.
MAX_TRACKED_KEYS = 10_000

Clock = Callable[[], float]


class Stage(StrEnum):
    ANONYMOUS = "anonymous"
    NEEDS_TOTP = "needs-totp"  # password ok, second factor pending
    NEEDS_ENROLMENT = "needs-enrolment"  # password ok, TOTP to enrol first
    AUTHENTICATED = "authenticated"


@dataclass
class Session:
    sid: str = field(repr=False)
    csrf: str = field(repr=False)
    last_seen: float
    stage: Stage = Stage.ANONYMOUS
    user: str = ""
    role: Role | None = None
    # PHI-free messages (level, i18n key, params) for the next page (post/redirect/get).
    flashes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def authenticated(self) -> bool:
        return self.stage is Stage.AUTHENTICATED and self.role is not None

    def csrf_ok(self, token: str) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf.encode(), token.encode())


class SessionStore:
    def __init__(self, idle_timeout: float, clock: Clock = time.monotonic) -> None:
        self._idle = idle_timeout
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def new(self) -> Session:
        self._expire()
        while len(self._sessions) >= MAX_SESSIONS:
            self._evict_one()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock())
        self._sessions[s.sid] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session for this id (touched), or None if unknown or idle too long."""
        if not sid:
            return None
        s = self._sessions.get(sid)
        if s is None:
            return None
        now = self._clock()
        if now - s.last_seen > self._idle:
            del self._sessions[sid]
            return None
        s.last_seen = now
        self._sessions.move_to_end(sid)
        return s

    def rotate(self, s: Session) -> Session:
        """Same state under a new id and a new CSRF token (at each privilege change)."""
        self._sessions.pop(s.sid, None)
        s.sid = secrets.token_urlsafe(32)
        s.csrf = secrets.token_urlsafe(32)
        s.last_seen = self._clock()
        self._sessions[s.sid] = s
        return s

    def drop(self, s: Session) -> None:
        self._sessions.pop(s.sid, None)

    def _evict_one(self) -> None:
        """Drop the oldest anonymous session, so that a client opening sessions in a
        loop cannot log out staff; only if there is none, the oldest of all."""
        for sid, s in self._sessions.items():
            if s.stage is Stage.ANONYMOUS:
                del self._sessions[sid]
                return
        self._sessions.popitem(last=False)

    def _expire(self) -> None:
        # Sessions are kept in last-seen order (get/rotate/new move them to the end),
        # so the expired ones are at the front.
        now = self._clock()
        while self._sessions:
            sid, oldest = next(iter(self._sessions.items()))
            if now - oldest.last_seen <= self._idle:
                return
            del self._sessions[sid]


class LoginLimiter:
    """Sliding-window failure counter per key ("user:NAME", "ip:ADDR")."""

    def __init__(self, max_failures: int, window: float, clock: Clock = time.monotonic) -> None:
        self._max = max_failures
        self._window = window
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked(self, *keys: str) -> bool:
        return any(self._count(k) >= self._max for k in keys)

    def fail(self, *keys: str) -> None:
        now = self._clock()
        for k in keys:
            q = self._failures.setdefault(k, deque())
            q.append(now)
            self._failures.move_to_end(k)
            while len(q) > self._max:
                q.popleft()
        while len(self._failures) > MAX_TRACKED_KEYS:
            self._failures.popitem(last=False)

    def succeed(self, user_key: str) -> None:
        """A successful login clears the user's counter (not the IP's)."""
        self._failures.pop(user_key, None)

    def _count(self, key: str) -> int:
        q = self._failures.get(key)
        if not q:
            return 0
        horizon = self._clock() - self._window
        while q and q[0] < horizon:
            q.popleft()
        return len(q)
