"""A niced worker yields the CPU for real: its session's scheduling group and its local
PostgreSQL backend take its nice value (workers/priority.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import ROOT

pytestmark = pytest.mark.django_db

AUTOGROUPS = Path("/proc/self/autogroup").exists()


@pytest.mark.skipif(not AUTOGROUPS, reason="this kernel has no autogroup scheduling")
def test_a_niced_process_lowers_its_own_sessions_group_and_an_unniced_one_does_not():
    probe = ("from workers.priority import lower_own_group; lower_own_group(); "
             "print(open('/proc/self/autogroup').read().split('nice')[-1].strip())")
    niced = subprocess.run(["nice", "-n", "7", "setsid", sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                           text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    plain = subprocess.run(["setsid", sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert niced.stdout.strip() == "7"
    assert plain.stdout.strip() == "0"


def test_a_niced_process_gives_its_local_backend_its_nice_value():
    from workers.priority import share_priority

    seen: dict[str, int] = {}

    def niced_thread() -> None:  # on Linux a nice value is per thread: this one only
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + 3)
        try:
            connection.ensure_connection()
            backend = connection.connection.info.backend_pid
            if Path(f"/proc/{backend}").exists():
                share_priority(connection)
                seen.update(mine=os.getpriority(os.PRIO_PROCESS, 0), backend=os.getpriority(os.PRIO_PROCESS, backend))
        finally:
            connection.close()

    thread = threading.Thread(target=niced_thread)
    thread.start()
    thread.join(30)

    if not seen:
        pytest.skip("PostgreSQL is not on this machine")
    assert seen["backend"] >= seen["mine"] > 0
