"""The `make run` layout for the real-path benchmarks (bench.realpath, bench.waiters).

`make run` starts every line of the Procfile (honcho) with this environment on
top of the caller's: AGENTOS_WEBHOOK_ALLOW_PRIVATE=1, FLOWER_BASIC_AUTH (from
var/flower-auth), OPIE_WEB_PORT, OPIE_FLOWER_PORT. `Layout` parses the same
Procfile lines (`name: [VAR=val ...] [nice -n N] command ...`, with
`${VAR:-default}` expanded against that environment) and starts each command
as its own process, with the same environment plus the bench's own:

- OPIE_VAR_DIR=var/bench: the embedded PostgreSQL and Redis of the benchmarks,
  never the developer's data (DATABASE_URL / REDIS_URL / CELERY_BROKER_URL are
  emptied, so neither the shell nor a .env file can point elsewhere);
- AGENTOS_RATE_LIMIT_PER_MINUTE=0: the limit is per token, and the whole
  benchmark is one token;
- AGENTOS_USER_MAX_RUNNING=0 where a scenario passes ONE_USER_FOR_MANY (7-9:
  the one bench user stands for many users); bench.noisy keeps the default;
- FLOWER_BASIC_AUTH generated here (make run's agentos_demo would write it
  into the developer's var/), free ports for the web and Flower.

Everything else (log level, pool prewarm, DB pool sizes, concurrency) is what
`make run` gets. Each process logs to var/bench/logs/<prefix>-<name>.log
instead of honcho's terminal. Processes are started in their own session and
always stopped (SIGTERM to the group, SIGKILL after 20 s).
"""
from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"
LOGS = VAR / "logs"
PROCFILE = ROOT / "Procfile"
PY = sys.executable

# what the Makefile's `run` target adds to the environment (besides the ports and Flower's credentials)
MAKE_RUN_ENV = {"AGENTOS_WEBHOOK_ALLOW_PRIVATE": "1"}
# The scenarios that submit as the one bench user (7-9) lift fair sharing's per-user cap: that user
# stands for many users, whose jobs the cap (AGENTOS_USER_MAX_RUNNING, 20 by default) would not hold
# back together; scenario 11 (bench.noisy) runs with the default cap and measures it.
ONE_USER_FOR_MANY = {"AGENTOS_USER_MAX_RUNNING": "0"}
ONE_USER_NOTE = ("AGENTOS_USER_MAX_RUNNING=0: the bench user stands for many users here, so the per-user cap "
                 "is lifted; scenario 11 measures the cap")
# set by `python -m bench` for its own tuned scenarios; `make run` sets neither
BENCH_ONLY = ("LOG_LEVEL", "AGENTOS_POOL_PREWARM")
LABELS = {"web": "web", "worker": "agents worker", "knowledge": "knowledge worker", "beat": "beat",
          "flower": "Flower"}

Say = Callable[[str], None]


def quiet_httpx() -> None:
    """Django's logging config shows httpx's INFO line per request; the bench's own requests are noise."""
    import logging

    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def bench_environ() -> dict[str, str]:
    """The bench process's own environment (as bench/__main__.py sets it): embedded servers under var/bench."""
    env = {**os.environ, "OPIE_VAR_DIR": str(VAR), "DJANGO_SETTINGS_MODULE": "config.settings",
           "AGENTOS_RATE_LIMIT_PER_MINUTE": "0", "AGNO_TELEMETRY": "false", "PYTHONUNBUFFERED": "1",
           "DATABASE_URL": "", "REDIS_URL": "", "CELERY_BROKER_URL": "", "OPIE_EMBEDDED": "1"}
    return env


def answers_ok(url: str, timeout: float) -> bool:
    """Whether `url` answers 200 now (a server still starting refuses, or answers 503)."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], grace: float = 20) -> None:
    """SIGTERM the process's group (it was started in a session of its own), SIGKILL after `grace` s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def pct(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else None


_VAR = re.compile(r"\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
                  r"|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def expand(text: str, env: dict[str, str]) -> str:
    """`${VAR:-default}`, `${VAR-default}`, `${VAR}` and `$VAR` as sh expands them."""
    def one(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        value = env.get(name)
        op = match.group("op")
        if op == ":-" and not value:
            return match.group("default")
        if op == "-" and value is None:
            return match.group("default")
        return value or ""
    return _VAR.sub(one, text)


@dataclass
class ProcSpec:
    name: str
    line: str  # the Procfile's command, unexpanded
    argv: list[str]  # expanded, without the leading assignments (a `nice -n N` prefix stays: it execs)
    env: dict[str, str]  # the leading VAR=val assignments
    nice: int | None = None

    def option(self, *names: str) -> str | None:
        for i, token in enumerate(self.argv):
            for name in names:
                if token == name and i + 1 < len(self.argv):
                    return self.argv[i + 1]
                if token.startswith(name + "="):
                    return token.split("=", 1)[1]
        return None

    def set_option(self, names: tuple[str, ...], value: str) -> bool:
        """Replace the value of the first of `names` found in argv; False if none is there."""
        for i, token in enumerate(self.argv):
            for name in names:
                if token == name and i + 1 < len(self.argv):
                    self.argv[i + 1] = value
                    return True
                if token.startswith(name + "="):
                    self.argv[i] = f"{name}={value}"
                    return True
        return False


def ensure_concurrency(spec: ProcSpec, minimum: int, notes: list[str], variable: str = "AGENTS_CONCURRENCY") -> None:
    """At least `minimum` for the worker's --concurrency: the Procfile's own variable is set by the
    caller; if the line no longer reads it, the value in argv is raised (and that is noted)."""
    current = spec.option("--concurrency", "-c")
    if current is not None and int(current) >= minimum:
        notes.append(f"{variable}={minimum} (the Procfile's {spec.name} line reads it): --concurrency {current}")
        return
    if not spec.set_option(("--concurrency", "-c"), str(minimum)):
        spec.argv += ["--concurrency", str(minimum)]
    notes.append(f"--concurrency {current} → {minimum} in the {spec.name} argv (its Procfile line does not "
                 f"read {variable})")


def parse_procfile(env: dict[str, str], path: Path = PROCFILE) -> list[ProcSpec]:
    specs = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+", name.strip()):
            raise ValueError(f"not a Procfile line: {raw!r}")
        tokens = shlex.split(expand(command.strip(), env))
        assignments: dict[str, str] = {}
        while tokens and _ASSIGNMENT.match(tokens[0]):
            key, _, value = tokens.pop(0).partition("=")
            assignments[key] = value
        nice = None
        if tokens and Path(tokens[0]).name == "nice":
            nice = 10  # nice's default adjustment
            rest = tokens[1:]
            if rest[:1] == ["-n"] and len(rest) > 1:
                nice = int(rest[1])
            elif rest and rest[0].startswith("--adjustment="):
                nice = int(rest[0].split("=", 1)[1])
            elif rest and re.fullmatch(r"-\d+", rest[0]):
                nice = int(rest[0][1:])
        specs.append(ProcSpec(name=name.strip(), line=command.strip(), argv=tokens, env=assignments, nice=nice))
    return specs


def total_cpu(proc: Any) -> float:
    """The process, its children that have exited (PostgreSQL's closed backends), and its live ones."""
    import psutil

    try:
        own = proc.cpu_times()
        live = 0.0
        for child in proc.children(recursive=True):
            try:
                times = child.cpu_times()
                live += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return own.user + own.system + own.children_user + own.children_system + live
    except psutil.NoSuchProcess:
        return 0.0


def servers_cpu() -> dict[str, float]:
    """CPU seconds so far of the bench's embedded PostgreSQL and Redis (children included)."""
    import psutil

    parts = {"PostgreSQL": 0.0, "Redis": 0.0}
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(VAR) not in cmd:
            continue
        if "bin/postgres" in cmd:
            parts["PostgreSQL"] += total_cpu(proc)
        elif "redis-server" in cmd:
            parts["Redis"] += total_cpu(proc)
    return parts


def tree_stats(pid: int) -> dict[str, Any]:
    """RSS, threads and open file descriptors of a process and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {"processes": 0, "rss_bytes": 0, "threads": 0, "fds": 0}
    rss = threads = fds = count = 0
    for proc in procs:
        try:
            rss += proc.memory_info().rss
            threads += proc.num_threads()
            fds += proc.num_fds()
            count += 1
        except psutil.NoSuchProcess:
            pass
    try:
        nofile = list(root.rlimit(psutil.RLIMIT_NOFILE))
    except (psutil.Error, AttributeError):
        nofile = None
    return {"processes": count, "rss_bytes": rss, "threads": threads, "fds": fds, "nofile": nofile}


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Layout:
    """The Procfile's processes, started as `make run` starts them, on the bench's servers."""

    prefix: str
    say: Say = say
    overrides: dict[str, str] = field(default_factory=dict)  # environment for every process
    unset: tuple[str, ...] = ()  # removed from every process's environment (the setting's default applies)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    specs: dict[str, ProcSpec] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    procfile: Path = PROCFILE  # another one only to try the harness on a candidate layout

    def __post_init__(self) -> None:
        self.web_port = free_port()
        self.flower_port = free_port()
        self.flower_auth = f"bench:{secrets.token_urlsafe(12)}"

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = bench_environ()
        for name in BENCH_ONLY:
            env.pop(name, None)
        env.update(MAKE_RUN_ENV)
        env.update({"FLOWER_BASIC_AUTH": self.flower_auth, "OPIE_WEB_PORT": str(self.web_port),
                    "OPIE_FLOWER_PORT": str(self.flower_port)})
        env.update(self.overrides)
        env.update(extra or {})
        for name in self.unset:
            env.pop(name, None)
        return env

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def log_path(self, name: str) -> Path:
        return LOGS / f"{self.prefix}-{name}.log"

    def start(self, only: set[str] | None = None, extra: dict[str, str] | None = None,
              adjust: Callable[[ProcSpec], None] | None = None, timeout: float = 180) -> None:
        """Start the Procfile's processes (all, or `only`), then wait until the web says ready."""
        LOGS.mkdir(parents=True, exist_ok=True)
        if not self.procs:
            ensure_no_foreign_workers()
        env = self.environment(extra)
        for spec in parse_procfile(env, self.procfile):
            if only is not None and spec.name not in only:
                continue
            if adjust is not None:
                adjust(spec)
            self.specs[spec.name] = spec
            log = open(self.log_path(spec.name), "ab")
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(spec.argv)}\n".encode())
            log.flush()
            self.procs[spec.name] = subprocess.Popen(spec.argv, cwd=ROOT, env={**env, **spec.env}, stdout=log,
                                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                     start_new_session=True)
            log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {"readyz"} if "web" in self.procs else set()
        if "flower" in self.procs:
            pending.add("flower")
        while True:
            self.check_alive()
            if "readyz" in pending and answers_ok(f"{self.base}/readyz", 5):
                pending.discard("readyz")
            if "flower" in pending and answers_ok(f"http://127.0.0.1:{self.flower_port}/healthcheck", 5):
                pending.discard("flower")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the make-run layout was not ready in {timeout:.0f} s (waiting for "
                                   f"{', '.join(sorted(pending))}); logs in {LOGS}")
            time.sleep(0.5)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}; {self.log_path(name)}:\n"
                                   + log_tail(self.log_path(name)))

    def restart(self, name: str, extra: dict[str, str] | None = None,
                adjust: Callable[[ProcSpec], None] | None = None) -> None:
        self.stop_one(name)
        self.start(only={name}, extra=extra, adjust=adjust)
        if name != "web":  # /readyz needs a worker on every queue: wait for it again
            self.procs_ready_via_web()

    def procs_ready_via_web(self, timeout: float = 120) -> None:
        if "web" not in self.procs:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if answers_ok(f"{self.base}/readyz", 5):
                return
            time.sleep(0.5)
        raise RuntimeError("web /readyz did not turn ready after the restart")

    def stop_one(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            stop_process(proc)

    def stop(self) -> None:
        # workers first, so nothing they do is left half-done by a web that is gone
        for name in sorted(self.procs, key=lambda n: n == "web"):
            self.stop_one(name)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of each process of the layout, by its label, plus PostgreSQL and Redis."""
        import psutil

        parts: dict[str, float] = {}
        for name, proc in self.procs.items():
            if proc.poll() is None:
                try:
                    parts[LABELS.get(name, name)] = total_cpu(psutil.Process(proc.pid))
                except psutil.NoSuchProcess:
                    parts[LABELS.get(name, name)] = 0.0
        parts.update(servers_cpu())
        return parts

    def flower_events(self) -> dict[str, float]:
        """Flower's own count of the task events it received, by type (its /metrics): shows the
        workers' events are on and Flower consumes them. Empty if Flower is not running."""
        import httpx

        if "flower" not in self.procs:
            return {}
        user, _, password = self.flower_auth.partition(":")
        try:
            text = httpx.get(f"http://127.0.0.1:{self.flower_port}/metrics", auth=(user, password), timeout=10).text
        except httpx.HTTPError:
            return {}
        counts: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("flower_events_total{"):
                match = re.search(r'type="([^"]+)"', line)
                if match:
                    counts[match.group(1)] = counts.get(match.group(1), 0.0) + float(line.rsplit(" ", 1)[1])
        return counts

    def web_stats(self) -> dict[str, Any]:
        proc = self.procs.get("web")
        return tree_stats(proc.pid) if proc is not None else {}

    def describe(self) -> dict[str, Any]:
        return {name: {"command": shlex.join(spec.argv), "env": spec.env, "nice": spec.nice}
                for name, spec in self.specs.items()}

    def __enter__(self) -> "Layout":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def ensure_no_foreign_workers() -> None:
    """A worker left over on the bench broker (an interrupted run) would take this run's jobs."""
    from celery_app import app as celery

    replies = celery.control.ping(timeout=1.0) or []
    names = sorted(name for reply in replies for name in reply)
    if names:
        raise RuntimeError(f"worker(s) already consuming on the bench broker: {', '.join(names)}. "
                           "Stop them first (a leftover of an interrupted run? see var/bench/logs).")


def purge_and_settle(user: Any) -> dict[str, int]:
    """Before a run: nothing queued on the bench broker, and none of the bench user's jobs or
    webhook deliveries left unfinished by an interrupted run (beat's sweeper would re-run them,
    its dispatcher resend them, in the middle of this run's measurements)."""
    from django.utils import timezone

    from apps.jobs.models import Job
    from apps.webhooks.models import WebhookDelivery
    from celery_app import app as celery

    purged = 0
    with celery.connection_for_write() as conn:
        for queue in ("agents", "webhooks", "sync", "knowledge"):
            try:
                purged += conn.default_channel.queue_purge(queue) or 0
            except Exception:
                pass
    jobs = Job.objects.filter(owner=user).exclude(status__in=Job.TERMINAL).update(
        status=Job.Status.CANCELLED, finished_at=timezone.now(), lease_token="", lease_expires_at=None)
    deliveries = WebhookDelivery.objects.filter(owner=user).exclude(
        status__in=[WebhookDelivery.Status.DELIVERED, WebhookDelivery.Status.FAILED]).update(
        status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
    return {"purged_messages": purged, "settled_jobs": jobs, "settled_deliveries": deliveries}


def standalone_setup(prefix: str) -> dict[str, Any]:
    """For `python -m bench.<module>`: the bench environment, Django, the bench database migrated,
    and the bench user with a token and the agents bench/__main__.py's setup() also makes."""
    env = bench_environ()  # read before the clear: it keeps the caller's environment (PATH, overrides)
    os.environ.clear()
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from apps.accounts.services import api_token_create
    from apps.agents.models import Agent
    from apps.agents.services import agent_create

    say(f"{prefix}: migrating the bench database under {VAR}")
    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="bench")
    token = api_token_create(user=user, name=f"bench {prefix}")[1]
    echo = Agent.objects.filter(owner=user, name="echo").first() or agent_create(
        owner=user, name="echo", tools=["calculator"])
    slow = Agent.objects.filter(owner=user, name="slow").first() or agent_create(
        owner=user, name="slow", model_options={"latency_ms": 1000})
    return {"user": user, "token": token, "echo": echo.public_id, "slow": slow.public_id}


def terminate_on_signals() -> None:
    """SIGTERM / SIGHUP become SystemExit, so `finally:` blocks stop every process we started."""
    def leave(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, leave)


class Child:
    """A bench helper process (receiver, clients) with its log under var/bench/logs."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log = LOGS / f"{name}.log"
        self.out = LOGS / f"{name}.out"
        self._err = open(self.log, "ab")
        self._out = open(self.out, "wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env or bench_environ(), stdout=self._out,
                                     stderr=self._err, stdin=subprocess.DEVNULL, start_new_session=True)

    def wait(self, timeout: float) -> str:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"{self.name} did not finish in {timeout:.0f} s; see {self.log}") from None
        self._out.close()
        self._err.close()
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.name} failed (exit {self.proc.returncode}); {self.log}:\n" + log_tail(self.log))
        return self.out.read_text()

    def first_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.out.read_text() if self.out.exists() else ""
            if "\n" in text:
                return text.split("\n", 1)[0]
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; {self.log}:\n" + log_tail(self.log))
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} printed nothing in {timeout:.0f} s")

    def stop(self) -> None:
        stop_process(self.proc, grace=10)
        for handle in (self._out, self._err):
            if not handle.closed:
                handle.close()
