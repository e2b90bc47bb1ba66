"""Processes and the database for the chaos benchmark (benchmarks/chaos.py): a `billops serve` worker
started, killed (SIGKILL) and restarted the way an operator would, and one shared connection to the
benchmark's PostgreSQL database for reading figures."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def billops_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "billops"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "billops"]


def http_get(port: int, path: str, timeout: float = 2) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@dataclass
class Worker:
    index: int
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    healthy: bool = False

    @property
    def executor_id(self) -> str:
        return self.env["BILLOPS_EXECUTOR_ID"]

    def start(self) -> None:
        self.healthy = False
        with self.log.open("ab") as out:
            out.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            self.proc = subprocess.Popen(
                [*billops_cmd(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    def wait_ready(self, timeout: float) -> float:
        """Seconds from start to ready (/readyz when the server has it, else /healthz)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.executor_id} exited; see {self.log}")
            try:
                status, _ = http_get(self.port, "/readyz")
                if status == 404:
                    status, _ = http_get(self.port, "/healthz")
                if status == 200:
                    self.healthy = True
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"worker {self.executor_id} not ready after {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        self.healthy = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.healthy = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Db:
    """One autocommit connection to the benchmark's database, shared by the threads under a lock."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.lock = threading.Lock()

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.lock:
            return list(self.conn.execute(sql, params).fetchall())

    def close(self) -> None:
        self.conn.close()
