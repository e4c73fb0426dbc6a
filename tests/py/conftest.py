"""Fixtures: a factory that runs the shardcast binary on a free port.

Every test gets fresh server processes (they start in milliseconds), so no test sees
connections or rooms left over by another.
"""

from __future__ import annotations

import os
import resource
import select
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import wire

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SHARDCAST_BIN", REPO / "target/release/shardcast"))
# The threading model under test (the test command runs the suite once per model).
MODEL = os.environ.get("SHARDCAST_MODEL", "sharded")
BASE_ARGS = ["--no-pin", "--model", MODEL]


def expected_shards(workers: int) -> int:
    """Event-loop threads the server reports: the single model runs one whatever --workers."""
    return 1 if MODEL == "single" else workers
WORKERS = 4
START_TIMEOUT = 10.0


@dataclass
class Server:
    host: str
    port: int
    process: subprocess.Popen
    log_path: Path
    # Set by a test that kills the server on purpose (teardown then does not call it a crash).
    expected_exit: bool = False

    def __iter__(self):
        # Lets a test write `host, port, proc = server()`.
        return iter((self.host, self.port, self.process))

    def url(self, room: str = "") -> str:
        return f"ws://{self.host}:{self.port}/{room}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL by PID, and reap it (a crash on purpose: teardown does not call it one)."""
        self.expected_exit = True
        self.process.kill()
        self.process.wait(timeout=5)

    def metrics(self, source: str = "127.0.0.1") -> dict[str, float]:
        """The server's /metrics, as {"name{labels}": value} (see `wire.metrics`)."""
        return wire.metrics(self.port, source)

    def rss_bytes(self) -> int:
        """Resident set size now (VmRSS in /proc/PID/status)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    value, unit = line.split()[1:3]
                    assert unit == "kB", line
                    return int(value) * 1024
        raise AssertionError("no VmRSS line")

    def nofile_limits(self) -> tuple[int, int]:
        """The process's soft and hard RLIMIT_NOFILE now (from /proc/PID/limits)."""
        with open(f"/proc/{self.pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return int(soft), int(hard)
        raise AssertionError("no 'Max open files' line")

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far, all threads (utime + stime in /proc/PID/stat)."""
        with open(f"/proc/{self.pid}/stat") as f:
            # The command name (field 2) may hold spaces; fields after its ')' are fixed.
            fields = f.read().rpartition(")")[2].split()
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of the whole line
        return (utime + stime) / os.sysconf("SC_CLK_TCK")


def _read_first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The `listening on HOST:PORT` line, without blocking past `timeout`."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no 'listening on' line within {timeout} s")
    return proc.stdout.readline().decode()


@pytest.fixture
def server(tmp_path):
    """`server(*extra_args, workers=4, nofile=None, port=0)` starts shardcast and returns a
    `Server`; all are stopped at teardown. `nofile` sets the server's RLIMIT_NOFILE (see
    `start`); `port` 0 is a free port, another one restarts a server where one was.

    Teardown also fails the test if a server died on its own: every error case must leave
    the server running.
    """
    if not BIN.is_file():
        pytest.fail(f"{BIN} not found: run `cargo build --release` or set SHARDCAST_BIN")
    started: list[Server] = []

    def start(
        *extra_args: str,
        workers: int = WORKERS,
        nofile: int | tuple[int, int] | None = None,
        port: int = 0,
    ) -> Server:
        """`nofile` sets the server's RLIMIT_NOFILE before it starts: soft = hard = nofile, or
        a (soft, hard) pair."""
        log_path = tmp_path / f"server{len(started)}.log"
        preexec = None
        if nofile is not None:
            limits = (nofile, nofile) if isinstance(nofile, int) else nofile

            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(BIN), "--listen", f"127.0.0.1:{port}", *BASE_ARGS, "--workers", str(workers),
                 *extra_args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                preexec_fn=preexec,
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

    crashed = [s for s in started if s.process.poll() is not None and not s.expected_exit]
    for s in started:
        if s.process.poll() is None:
            s.process.kill()
        s.process.wait(timeout=5)
        s.process.stdout.close()
    if crashed:
        s = crashed[0]
        pytest.fail(f"server exited early with {s.process.returncode}; log:\n{s.log()}")


@dataclass
class Redis:
    """A redis-server of the test's own, on a free loopback port."""

    port: int
    process: subprocess.Popen | None
    log_path: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Starts (or restarts, on the same port) the server and waits until it answers."""
        assert self.process is None or self.process.poll() is not None
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--protected-mode", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        wire.wait_for(lambda: self.ping(), START_TIMEOUT, f"redis on port {self.port}")

    def kill(self) -> None:
        """SIGKILL, by PID, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def command(self, *args: str) -> list[str]:
        """Runs one command with redis-cli; its output lines."""
        out = subprocess.run(
            [REDIS_CLI, "-p", str(self.port), *args], capture_output=True, timeout=5, text=True
        )
        return out.stdout.split()

    def ping(self) -> bool:
        try:
            return self.command("PING") == ["PONG"]
        except subprocess.TimeoutExpired:
            return False


REDIS_BIN = os.environ.get("REDIS_SERVER", "redis-server")
REDIS_CLI = os.environ.get("REDIS_CLI", "redis-cli")


@pytest.fixture
def redis(tmp_path):
    """A fresh redis-server on a random free loopback port, stopped by PID at teardown."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    r = Redis(port, None, tmp_path / "redis.log")
    r.start()
    yield r
    r.kill()
