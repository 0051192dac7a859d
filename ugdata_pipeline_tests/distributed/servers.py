"""Servers the distributed tests start themselves, on loopback, and always stop: PostgreSQL (the Dagster instance's
storage), Redis (the Celery broker and result backend) and Celery workers running the project's steps.

The server binaries come from Debian's packages (`postgresql`, `redis-server`); `.ci/run` installs them where they
are missing. No test is skipped for a missing server: the harness fails saying what is missing and how to install it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Where Debian puts PostgreSQL's server programs (not on PATH): /usr/lib/postgresql/<major>/bin
DEBIAN_POSTGRES_BINS = "/usr/lib/postgresql"
INSTALL_HINT = (
    "install the servers the distributed tests start: apt-get install -y --no-install-recommends postgresql "
    "redis-server (.ci/run does this when they are missing)"
)
#: How long a server or worker may take to answer before the harness gives up and shows its log.
START_TIMEOUT_S = 60.0


def find_server_binary(name: str, *, path: str | None = None, debian_root: str = DEBIAN_POSTGRES_BINS) -> Path:
    """``name`` on PATH, else in the newest ``/usr/lib/postgresql/<major>/bin``; a clear error when in neither."""
    found = shutil.which(name, path=path)
    if found:
        return Path(found)
    root = Path(debian_root)
    majors = sorted(
        (p for p in root.glob("*/bin") if p.parent.name.isdigit()), key=lambda p: int(p.parent.name), reverse=True
    )
    for folder in majors:
        if (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return folder / name
    msg = f"{name} was not found on PATH or in {root}/*/bin; {INSTALL_HINT}"
    raise RuntimeError(msg)


def require(module: str) -> types.ModuleType:
    """Import a client package the harness needs, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        msg = f"{module} is not installed; run make install (pip install -e '.[dev]' includes the distributed extra)"
        raise RuntimeError(msg) from error


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} was not written)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"{what} exited with code {process.returncode} before it was ready; its log {log}:\n{_tail(log)}"
            raise RuntimeError(msg)
        if ready():
            return
        time.sleep(0.2)
    msg = f"{what} was not ready after {START_TIMEOUT_S:.0f} s; its log {log}:\n{_tail(log)}"
    raise RuntimeError(msg)


def _stop(process: subprocess.Popen, sig: int, *, group: bool = False, grace_s: float = 30.0) -> None:
    """Signal ``process`` (its whole process group when ``group``), wait for it to end, then kill what is left."""

    def send(s: int) -> bool:
        try:
            if group:
                os.killpg(process.pid, s)
            else:
                process.send_signal(s)
        except ProcessLookupError:
            return False
        return True

    send(sig)
    deadline = time.monotonic() + grace_s
    # a group outlives its leader while the leader's children (Celery's pool) shut down
    while time.monotonic() < deadline and (process.poll() is None or (group and send(0))):
        time.sleep(0.1)
    send(signal.SIGKILL)
    process.wait(timeout=grace_s)


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str = field(repr=False)  # a throw-away password, still kept out of reprs and logs
    database: str = "dagster"

    def env(self) -> dict[str, str]:
        """The variables deploy/dagster-celery.yaml reads (the password only ever travels this way)."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }


def _server_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, run it as Debian's `postgres` user (or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    msg = f"running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as; {INSTALL_HINT}"
    raise RuntimeError(msg)


@contextlib.contextmanager
def postgres_server(database: str = "dagster") -> Iterator[Postgres]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 with password authentication and an empty ``database``."""
    psycopg2 = require("psycopg2")
    initdb, postgres = find_server_binary("initdb"), find_server_binary("postgres")
    user = _server_user()
    # not under pytest's tmp_path: that folder is private to root, and the server runs as another user
    base = Path(tempfile.mkdtemp(prefix="ugdata-pg-"))
    process: subprocess.Popen | None = None
    try:
        if user is not None:
            os.chown(base, user.pw_uid, user.pw_gid)
        password = secrets.token_urlsafe(16)
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n", encoding="utf-8")
        if user is not None:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user is not None else {}
        log = base / "postgres.log"
        init = [initdb, "-D", base / "data", "-U", "dagster", f"--pwfile={pwfile}", "--auth=scram-sha-256"]
        with log.open("w") as out:
            subprocess.run(
                [*init, "-E", "UTF8", "--no-sync", "--no-instructions"],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                cwd=base,
                **as_user,
            )
        pwfile.unlink()
        port = free_port()
        out = log.open("a")
        # fsync off: the cluster lives for one test, durability buys nothing but time
        durability_off = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        process = subprocess.Popen(
            [postgres, "-D", base / "data", "-p", str(port), "-h", "127.0.0.1", "-k", base, *durability_off],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=base,
            **as_user,
        )
        out.close()
        server = Postgres("127.0.0.1", port, "dagster", password, database)

        def connect(dbname: str = "postgres"):
            return psycopg2.connect(host=server.host, port=port, user=server.user, password=password, dbname=dbname)

        def ready() -> bool:
            try:
                connect().close()
            except psycopg2.OperationalError:
                return False
            return True

        _wait_until(ready, process, f"PostgreSQL ({postgres})", log)
        connection = connect()
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {database}")
        finally:
            connection.close()
        yield server
    finally:
        if process is not None:
            _stop(process, signal.SIGINT)  # fast shutdown: disconnects the clients, no checkpoint wait
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away Redis on 127.0.0.1 with no persistence; yields its URL (``redis://127.0.0.1:PORT``)."""
    redis = require("redis")
    binary = find_server_binary("redis-server")
    base = Path(tempfile.mkdtemp(prefix="ugdata-redis-"))
    port = free_port()
    log = base / "redis.log"
    process: subprocess.Popen | None = None
    try:
        no_persistence = ["--save", "", "--appendonly", "no", "--dir", str(base)]
        with log.open("w") as out:
            process = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", *no_persistence, "--daemonize", "no"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=base,
            )
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)

        def ready() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        _wait_until(ready, process, f"Redis ({binary})", log)
        client.close()
        yield f"redis://127.0.0.1:{port}"
    finally:
        if process is not None:
            _stop(process, signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def celery_workers(
    names: Sequence[str], *, executor_config: Path, env: Mapping[str, str], cwd: Path, logs: Path
) -> Iterator[list[str]]:
    """
    One ``dagster-celery worker start`` per name, each with one process (``--concurrency 1``), listening on the
    broker ``executor_config`` names; yields the workers' node names once every one answers a ping.

    Each worker runs in its own process group, so stopping it also stops the pool process that runs the steps.
    """
    require("dagster_celery")
    from dagster_celery.cli import get_validated_config
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app

    # dagster-celery starts `celery` from PATH: the one of this interpreter's environment
    worker_env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', os.defpath)}"}
    processes: list[tuple[subprocess.Popen, Path]] = []
    hostname = socket.gethostname()
    nodes = [f"{name}@{hostname}" for name in names]
    try:
        for name in names:
            log = logs / f"{name}.log"
            with log.open("w") as out:
                command = [sys.executable, "-m", "dagster_celery.cli", "worker", "start", "-A", "dagster_celery.app"]
                command += ["-y", str(executor_config), "-n", name, "--", "--concurrency", "1"]
                processes.append(
                    (
                        subprocess.Popen(
                            command,
                            env=worker_env,
                            cwd=cwd,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        ),
                        log,
                    )
                )
        with _env(env):  # the workers' own broker, read from the same file as they read it (env resolved)
            config = get_validated_config(str(executor_config))
        app = make_app(
            CeleryExecutor.for_cli(
                **{k: config.get(k) for k in ("broker", "backend", "include", "config_source")}
            ).app_args()
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            answered: set[str] = set()
            while time.monotonic() < deadline and answered != set(nodes):
                for process, log in processes:
                    if process.poll() is not None:
                        msg = f"a Celery worker exited with code {process.returncode}; its log {log}:\n{_tail(log)}"
                        raise RuntimeError(msg)
                answered = {node for reply in app.control.ping(timeout=1.0) for node in reply}
            if answered != set(nodes):
                logs_text = "\n".join(f"{log}:\n{_tail(log)}" for _, log in processes)
                msg = f"Celery workers {sorted(set(nodes) - answered)} did not answer in {START_TIMEOUT_S:.0f} s\n"
                raise RuntimeError(msg + logs_text)
        finally:
            app.close()
        yield nodes
    finally:
        for process, _ in processes:
            _stop(process, signal.SIGTERM, group=True)  # warm shutdown; no task is running by now


@contextlib.contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` for the block (the executor config reads the broker from it)."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
