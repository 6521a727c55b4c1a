"""A niced worker yields the CPU for real: its session, and its database work.

`make run` starts the workers with `nice`, so that on a shared machine the web
is served first. Two things would undo that:

- Linux's autogroup scheduling (on where /proc/sys/kernel/sched_autogroup_enabled
  is 1, as on this machine) shares the CPU fairly between *sessions* before
  nice values count, and honcho starts each Procfile process in a session of
  its own: a niced worker would still get as much CPU as the web. So a niced
  process gives its session's group the same nice value (/proc/self/autogroup,
  which a process may lower for itself).
- Half of a job's CPU is spent by the PostgreSQL backend serving the worker's
  connection, at the server's priority. When the backend is a PostgreSQL
  process on this machine that this process may renice (the embedded server
  of `make run`, same user), it gets this process's nice value too; the web's
  backends keep theirs. A remote or foreign server is left alone.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)
_done: set[int] = set()


def lower_own_group() -> None:
    """Give this process's autogroup its nice value (a no-op unless niced, on Linux with autogroups)."""
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    group = Path("/proc/self/autogroup")
    if nice <= 0 or not group.exists():
        return
    try:
        current = int(group.read_text().split("nice")[-1])
        if current < nice:
            group.write_text(str(nice))
    except (OSError, ValueError):  # no autogroups here, or not allowed: nice alone must do
        pass


def _is_postgres(pid: int) -> bool:
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def share_priority(connection: Any) -> None:
    """Give the backend of `connection` (a Django connection, just opened) this process's nice value."""
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    raw = getattr(connection, "connection", None)
    pid = getattr(getattr(raw, "info", None), "backend_pid", None)
    if nice <= 0 or not pid or pid in _done:
        return
    _done.add(pid)
    host = connection.settings_dict.get("HOST") or ""
    if not (host.startswith("/") or host in ("", "localhost", "127.0.0.1", "::1")) or not _is_postgres(pid):
        return
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < nice:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
    except (PermissionError, ProcessLookupError):  # another user's server, or it just went away
        pass
