"""Fixtures: a factory that runs the shardcast binary on a free port.

Every test gets fresh server processes (they start in milliseconds), so no test sees
connections or rooms left over by another.
"""

from __future__ import annotations

import os
import select
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SHARDCAST_BIN", REPO / "target/release/shardcast"))
BASE_ARGS = ["--listen", "127.0.0.1:0", "--workers", "4", "--no-pin"]
START_TIMEOUT = 10.0


@dataclass
class Server:
    host: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def __iter__(self):
        # Lets a test write `host, port, proc = server()`.
        return iter((self.host, self.port, self.process))

    def url(self, room: str = "") -> str:
        return f"ws://{self.host}:{self.port}/{room}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _read_first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The `listening on HOST:PORT` line, without blocking past `timeout`."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no 'listening on' line within {timeout} s")
    return proc.stdout.readline().decode()


@pytest.fixture
def server(tmp_path):
    """`server(*extra_args)` starts shardcast and returns a `Server`; all are stopped at teardown.

    Teardown also fails the test if a server died on its own: every error case must leave
    the server running.
    """
    if not BIN.is_file():
        pytest.fail(f"{BIN} not found: run `cargo build --release` or set SHARDCAST_BIN")
    started: list[Server] = []

    def start(*extra_args: str) -> Server:
        log_path = tmp_path / f"server{len(started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(BIN), *BASE_ARGS, *extra_args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        srv = Server("127.0.0.1", 0, proc, log_path)
        started.append(srv)
        try:
            line = _read_first_line(proc, START_TIMEOUT)
        except TimeoutError as e:
            pytest.fail(f"{e}; server log:\n{srv.log()}")
        prefix = "listening on 127.0.0.1:"
        assert line.startswith(prefix), f"unexpected first line {line!r}; log:\n{srv.log()}"
        srv.port = int(line[len(prefix):])
        return srv

    yield start

    crashed = [s for s in started if s.process.poll() is not None]
    for s in started:
        if s.process.poll() is None:
            s.process.kill()
        s.process.wait(timeout=5)
        s.process.stdout.close()
    if crashed:
        s = crashed[0]
        pytest.fail(f"server exited early with {s.process.returncode}; log:\n{s.log()}")
