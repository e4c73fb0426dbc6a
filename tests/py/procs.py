"""Server processes a test starts and stops itself (signals, exit codes), and bounded waits.

conftest.py's `server` fixture fails a test whose server exits on its own, which is what the
shutdown tests want to happen; they use `start_server` here instead, through a fixture that
kills whatever is still running at teardown.
"""

from __future__ import annotations

import os
import resource
import select
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SHARDCAST_BIN", REPO / "target/release/shardcast"))
START_TIMEOUT = 10.0
PREFIX = "listening on 127.0.0.1:"


@dataclass
class Proc:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if the process is still running after `timeout` seconds."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Kills the process if it is still running and reaps it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=5)
        if self.process.stdout:
            self.process.stdout.close()


def start_server(
    log_path: Path,
    *args: str,
    workers: int = 2,
    preexec_fn: Callable[[], None] | None = None,
) -> Proc:
    """Starts shardcast on a free loopback port and waits for its `listening on` line."""
    if not BIN.is_file():
        raise FileNotFoundError(f"{BIN} not found: run `cargo build --release` or set SHARDCAST_BIN")
    model = os.environ.get("SHARDCAST_MODEL", "sharded")
    cmd = [str(BIN), "--listen", "127.0.0.1:0", "--workers", str(workers), "--no-pin",
           "--model", model, *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=preexec_fn,
        )
    proc = Proc(process, 0, log_path)
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
    if not ready:
        proc.stop()
        raise TimeoutError(f"no 'listening on' line within {START_TIMEOUT} s; log:\n{proc.log()}")
    line = process.stdout.readline().decode()
    if not line.startswith(PREFIX):
        proc.stop()
        raise AssertionError(f"unexpected first line {line!r}; log:\n{proc.log()}")
    proc.port = int(line[len(PREFIX):])
    return proc


def make_certificate(folder: Path):
    """A certificate for 127.0.0.1 and localhost from a throwaway CA (trustme): writes the
    chain (leaf first) and the key as PEM into `folder`; returns (cert path, key path, CA).
    `ca.configure_trust(ssl_context)` makes a client trust it."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key, ca


def raise_nofile() -> int:
    """Raises this process's soft RLIMIT_NOFILE to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
