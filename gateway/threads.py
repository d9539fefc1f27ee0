"""OS-level names for Portique's threads, so that `top -H`, `ps -L`, `perf` and
/proc/PID/task/*/comm show which thread is the audit writer, the spool's sync thread
or a pipeline thread, instead of "python" for all of them.

Invariants:
- The OS name is the Python thread name cut to 15 bytes (the kernel's limit), set
  from inside the thread itself (prctl PR_SET_NAME names the calling thread).
- Best effort: on a system without prctl (not Linux) nothing is named and nothing
  fails; a name never carries message data (only the fixed names given in code).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import sys
import threading
from collections.abc import Callable

_PR_SET_NAME = 15
_OS_NAME_MAX = 15  # bytes, without the terminating NUL


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        func: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return func


_prctl = _load_prctl()


def name_os_thread() -> None:
    """Give the calling thread its Python name at the OS level."""
    if _prctl is None:
        return
    name = threading.current_thread().name.encode("ascii", "replace")[:_OS_NAME_MAX]
    _prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def named_executor(workers: int, prefix: str) -> concurrent.futures.ThreadPoolExecutor:
    """A thread pool whose threads ("PREFIX_N") carry their names at the OS level."""
    return concurrent.futures.ThreadPoolExecutor(
        workers, thread_name_prefix=prefix, initializer=name_os_thread
    )
