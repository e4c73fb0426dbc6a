"""Admission limits and resource bounds: --max-connections, --max-connections-per-ip, the origin
allow-list, slow consumers (--max-buffered), and running out of file descriptors."""

from __future__ import annotations

import asyncio
import math
import selectors
import socket
import threading
import time

import pytest
from websockets.exceptions import InvalidHandshake, InvalidStatus

from chat import assert_chat_works, connect, recv, run
from wire import (
    OP_PING,
    Conn,
    close_frame,
    encode_frame,
    get,
    open_socket,
    raise_nofile,
    read_to_eof,
    upgrade_request,
    wait_for,
    ws_connect,
)

# Loopback source addresses: Linux routes all of 127.0.0.0/8 to lo, no setup needed.
IP_A, IP_B, IP_METRICS = "127.0.0.1", "127.0.0.2", "127.0.0.3"


def assert_refused_503(resp) -> None:
    assert (resp.status, resp.reason) == (503, "Service Unavailable"), resp
    assert int(resp.headers["retry-after"]) > 0
    assert resp.headers["connection"].lower() == "close"


async def all_hear_each_other(clients, tag: str) -> None:
    """Every client sends one message; every client receives all of them (same room)."""
    for i, ws in enumerate(clients):
        await ws.send(f"{tag} {i}")
    expected = {f"{tag} {i}" for i in range(len(clients))}
    for ws in clients:
        assert {await recv(ws) for _ in clients} == expected


async def admitted_within(make, timeout: float, *, resets: bool = False):
    """Retries `make()` (a `connect(...)`) while the server refuses it: a place is given back
    when the server reaps the connection that left, a moment after the client saw it close.
    Returns the connection and how many attempts were refused. A refusal is a 503 or, with
    `resets`, a connection error (the per-address limit closes without reading the request,
    so the 503 may be lost to a reset)."""
    deadline = time.monotonic() + timeout
    refused = 0
    errors = (InvalidHandshake, OSError) if resets else InvalidStatus
    while True:
        try:
            return await make(), refused
        except errors as e:
            if isinstance(e, InvalidStatus):
                assert e.response.status_code == 503, e
            refused += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"still refused {timeout} s after a place was freed: {e!r}")
            await asyncio.sleep(0.05)


def test_max_connections_refuses_extra_upgrades_only(server):
    srv = server("--max-connections", "3")

    refusals = 2  # 503s counted by the test: so far, the two fourth upgrades below

    async def scenario(port):
        nonlocal refusals
        members = [await connect(port, "full") for _ in range(3)]
        try:
            # A fourth upgrade gets 503 with Retry-After, and the connection is closed.
            with Conn.open(port) as conn:
                assert_refused_503(conn.request(upgrade_request("/full")))
                assert conn.reads_eof()
            with pytest.raises(InvalidStatus) as refused:
                await connect(port, "full")
            assert refused.value.response.status_code == 503
            # Plain HTTP is not a session: still served.
            with Conn.open(port) as conn:
                assert conn.request(get("/health")).status == 200
            # The three admitted sessions are untouched.
            await all_hear_each_other(members, "before")
            # One leaves; soon a newcomer is admitted in its place, and only one.
            await members.pop().close()
            newcomer, retries = await admitted_within(lambda: connect(port, "full"), 5)
            members.append(newcomer)
            with pytest.raises(InvalidStatus):
                await connect(port, "full")
            refusals += retries + 1
            await all_hear_each_other(members, "after")
        finally:
            for ws in members:
                await ws.close()

    run(scenario(srv.port), timeout=30)
    m = srv.metrics()
    assert m['shardcast_handshakes_total{result="unavailable"}'] == refusals
    assert m["shardcast_websocket_sessions_all"] <= 3


def test_max_connections_per_ip_counts_each_address(server):
    srv = server("--max-connections-per-ip", "2")

    def refused_from(ip: str) -> None:
        # Sends nothing: the server writes its 503 at once and closes. (A client that had
        # sent its request might lose the answer to a reset, since the server never reads.)
        with Conn.open(srv.port, source=ip) as conn:
            assert_refused_503(conn.read_response())
            assert conn.reads_eof()

    refusals = 3

    async def scenario(port):
        nonlocal refusals

        def join(ip):
            return connect(port, "perip", local_addr=(ip, 0))

        members = [await join(IP_A), await join(IP_A)]
        try:
            refused_from(IP_A)
            # Another address has places of its own.
            members += [await join(IP_B), await join(IP_B)]
            refused_from(IP_B)
            refused_from(IP_A)
            await all_hear_each_other(members, "four")
            # A place comes back when a connection from that address ends.
            await members.pop(0).close()
            newcomer, retries = await admitted_within(lambda: join(IP_A), 5, resets=True)
            members.append(newcomer)
            refusals += retries
            await all_hear_each_other(members, "again")
        finally:
            for ws in members:
                await ws.close()

    run(scenario(srv.port), timeout=30)
    assert srv.metrics(source=IP_METRICS)["shardcast_per_ip_refused_total"] == refusals


ORIGINS = {
    "listed": ("https://chat.example", 101),
    "listed-other-case": ("HTTPS://Chat.EXAMPLE", 101),
    "second-listed": ("http://localhost:8080", 101),
    "unlisted": ("https://evil.example", 403),
    "listed-as-prefix": ("https://chat.example.evil.example", 403),
    "other-port": ("https://chat.example:8443", 403),
    "other-scheme": ("http://chat.example", 403),
    "null": ("null", 403),
    "no-origin-header": (None, 101),
}


def test_origin_allow_list(server):
    srv = server(
        "--allowed-origin", "https://chat.example", "--allowed-origin", "http://LOCALHOST:8080"
    )
    for name, (origin, status) in ORIGINS.items():
        extra = [] if origin is None else [f"Origin: {origin}"]
        with Conn.open(srv.port) as conn:
            resp = conn.request(upgrade_request("/origins", None, "13", *extra))
            assert resp.status == status, f"{name}: {origin!r} got {resp.status}"
            if status == 403:
                assert resp.reason == "Forbidden"
                assert resp.headers["connection"].lower() == "close"
                assert conn.reads_eof(), name

    async def scenario(port):
        async with connect(port, "origins", origin="https://chat.example") as a:
            with pytest.raises(InvalidStatus) as refused:
                await connect(port, "origins", origin="https://evil.example")
            assert refused.value.response.status_code == 403
            await a.send("allowed")
            assert await recv(a) == "allowed"

    run(scenario(srv.port))
    forbidden = sum(status == 403 for _, status in ORIGINS.values()) + 1
    assert srv.metrics()['shardcast_handshakes_total{result="forbidden"}'] == forbidden

    # "*" allows every origin.
    anything = server("--allowed-origin", "*")
    for origin in ["https://evil.example", "null"]:
        with Conn.open(anything.port) as conn:
            assert conn.request(upgrade_request("/", None, "13", f"Origin: {origin}")).status == 101


# ---------------------------------------------------------------------------------------------
# Slow consumers


STALLED = 200
MAX_BUFFERED = 64 * 1024
PAYLOAD = 1024
FRAME_HEAD = bytes([0x82, 126]) + PAYLOAD.to_bytes(2, "big")  # how the server frames them
FRAME_LEN = len(FRAME_HEAD) + PAYLOAD
SLOW_CLOSE = close_frame(1008, "slow consumer")
WARMUP = b"hello"
WARMUP_FRAME = bytes([0x82, len(WARMUP)]) + WARMUP
WINDOW = 32  # messages the publisher may be ahead of the slower of its two readers


def kernel_send_buffer_max() -> int:
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        return int(f.read().split()[2])


def payload(i: int) -> bytes:
    return i.to_bytes(8, "big") + bytes((i + j) & 0xFF for j in range(PAYLOAD - 8))


class StalledReader:
    """Checks, as bytes arrive, that a stalled client's stream is messages 0, 1, 2, ... as
    whole frames, then the 1008 close frame, then nothing."""

    def __init__(self, conn: Conn, first: bytes, frames: list[bytes]):
        self.frames = frames
        self.buf = bytearray(conn.buf)  # whatever followed the 101 in the same read
        self.first = first  # the frame expected before message 0
        self.next = 0
        self.closed = False  # got the close frame
        self.eof = False

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            self.eof = True
            return
        assert not self.closed, f"{len(chunk)} bytes after the close frame"
        self.buf += chunk
        if self.first:
            if len(self.buf) < len(self.first):
                return
            assert self.buf[: len(self.first)] == self.first, bytes(self.buf[:20])
            del self.buf[: len(self.first)]
            self.first = b""
        while True:
            if self.buf[:1] == SLOW_CLOSE[:1]:
                if len(self.buf) < len(SLOW_CLOSE):
                    return
                assert bytes(self.buf) == SLOW_CLOSE, f"bad close: {bytes(self.buf[:40])!r}"
                self.closed = True
                del self.buf[:]
                return
            if len(self.buf) < FRAME_LEN:
                return
            assert self.buf[:FRAME_LEN] == self.frames[self.next], (
                f"frame {self.next} is not message {self.next}: {bytes(self.buf[:12]).hex()}"
            )
            self.next += 1
            del self.buf[:FRAME_LEN]


async def publish(pub, member, messages: list[bytes]) -> None:
    """`pub` sends every message, staying at most WINDOW messages ahead of what it and
    `member` have received back; both must receive each one, in order."""
    received = [0, 0]
    progress = asyncio.Event()

    async def read_all(ws, slot):
        for i, expected in enumerate(messages):
            got = await recv(ws, 10)
            assert got == expected, f"reader {slot}: message {i} is wrong ({got[:8].hex()})"
            received[slot] += 1
            progress.set()

    readers = [asyncio.create_task(read_all(ws, k)) for k, ws in enumerate((pub, member))]
    try:
        for i, message in enumerate(messages):
            while i - min(received) >= WINDOW:
                progress.clear()
                done, _ = await asyncio.wait(
                    [asyncio.create_task(progress.wait()), *readers],
                    timeout=10,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in done & set(readers):
                    task.result()  # a reader failed: raise its error
                assert done, f"no progress at message {i}, received {received}"
            await pub.send(message)
        await asyncio.gather(*readers)
    finally:
        for task in readers:
            task.cancel()


class RssSampler(threading.Thread):
    def __init__(self, srv, interval: float = 0.02):
        super().__init__(daemon=True)
        self.srv, self.interval = srv, interval
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.srv.rss_bytes())
            self.stop.wait(self.interval)


def test_stalled_readers_are_cut_off_and_memory_stays_bounded(server):
    """200 clients that never read sit in a busy room. Each can hold at most --max-buffered
    (64 KiB) in the server plus whatever the kernel buffers for it; once that is full it is
    closed as a slow consumer (1008) and its unsent messages are dropped. A reading member of
    the same room meanwhile gets every message, in order, and the server's memory stays flat.

    Message count: the kernel takes up to tcp_wmem's maximum (4 MiB by default) into each
    stalled socket's send buffer before the server's own queue grows at all, so the flood must
    be well beyond that for the limit to be reached: 1.5 x (send buffer + rcvbuf + the limit).
    """
    raise_nofile()
    per_client = kernel_send_buffer_max() + 64 * 1024 + MAX_BUFFERED
    count = max(4000, math.ceil(1.5 * per_client / FRAME_LEN))
    messages = [payload(i) for i in range(count)]
    frames = [FRAME_HEAD + m for m in messages]
    srv = server(
        "--max-buffered", str(MAX_BUFFERED),
        "--max-message", "16384",
        # The stalled clients are read only after the flood: the server must wait for them
        # to take their data and close frame instead of giving up on the close handshake.
        "--close-timeout", "60",
    )  # fmt: skip
    stalled = []
    sampler = RssSampler(srv)
    phases = {"start": time.monotonic()}
    try:
        for _ in range(STALLED):
            # A 4 KiB receive buffer set before connecting also keeps the advertised window
            # small; these clients never read until the very end.
            stalled.append(ws_connect(srv.port, "/flood", rcvbuf=4096))

        async def scenario(port):
            async with connect(port, "flood") as pub, connect(port, "flood") as member:
                # Every session has joined (the two above came after the 200 stalled ones).
                await pub.send(WARMUP)
                assert await recv(pub) == WARMUP and await recv(member) == WARMUP
                baseline = srv.rss_bytes()
                sampler.start()
                start = time.monotonic()
                await publish(pub, member, messages)
                return baseline, time.monotonic() - start

        baseline, flood_time = run(scenario(srv.port), timeout=60)
        phases["flood"] = time.monotonic()
        wait_for(
            lambda: srv.metrics()["shardcast_slow_consumer_closes_total"] == STALLED,
            10,
            f"{STALLED} slow-consumer closes",
        )
        sampler.stop.set()
        sampler.join()
        m = srv.metrics()
        assert m['shardcast_close_frames_sent_total{code="1008"}'] == STALLED
        assert m["shardcast_mesh_dropped_total"] == 0

        # Read what each stalled client was sent: messages 0..k-1 in order, each whole, then
        # close 1008 "slow consumer", then EOF. k is well short of the flood: the rest was
        # dropped.
        readers = {}
        with selectors.DefaultSelector() as sel:
            for conn in stalled:
                # Reading at last: a larger buffer makes that quicker (~3 MiB each).
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                conn.sock.setblocking(False)
                readers[conn.sock] = StalledReader(conn, WARMUP_FRAME, frames)
                sel.register(conn.sock, selectors.EVENT_READ)
            phases["cut"] = give_up = time.monotonic()
            give_up += 30
            while sel.get_map() and (left := give_up - time.monotonic()) > 0:
                for key, _ in sel.select(timeout=left):
                    reader = readers[key.fileobj]
                    try:
                        reader.feed(key.fileobj.recv(1 << 20))
                    except BlockingIOError:
                        continue
                    if reader.eof:
                        sel.unregister(key.fileobj)
        phases["drained"] = time.monotonic()
        delivered = sorted(r.next for r in readers.values())
        assert all(r.eof for r in readers.values()), "some stalled clients were never closed"
        assert all(r.closed for r in readers.values()), "some got no 1008 close frame"
        assert all(not r.buf for r in readers.values())
        assert 0 < delivered[0] and delivered[-1] < count, (delivered[0], delivered[-1], count)
    finally:
        sampler.stop.set()
        for conn in stalled:
            conn.close()

    # Bound. Broadcast frames are shared by reference, and each stalled queue is a suffix of
    # the room's stream no longer than 64 KiB, so all of them together hold at most the last
    # 64 messages (64 KiB) plus 200 x 64 small queue entries: under 1 MiB (measured: ~0.6
    # MiB). 8 MiB leaves room for allocator slack. Without the limit (--max-buffered 1 GiB,
    # same flood) the server grew by ~23 MiB: every message the kernel did not take stays
    # queued for each stalled client. (200 x max-buffered = 12.5 MiB would be the bound with
    # no sharing at all.)
    growth = sampler.peak - baseline
    bound = 8 * 1024 * 1024
    print(
        f"{count} messages in {flood_time:.2f} s; RSS baseline {baseline >> 20} MiB, peak "
        f"growth {growth / 2**20:.1f} MiB (bound {bound / 2**20:.1f} MiB); stalled clients got "
        f"{delivered[0]}..{delivered[-1]} messages before the cut; phases: "
        + ", ".join(f"{k} {v - phases['start']:.2f}" for k, v in phases.items())
    )
    assert growth < bound, f"RSS grew by {growth / 2**20:.1f} MiB"
    run(assert_chat_works(srv.port))


def test_unread_pongs_count_against_max_buffered(server):
    """A client that sends pings and never reads the pongs is a slow consumer too: the pongs
    queue against --max-buffered like broadcasts do, and it is closed with 1008 instead of
    making the server queue without bound."""
    srv = server(
        "--max-buffered", str(MAX_BUFFERED), "--max-message", "16384", "--close-timeout", "60"
    )  # fmt: skip
    ping_payload = 125  # the largest a control frame may carry
    pong_len = 2 + ping_payload
    # As for broadcasts, the kernel's send buffer fills first (see the stalled-readers test).
    per_client = kernel_send_buffer_max() + 64 * 1024 + MAX_BUFFERED
    count = math.ceil(1.5 * per_client / pong_len)
    payloads = [i.to_bytes(4, "big") + bytes([i & 0xFF]) * (ping_payload - 4) for i in range(count)]
    with ws_connect(srv.port, "/pings", rcvbuf=4096) as conn:
        pings = b"".join(encode_frame(OP_PING, p) for p in payloads)
        # The server keeps reading (and, once it has cut the client off, discarding), so this
        # completes although the client reads nothing.
        conn.sock.settimeout(30)
        conn.sock.sendall(pings)
        wait_for(
            lambda: srv.metrics()["shardcast_slow_consumer_closes_total"] == 1,
            10,
            "the pinging client closed as a slow consumer",
        )
        # What it was sent: pongs 0..k-1, each echoing its ping, then close 1008, then EOF.
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # reads faster
        data = conn.buf + read_to_eof(conn.sock, 30)
    pongs = 0
    while data[pongs * pong_len : pongs * pong_len + 2] == bytes([0x8A, ping_payload]):
        at = pongs * pong_len + 2
        assert data[at : at + ping_payload] == payloads[pongs], f"pong {pongs} is wrong"
        pongs += 1
    assert data[pongs * pong_len :] == SLOW_CLOSE, data[pongs * pong_len :][:40]
    assert 0 < pongs < count, (pongs, count)
    run(assert_chat_works(srv.port))


# ---------------------------------------------------------------------------------------------
# Running out of file descriptors


def test_descriptor_exhaustion_pauses_accept_without_spinning(server):
    """With RLIMIT_NOFILE 256 and 400 connections arriving, accept fails with EMFILE. The
    server must keep running, retry every 100 ms rather than in a tight loop, and serve again
    once descriptors are free.

    CPU bound: at 10 retries a second the acceptor uses well under 1% of a core (measured:
    ~0.01 s of CPU in 3 s). A loop retrying at once would use a whole core, ~3 s in 3 s (still
    over 1 s with two CPU hogs competing for two cores); 0.5 s lies far from both."""
    raise_nofile()
    srv = server(
        "--handshake-timeout", "60",  # the held connections must not time out meanwhile
        "--max-connections", "100",  # the default, limit - 256, would be 1 here
        workers=2,
        nofile=256,
    )  # fmt: skip
    socks: list[socket.socket] = []
    try:
        for _ in range(400):
            socks.append(open_socket(srv.port, timeout=None))
        wait_for(lambda: srv.log().count("pausing") >= 2, 10, "accept failing with EMFILE")
        assert "Too many open files" in srv.log()

        lines_before = srv.log().count("pausing")
        cpu_before = srv.cpu_seconds()
        time.sleep(3)
        cpu = srv.cpu_seconds() - cpu_before
        retries = srv.log().count("pausing") - lines_before
        print(f"saturated: {cpu:.3f} s CPU and {retries} accept retries in 3 s")
        assert srv.process.poll() is None, "the server exited"
        assert cpu < 0.5, f"{cpu:.2f} s of CPU in 3 s while saturated"
        # About 30 (one per 100 ms); a few at least, to show it keeps trying.
        assert 5 <= retries <= 45, retries
    finally:
        for s in socks:
            s.close()

    # Descriptors come back as the server sees the clients leave; then it serves again.
    start = time.monotonic()

    async def chat_again(port):
        deadline = start + 5
        while True:
            try:
                return await assert_chat_works(port)
            except (OSError, TimeoutError, InvalidHandshake) as e:
                if time.monotonic() > deadline:
                    raise AssertionError(f"not serving 5 s after descriptors freed: {e!r}")
                await asyncio.sleep(0.1)

    run(chat_again(srv.port), timeout=30)
    print(f"serving again after {time.monotonic() - start:.2f} s")
    # Every held connection is gone again (only the /metrics request's own is open).
    wait_for(
        lambda: srv.metrics()["shardcast_connections_all"] == 1, 5, "all connections closed"
    )


def test_descriptor_limit_is_raised_to_the_hard_limit(server):
    srv = server(nofile=(256, 4096))
    assert srv.nofile_limits() == (4096, 4096)
    run(assert_chat_works(srv.port))
