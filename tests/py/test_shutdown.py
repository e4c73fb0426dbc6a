"""Graceful shutdown on SIGTERM/SIGINT: every WebSocket client gets close 1001, the server
stops accepting, answers late upgrades 503, drains within --drain-timeout and exits 0; a second
signal exits at once.

These tests start the server themselves (procs.start_server): the process is supposed to end,
which conftest's `server` fixture would report as a crash.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import socket
import ssl
import struct
import time

import pytest
from websockets.asyncio.client import connect as ws_connect

from procs import make_certificate, raise_nofile, start_server
from wire import OP_CLOSE, Conn, get, read_frame, upgrade_request, wait_for
from wire import ws_connect as raw_ws_connect

CLIENTS = 1000
ROOMS = 5
SHUTDOWN_REASON = "server shutting down"


@pytest.fixture
def spawn(tmp_path):
    """`spawn(*args, **kw)` starts a server (2 shards, no pinning); all are killed at teardown."""
    started = []

    def start(*args: str, **kwargs):
        proc = start_server(tmp_path / f"server{len(started)}.log", *args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def client(port: int, room: str, **kwargs):
    kwargs.setdefault("open_timeout", 10)
    kwargs.setdefault("close_timeout", 5)
    return ws_connect(
        f"ws://127.0.0.1:{port}/{room}",
        compression=None,
        ping_interval=None,  # no keepalive pings of our own: only the server's frames matter
        proxy=None,
        **kwargs,
    )


def read_close(conn: Conn) -> tuple[int, str]:
    """Skips data frames up to the server's close frame: (code, reason)."""
    while True:
        _, opcode, payload = read_frame(conn)
        if opcode == OP_CLOSE:
            assert len(payload) >= 2, f"close frame without a code: {payload!r}"
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def assert_exits(proc, code_ok, within: float, what: str) -> tuple[int, float]:
    """Waits (bounded) for the process to exit; returns (exit code, seconds waited)."""
    started = time.monotonic()
    code = proc.wait_exit(within)
    waited = time.monotonic() - started
    assert code is not None, f"{what}: still running {within} s later; log:\n{proc.log()}"
    assert code_ok(code), f"{what}: exit code {code}; log:\n{proc.log()}"
    return code, waited


async def connect_many(port: int, count: int, batch: int = 100) -> list:
    clients = []
    try:
        for start in range(0, count, batch):
            clients += await asyncio.gather(
                *(client(port, f"room{i % ROOMS}") for i in range(start, min(start + batch, count)))
            )
    except BaseException:
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
        raise
    return clients


async def close_received(ws, timeout: float) -> tuple[int | None, str | None]:
    """Waits for the connection to close; returns the code and reason of the close frame the
    server sent (None if it sent none)."""
    try:
        await asyncio.wait_for(ws.wait_closed(), timeout)
    except TimeoutError:
        return None, "no close within the timeout"
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code, rcvd.reason) if rcvd else (None, None)


def test_sigterm_closes_1000_clients_with_1001_and_exits_0(spawn):
    limit = raise_nofile()
    assert limit >= CLIENTS + 200, f"RLIMIT_NOFILE soft limit {limit} is too low for {CLIENTS} clients"
    proc = spawn("--drain-timeout", "5")

    async def scenario():
        clients = await connect_many(proc.port, CLIENTS)
        try:
            # Every room works before the signal: one message each, heard by all members.
            for r in range(ROOMS):
                await clients[r].send(f"hello room{r}")
            got = await asyncio.gather(
                *(asyncio.wait_for(ws.recv(), 10) for ws in clients)
            )
            assert got == [f"hello room{i % ROOMS}" for i in range(CLIENTS)]

            proc.signal(signal.SIGTERM)
            signalled = time.monotonic()
            results = await asyncio.gather(*(close_received(ws, 10) for ws in clients))
            return results, signalled
        finally:
            await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)

    results, signalled = asyncio.run(asyncio.wait_for(scenario(), 45))
    wrong = [(i, r) for i, r in enumerate(results) if r != (1001, SHUTDOWN_REASON)]
    assert not wrong, f"{len(wrong)} of {CLIENTS} clients got no 1001 close, e.g. {wrong[:5]}"
    assert_exits(proc, lambda c: c == 0, 10, "after SIGTERM")
    assert time.monotonic() - signalled < 10


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_closes_clients_and_exits_promptly(spawn, sig):
    """Clients that answer the close let the server exit long before the drain timeout."""
    proc = spawn("--drain-timeout", "20")

    async def scenario():
        clients = [await client(proc.port, f"r{i % 2}") for i in range(10)]
        proc.signal(sig)
        return await asyncio.gather(*(close_received(ws, 5) for ws in clients))

    results = asyncio.run(asyncio.wait_for(scenario(), 15))
    assert results == [(1001, SHUTDOWN_REASON)] * 10
    _, waited = assert_exits(proc, lambda c: c == 0, 5, f"after {sig.name}")
    assert waited < 5


def test_sigterm_closes_wss_clients_with_1001(spawn, tmp_path):
    """The same over TLS: the close frame, then close_notify, reach wss clients."""
    cert, key, ca = make_certificate(tmp_path)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    proc = spawn("--tls-cert", str(cert), "--tls-key", str(key), "--drain-timeout", "20")

    async def scenario():
        clients = [
            await ws_connect(
                f"wss://127.0.0.1:{proc.port}/r{i % 2}", ssl=ctx, compression=None,
                ping_interval=None, proxy=None, open_timeout=5, close_timeout=5,
            )
            for i in range(20)
        ]
        await clients[0].send("before")
        for ws in clients[::2]:
            assert await asyncio.wait_for(ws.recv(), 5) == "before"
        proc.signal(signal.SIGTERM)
        return await asyncio.gather(*(close_received(ws, 5) for ws in clients))

    results = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert results == [(1001, SHUTDOWN_REASON)] * 20
    _, waited = assert_exits(proc, lambda c: c == 0, 5, "TLS server after SIGTERM")
    assert waited < 5


def test_stubborn_client_holds_shutdown_only_until_drain_timeout(spawn):
    drain = 2.0
    # --close-timeout above the drain timeout: only the drain deadline can end the wait.
    proc = spawn("--drain-timeout", str(drain), "--close-timeout", "30")
    stubborn = raw_ws_connect(proc.port, "/stuck")
    with stubborn:
        proc.signal(signal.SIGTERM)
        signalled = time.monotonic()
        # The close arrives; the client never answers it (and never closes its socket).
        assert read_close(stubborn) == (1001, SHUTDOWN_REASON)
        time.sleep(0.5)
        assert proc.running(), "exited without waiting for the close reply"
        assert_exits(proc, lambda c: c == 0, drain + 3, "stubborn client during drain")
        took = time.monotonic() - signalled
        assert drain * 0.9 <= took <= drain + 3, f"exited {took:.2f} s after the signal"
        # The connection was dropped on exit.
        assert stubborn.reads_eof()


def test_after_signal_new_connections_are_refused_and_late_upgrades_get_503(spawn):
    proc = spawn("--drain-timeout", "3", "--close-timeout", "30")
    port = proc.port
    # Opened before the signal: a stubborn WebSocket that keeps the drain going, a connection
    # that has sent the first part of an upgrade request, one that has sent part of a
    # GET /health, and one that has sent nothing at all.
    stubborn = raw_ws_connect(port, "/hold")
    upgrade = upgrade_request("/late")
    health = get("/health")
    mid_upgrade, mid_health, idle = Conn.open(port), Conn.open(port), Conn.open(port)
    with stubborn, mid_upgrade, mid_health, idle:
        mid_upgrade.send(upgrade[:20])
        mid_health.send(health[:10])
        time.sleep(0.3)  # let the shards read the partial heads

        proc.signal(signal.SIGTERM)
        assert read_close(stubborn) == (1001, SHUTDOWN_REASON)  # shutdown has begun

        # The listener is closed: new connections are refused. (An attempt that raced the
        # close may still have reached the backlog and is then reset: try again.)
        def refused():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            except (ConnectionResetError, socket.timeout):
                pass
            return False

        wait_for(refused, timeout=2, what="new connections to be refused")

        # The rest of the upgrade request: 503, with Retry-After, and the connection ends.
        mid_upgrade.send(upgrade[20:])
        resp = mid_upgrade.read_response()
        assert resp.status == 503, resp
        assert "retry-after" in resp.headers
        assert resp.headers["connection"].lower() == "close"
        assert mid_upgrade.reads_eof()

        # Plain HTTP is still answered, reporting the drain, and the connection ends.
        mid_health.send(health[10:])
        resp = mid_health.read_response()
        assert resp.status == 503, resp
        assert b'"draining"' in resp.body
        assert mid_health.reads_eof()

        # An idle connection may be closed at once or answered 503: never upgraded, never left
        # hanging.
        try:
            idle.send(upgrade_request("/late"))
            resp = idle.read_response()
        except (EOFError, ConnectionResetError, BrokenPipeError):
            pass
        else:
            assert resp.status == 503, resp

        assert proc.running(), "the stubborn client should hold the drain for 3 s"
        assert_exits(proc, lambda c: c == 0, 3 + 3, "after the drain timeout")


def test_second_signal_exits_at_once(spawn):
    proc = spawn("--drain-timeout", "30", "--close-timeout", "30")
    stubborn = raw_ws_connect(proc.port, "/stuck")
    with stubborn:
        proc.signal(signal.SIGTERM)
        # The first signal was taken: the close went out. The drain would last 30 s.
        assert read_close(stubborn) == (1001, SHUTDOWN_REASON)
        time.sleep(0.3)
        assert proc.running()
        proc.signal(signal.SIGINT)
        # Documented: "a second signal exits at once with code 1" (not killed by the signal).
        code, waited = assert_exits(proc, lambda c: c == 1, 3, "after a second signal")
        assert waited < 2, f"took {waited:.2f} s to exit"


def test_server_raises_its_descriptor_soft_limit_to_the_hard_limit(spawn):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(1024, hard)

    def lower_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    proc = spawn(preexec_fn=lower_soft_limit)
    with open(f"/proc/{proc.pid}/limits") as f:
        line = next(l for l in f if l.startswith("Max open files"))
    server_soft, server_hard = line.split()[3:5]
    want_hard = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    assert server_hard == want_hard, line
    assert server_soft == server_hard, line


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_after_its_log_reader_went_away(sig):
    """A server whose stdout and stderr readers are gone (a closed pipe, an ended `| tee`)
    still stops on a signal: a log line it cannot write is dropped, not a panic of the thread
    that wrote it (the signal thread logs "shutting down" first)."""
    import os
    import subprocess

    from procs import BIN, PREFIX

    model = os.environ.get("SHARDCAST_MODEL", "sharded")
    process = subprocess.Popen(
        [str(BIN), "--listen", "127.0.0.1:0", "--workers", "2", "--no-pin", "--model", model],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = process.stdout.readline().decode()
        assert line.startswith(PREFIX), line
        port = int(line[len(PREFIX):])
        # Someone connects and is logged while the reader is still there; then it goes.
        with Conn.open(port) as conn:
            assert conn.request(get("/health")).status == 200
        process.stdout.close()
        process.stderr.close()
        # A line logged now meets the broken pipe (an access line, in the logging tests).
        with Conn.open(port) as conn:
            assert conn.request(get("/health")).status == 200
        process.send_signal(sig)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
