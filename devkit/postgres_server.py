"""PostgreSQL for development runs: a private server on a port of the caller's (to stop and start
under load), and a schema of a run's own on a shared server (dropped afterwards).

PostgreSQL refuses to run as root: as root (this project's CI), the server runs as the `postgres`
user, in a folder of its own under the system's temporary folder (pytest's tmp_path sits in a
folder only root may enter)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from devkit.waiting import HANG

BIN = Path("/usr/local/bin")
SHARED = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _as_server_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(command: list[str]) -> None:
    subprocess.run(_as_server_user() + command, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=HANG)


class PrivatePostgres:
    """A PostgreSQL server of the caller's on 127.0.0.1:`port`, trust authentication, database
    `postgres`. stop() and start() keep its data."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.folder = Path(tempfile.mkdtemp(prefix="devkit-postgres-"))
        self.data = self.folder / "data"
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        _run([str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
              "-E", "UTF8", "--no-sync"])
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off")
        _run([str(BIN / "pg_ctl"), "-D", str(self.data), "-o", options,
              "-l", str(self.folder / "server.log"), "-w", "-t", str(int(HANG)), "start"])

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as in an outage."""
        _run([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(_as_server_user() + [str(BIN / "pg_ctl"), "-D", str(self.data), "-m",
                           "immediate", "-w", "stop"], capture_output=True, timeout=HANG)
        shutil.rmtree(self.folder, ignore_errors=True)


def reachable(url: str = SHARED) -> bool:
    try:
        with psycopg.connect(_libpq(url), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def new_schema(url: str = SHARED) -> tuple[str, str]:
    """A schema of the caller's own on the server at `url`: (its name, a URL whose connections
    use it as their search_path)."""
    name = f"ledger_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(url), autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{name}"')
    separator = "&" if "?" in url else "?"
    return name, f"{url}{separator}options=-csearch_path%3D{name}"


def drop_schema(name: str, url: str = SHARED) -> None:
    with psycopg.connect(_libpq(url), autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
