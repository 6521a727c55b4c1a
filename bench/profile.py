"""Where the real path's CPU goes: `make profile` (`python -m bench.profile [--quick] [--seconds S]`).

Runs the real-path throughput scenario (bench.realpath: the processes of
`make run`, a webhook per job, clients that wait) and, while it drains, has
py-spy sample the web's worker processes and the agents worker with `--gil`
(only the thread holding the GIL: CPU, not waiting). Writes a flame graph per
process and a table of the functions that hold the most samples under
var/bench/profile/, and prints the table.
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.layout import PY, VAR, say

OUT = VAR / "profile"
PY_SPY = str(Path(PY).parent / "py-spy")


def _targets() -> dict[str, int]:
    """The bench layout's web workers and agents worker, by pid (the layout runs under var/bench)."""
    found: dict[str, int] = {}
    for proc in psutil.process_iter(["pid", "cmdline", "ppid"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "config.asgi:application" in cmd and proc.parent() and "config.asgi:application" in " ".join(
                proc.parent().cmdline()):
            found[f"web-{proc.info['pid']}"] = proc.info["pid"]
        elif "celery" in cmd and " worker" in cmd and "-Q agents" in cmd:
            found["agents-worker"] = proc.info["pid"]
    return found


def _sending() -> bool:
    """Whether the scenario's clients (bench.followers) are at work."""
    return any("bench.followers" in " ".join(proc.info["cmdline"] or [])
               for proc in psutil.process_iter(["cmdline"]))


def _top(raw: Path, limit: int = 25) -> list[tuple[float, str]]:
    """(share of samples, function) for the functions most often on the stack."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        total += int(n)
        for frame in set(stack.split(";")):
            counts[frame.split(" (")[0]] += int(n)
    return [(100 * n / max(total, 1), name) for name, n in counts.most_common(limit)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller run")
    parser.add_argument("--seconds", type=float, default=15, help="how long py-spy samples")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    run = subprocess.Popen([PY, "-m", "bench.realpath", "--only", "throughput", *(["--quick"] if args.quick else [])])
    try:
        deadline = time.monotonic() + 180
        while len(targets := _targets()) < 3 or not _sending():
            if run.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the real-path run ended before its processes could be sampled")
            time.sleep(0.5)
        time.sleep(3)  # past start-up: jobs are being sent and drained
        say(f"sampling {', '.join(targets)} for {args.seconds:g} s")
        spies = {name: subprocess.Popen([PY_SPY, "record", "--pid", str(pid), "--gil", "--nonblocking",
                                         "--duration", str(int(args.seconds)), "--format", fmt,
                                         "--output", str(OUT / f"{name}.{ext}")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name, pid in targets.items() for fmt, ext in (("raw", "txt"), ("flamegraph", "svg"))}
        for spy in spies.values():
            spy.wait(args.seconds + 60)
    finally:
        run.wait()
    lines = []
    for name in sorted(targets):
        lines += [f"## {name}", "", "| share of samples | function |", "|---|---|",
                  *(f"| {share:.1f}% | `{function}` |" for share, function in _top(OUT / f"{name}.txt")), ""]
    (OUT / "top.md").write_text("\n".join(lines))
    print("\n".join(lines))
    say(f"flame graphs and top.md in {OUT}")


if __name__ == "__main__":
    sys.exit(main())
