"""Redis for development runs: a private redis-server on a port of the caller's (to kill, freeze or
restart), and clean-up of what a run wrote to a shared one."""

from __future__ import annotations

import shutil
import subprocess
import time

import redis

from devkit.waiting import HANG


def start_redis(port: int, tmp_path) -> subprocess.Popen:
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=0.5)
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        try:
            client.ping()
            return server
        except redis.RedisError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("redis-server did not start")


def delete_keys(redis_client, prefix: str) -> None:
    """Remove only what a test wrote: the keys under its own prefix."""
    for key in redis_client.scan_iter(match=f"{prefix}*", count=500):
        redis_client.delete(key)
