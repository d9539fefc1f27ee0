"""One loop timer for many time limits of the same length.

`Deadlines(limit).run(operation)` awaits `operation` in the current task and cuts it off
once `limit` seconds have passed: the same outcome as `asyncio.timeout(limit)` around
it, for less work. `asyncio.timeout` makes, pushes on the loop's heap and cancels a timer
per use; on the relay's hot path that was a timer per delivery and per DATA commit
(~1 % of the gateway's instructions per message each, issue 7).

Invariants:
- At its deadline the task is cancelled and `run` raises TimeoutError; a cancellation
  from anywhere else stays a CancelledError (as asyncio.timeout: compared through
  `Task.cancelling()` / `uncancel()`).
- Every deadline is `limit` after its operation's start, so operations expire in the
  order they started: the one timer waits for the oldest running operation's deadline
  and, when it fires, ends those past it and waits for the next. Idle, no timer is armed.
- A task runs one operation at a time under a given `Deadlines`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Deadlines:
    """Cuts off every operation run through it that lasts past `limit` seconds."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        # Running operations, oldest first: task -> (deadline, task.cancelling() at start).
        self._running: dict[asyncio.Task[object], tuple[float, int]] = {}
        # Operations cancelled by their deadline, until they end: task -> cancelling().
        self._expired: dict[asyncio.Task[object], int] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def running(self) -> int:
        """How many operations are under way (and hold a place in the timer's order)."""
        return len(self._running)

    async def run(self, operation: Awaitable[T]) -> T:
        """`await operation`, or TimeoutError once `limit` seconds have passed."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        deadline = loop.time() + self.limit
        self._running[task] = (deadline, task.cancelling())
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        try:
            return await operation
        except asyncio.CancelledError as exc:
            cancelling = self._expired.pop(task, None)
            # As asyncio.timeout: a TimeoutError only if no other cancel is pending.
            if cancelling is not None and task.uncancel() <= cancelling:
                raise TimeoutError(f"took longer than {self.limit:g} s") from exc
            raise
        finally:
            self._running.pop(task, None)
            if self._expired.pop(task, None) is not None:  # ended as its deadline came
                task.uncancel()

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        now = loop.time()
        late = []
        for task, (deadline, cancelling) in self._running.items():
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                break
            late.append((task, cancelling))
        for task, cancelling in late:
            del self._running[task]
            self._expired[task] = cancelling
            task.cancel()
