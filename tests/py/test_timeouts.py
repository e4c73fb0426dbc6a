"""Deadlines: the handshake timeout, server pings and the pong timeout, the idle timeout.

Each test runs the server with deadlines of a second or two and allows generous slack on the
late side (a loaded machine delays the server and the test alike); the early side is exact,
since nothing may be closed before its deadline.
"""

from __future__ import annotations

import asyncio
import select
import selectors
import socket
import threading
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from chat import FrameLog, assert_chat_works, connect, recv, run
from wire import (
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Conn,
    encode_frame,
    open_socket,
    peer_closed,
    raise_nofile,
    read_frame,
    read_to_eof,
    wait_for,
    ws_connect,
)

# Added to every upper time bound: scheduling delay on a busy machine, not server slack.
SLACK = 3.0

HALF_HEAD = b"GET /lobby HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webs"


def metric_reaches(srv, name: str, value: float, timeout: float = 3.0) -> None:
    """Waits until the metric `name` equals `value` (counters are published once per shard
    loop turn, so a scrape may trail what a client already saw by a moment)."""
    last = {}

    def check():
        last["value"] = srv.metrics().get(name)
        return last["value"] == value

    try:
        wait_for(check, timeout, f"{name} == {value}", interval=0.05)
    except AssertionError:
        raise AssertionError(f"{name} is {last.get('value')}, expected {value}") from None


def test_incomplete_request_head_is_closed_at_the_handshake_deadline(server):
    srv = server("--handshake-timeout", "1")
    with Conn.open(srv.port) as half, Conn.open(srv.port) as silent:
        start = time.monotonic()
        half.send(HALF_HEAD)
        # Both get no answer at all, just the end of the connection, at the deadline.
        for conn in (half, silent):
            assert read_to_eof(conn.sock, 1 + SLACK + 2) == b""
            elapsed = time.monotonic() - start
            assert 0.8 <= elapsed <= 1 + SLACK, f"closed after {elapsed:.2f} s"
    metric_reaches(srv, 'shardcast_handshakes_total{result="timeout"}', 2)
    run(assert_chat_works(srv.port))


def test_many_dribbling_clients_do_not_hold_up_others(server):
    """500 connections trickle a request head one byte at a time and never finish it. A real
    client meanwhile connects and chats at once; trickling does not extend the deadline; at
    the deadline all 500 are closed."""
    raise_nofile()
    deadline = 4.0
    dribblers = 500
    srv = server("--handshake-timeout", str(deadline))
    socks: list[socket.socket] = []
    stop = threading.Event()
    send_errors: list[OSError] = []

    def dribble():
        # One byte per connection every 0.25 s; stops a second before the deadline, so that
        # every byte sent was read before the server closes (a clean FIN, no reset).
        while not stop.wait(0.25) and time.monotonic() < first + deadline - 1:
            for s in socks:
                try:
                    s.send(b"a")
                except OSError as e:
                    send_errors.append(e)

    try:
        first = time.monotonic()
        for _ in range(dribblers):
            s = open_socket(srv.port)
            s.sendall(b"GET /dribble HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Dribble: ")
            socks.append(s)
        last = time.monotonic()
        dribbler = threading.Thread(target=dribble, daemon=True)
        dribbler.start()
        # The server holds them all (+1: the /metrics connection itself).
        wait_for(
            lambda: srv.metrics()["shardcast_connections_all"] == dribblers + 1,
            deadline / 2,
            "all dribblers adopted",
        )

        chat_start = time.monotonic()
        run(assert_chat_works(srv.port), timeout=10)
        chat_time = time.monotonic() - chat_start
        assert chat_time < 2.0, f"chat took {chat_time:.2f} s while dribblers hung"
        assert time.monotonic() < first + deadline, "too slow to check before the deadline"
        early = [i for i, s in enumerate(socks) if peer_closed(s)]
        assert not early, f"{len(early)} dribblers closed before the deadline"

        dribbler.join(timeout=deadline + SLACK)
        assert not send_errors, f"sending failed before the deadline: {send_errors[:3]}"

        # Every dribbler now sees EOF (and no answer), none before its deadline.
        closed_at: dict[int, float] = {}
        with selectors.DefaultSelector() as sel:
            for i, s in enumerate(socks):
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ, i)
            give_up = last + deadline + SLACK
            while len(closed_at) < dribblers and (left := give_up - time.monotonic()) > 0:
                for key, _ in sel.select(timeout=left):
                    i = key.data
                    try:
                        data = socks[i].recv(4096)
                    except ConnectionResetError:
                        data = b""
                    assert data == b"", f"dribbler {i} got an answer: {data[:80]!r}"
                    closed_at[i] = time.monotonic()
                    sel.unregister(socks[i])
        assert len(closed_at) == dribblers, (
            f"{dribblers - len(closed_at)} dribblers still open {SLACK} s after the deadline"
        )
        assert min(closed_at.values()) >= first + deadline - 0.05
    finally:
        stop.set()
        for s in socks:
            s.close()
    metric_reaches(srv, 'shardcast_handshakes_total{result="timeout"}', dribblers)
    run(assert_chat_works(srv.port))


def test_peer_that_never_answers_a_ping_is_dropped(server):
    """With --ping-interval 1 --pong-timeout 1: a raw client that never reads or writes gets
    one empty ping (0x89 0x00) after 1 s and is dropped, without a close frame, 1 s later. A
    raw client that answers each ping with a pong, and a `websockets` client (which answers
    pings by itself), both stay connected throughout and can still chat."""
    interval, pong_timeout, watch = 1.0, 1.0, 4.5
    srv = server("--ping-interval", str(interval), "--pong-timeout", str(pong_timeout))
    log = FrameLog()
    with sync_connect(
        f"ws://127.0.0.1:{srv.port}/ping",
        compression=None,
        ping_interval=None,  # it must stay alive by answering, not by sending pings itself
        open_timeout=5,
        close_timeout=2,
        logger=log.logger,
    ) as healthy, ws_connect(srv.port, "/ping") as mute, ws_connect(srv.port, "/ping") as polite:
        start = time.monotonic()
        poller = select.poll()
        poller.register(mute.sock, select.POLLRDHUP)  # the end, without reading the data
        poller.register(polite.sock, select.POLLIN)
        mute_closed = None
        pings_answered = []
        while (left := start + watch - time.monotonic()) > 0:
            for fd, events in poller.poll(left * 1000):
                if fd == mute.sock.fileno():
                    mute_closed = time.monotonic() - start
                    poller.unregister(mute.sock)
                    continue
                fin, opcode, payload = read_frame(polite)
                assert (fin, opcode, payload) == (True, OP_PING, b""), "expected an empty ping"
                polite.send(encode_frame(OP_PONG, payload))
                pings_answered.append(time.monotonic() - start)

        assert mute_closed is not None, f"the mute client was still connected after {watch} s"
        earliest = interval + pong_timeout
        assert earliest - 0.2 <= mute_closed <= earliest + SLACK - 0.5, f"{mute_closed:.2f} s"
        # All it ever got was the ping: no close frame, just the end of the connection.
        assert read_to_eof(mute.sock, 2) == bytes([0x89, 0x00])

        # ~4 pings in 4.5 s; at least 3 even if a busy machine delays some.
        assert 3 <= len(pings_answered) <= 5, pings_answered
        assert pings_answered[0] >= interval - 0.2
        server_pings = log.times("<", "PING")
        assert len(server_pings) >= 3, log.frames
        assert len(log.times(">", "PONG")) == len(server_pings), log.frames

        # Both are still members: a message from the raw client reaches both.
        polite.send(encode_frame(OP_TEXT, b"still here"))
        assert read_frame(polite) == (True, OP_TEXT, b"still here")
        assert healthy.recv(timeout=5) == "still here"
        healthy.send("me too")
        assert healthy.recv(timeout=5) == "me too"
        assert read_frame(polite) == (True, OP_TEXT, b"me too")

    metric_reaches(srv, 'shardcast_timer_closes_total{timer="pong"}', 1)


def test_ping_interval_counts_from_the_last_input(server):
    """--ping-interval 0.3 --pong-timeout 2: a pong is input like any other, so the next ping
    is due 0.3 s after it, not when the 2 s pong deadline of the previous ping would have
    passed. And a peer that goes silent after its last pong is dropped ping-interval +
    pong-timeout after that pong."""
    interval, pong_timeout = 0.3, 2.0
    srv = server("--ping-interval", str(interval), "--pong-timeout", str(pong_timeout))
    with ws_connect(srv.port, "/pings") as conn:
        conn.sock.settimeout(interval + pong_timeout + SLACK)
        answered = []
        for _ in range(4):
            assert read_frame(conn) == (True, OP_PING, b"")
            conn.send(encode_frame(OP_PONG, b""))
            answered.append(time.monotonic())
        gaps = [round(b - a, 2) for a, b in zip(answered, answered[1:])]
        # Each ping comes `interval` after the pong before it (1 s of scheduling slack; the
        # 2 s pong timeout is well beyond that).
        assert all(interval - 0.1 <= gap <= interval + 1.0 for gap in gaps), gaps
        # Now silent: one more ping, then the end, interval + pong_timeout after the last pong.
        rest = read_to_eof(conn.sock, interval + pong_timeout + SLACK)
        dropped = time.monotonic() - answered[-1]
        assert rest == bytes([0x89, 0x00])
        expected = interval + pong_timeout
        assert expected - 0.1 <= dropped <= expected + 1.0, f"dropped after {dropped:.2f} s"


async def idle_scenario(port: int, idle: float) -> None:
    quiet_log = FrameLog()
    async with (
        # Answers the server's pings (pongs are not messages) but sends nothing else.
        connect(port, "idle", ping_interval=None, logger=quiet_log.logger) as quiet,
        # Sends only its own pings, which are not data messages either.
        connect(port, "idle", ping_interval=0.3, ping_timeout=5) as pinger,
        connect(port, "idle", ping_interval=None) as talker,
    ):
        start = time.monotonic()

        async def closed_by_server(ws) -> float:
            """Reads (the talker's messages) until the server closes `ws`; returns when."""
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed as closed:
                assert closed.rcvd is not None, "closed without a close frame"
                assert (closed.rcvd.code, closed.rcvd.reason) == (1000, "idle timeout")
                return time.monotonic() - start

        async def talk() -> None:
            # One message every 0.3 s for well over twice the idle timeout.
            for i in range(int(2.4 * idle / 0.3)):
                await talker.send(f"tick {i}")
                assert await recv(talker) == f"tick {i}"
                await asyncio.sleep(0.3)

        quiet_at, pinger_at, _ = await asyncio.gather(
            closed_by_server(quiet), closed_by_server(pinger), talk()
        )
        for who, at in (("quiet", quiet_at), ("pinger", pinger_at)):
            assert idle - 0.2 <= at <= idle + SLACK, f"{who} closed after {at:.2f} s"
        assert quiet_log.times("<", "PING"), "the quiet client was never pinged"
        assert quiet_log.times(">", "PONG")
        # The talker is still a member.
        await talker.send("still talking")
        assert await recv(talker) == "still talking"


def test_idle_timeout_closes_quiet_clients_only(server):
    idle = 1.5
    srv = server("--idle-timeout", str(idle), "--ping-interval", "0.5", "--pong-timeout", "2")
    run(idle_scenario(srv.port, idle), timeout=20)
    metric_reaches(srv, 'shardcast_timer_closes_total{timer="idle"}', 2)
    assert srv.metrics()['shardcast_close_frames_sent_total{code="1000"}'] >= 2
