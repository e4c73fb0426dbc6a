"""The shardcast.v1 chat protocol (docs/protocol.md) with Python `websockets` clients: envelopes,
the rendering between plain and v1 clients, online counts across shards, and departures by
close, crash, silence and slow consumption."""

from __future__ import annotations

import asyncio
import json
import re
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from websockets.exceptions import ConnectionClosed

import wire
from chat import connect, recv, run
from conftest import MODEL

V1 = ["shardcast.v1"]


def v1(port: int, room: str, nick: str | None = None, **kwargs):
    query = "" if nick is None else f"?nick={nick}"
    return connect(port, room + query, subprotocols=V1, **kwargs)


async def envelope(ws, timeout: float = 5.0) -> dict:
    message = await recv(ws, timeout)
    assert isinstance(message, str), f"expected a text envelope, got {message!r}"
    return json.loads(message)


async def expect(ws, kind: str, timeout: float = 5.0) -> dict:
    """The next envelope, which must be of type `kind`."""
    env = await envelope(ws, timeout)
    assert env["type"] == kind, f"expected {kind}, got {env}"
    return env


async def assert_quiet(ws, seconds: float = 0.3) -> None:
    try:
        got = await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return
    raise AssertionError(f"expected nothing, got {got!r}")


def test_v1_is_negotiated_only_when_offered(server):
    srv = server()

    async def main():
        async with v1(srv.port, "a", "ann") as a, connect(srv.port, "a") as p:
            assert a.subprotocol == "shardcast.v1"
            assert p.subprotocol is None
        # Offering other protocols too still picks v1; offering only others gets none.
        async with connect(srv.port, "a?nick=x", subprotocols=["chat", "shardcast.v1"]) as b:
            assert b.subprotocol == "shardcast.v1"
            await expect(b, "welcome")

    run(main())


def test_welcome_message_join_and_leave_envelopes(server):
    srv = server()

    async def main():
        async with v1(srv.port, "room1", "ann") as ann:
            w = await expect(ann, "welcome")
            assert w == {"type": "welcome", "id": w["id"], "room": "room1", "nick": "ann",
                         "online": 1, "epoch": w["epoch"], "offset": 0, "replay": 0,
                         "max_message_bytes": 65536, "reclaim": w["reclaim"]}
            assert len(w["epoch"]) == 16 and int(w["epoch"], 16) >= 0
            # The session id, then 128 bits of HMAC in hex.
            assert re.fullmatch(re.escape(w["id"]) + r"\.[0-9a-f]{32}", w["reclaim"]), w
            async with v1(srv.port, "room1") as bob:
                # No nick yet: not a member, nothing but errors until hello.
                await bob.send(json.dumps({"type": "message", "text": "early"}))
                assert (await expect(bob, "error"))["code"] == "hello_required"
                await bob.send(json.dumps({"type": "hello", "nick": "b o b"}))
                assert (await expect(bob, "error"))["code"] == "bad_nick"
                await assert_quiet(ann)
                await bob.send(json.dumps({"type": "hello", "nick": "bob"}))
                wb = await expect(bob, "welcome")
                assert (wb["nick"], wb["online"]) == ("bob", 2)
                assert wb["id"] != w["id"]
                j = await expect(ann, "join")
                assert j == {"type": "join", "id": wb["id"], "nick": "bob", "online": 2}

                before = time.time() * 1000
                await bob.send(json.dumps({"type": "message", "text": "hi <b>ann</b> \"☃\""}))
                for ws in (ann, bob):  # the sender gets its own message back
                    m = await expect(ws, "message")
                    assert m["id"] == wb["id"] and m["nick"] == "bob"
                    assert m["text"] == "hi <b>ann</b> \"☃\""
                    assert before - 5000 <= m["ts"] <= time.time() * 1000 + 5000

                for bad, code in [("nope", "bad_envelope"), ("[1]", "bad_envelope"),
                                  ('{"type":"message","text":""}', "empty_message"),
                                  ('{"type":"hello","nick":"again"}', "already_joined")]:
                    await bob.send(bad)
                    err = await expect(bob, "error")
                    assert err["code"] == code and err["text"], err
            left = await expect(ann, "leave")
            assert left == {"type": "leave", "id": wb["id"], "nick": "bob", "online": 1}

    run(main())


def test_plain_and_v1_clients_share_a_room(server):
    srv = server()

    async def main():
        async with v1(srv.port, "mix", "ann") as ann:
            # Ann is a member before the plain client comes, so she hears of its arrival (a
            # welcome given after it would count it instead).
            w = await expect(ann, "welcome")
            async with connect(srv.port, "mix") as plain:
                await plain_in_room(ann, plain, w)

    async def plain_in_room(ann, plain, w):
        j = await expect(ann, "join")
        assert j["nick"] is None and j["online"] == 2

        await plain.send("from plain <i>x</i>")
        assert await recv(plain) == "from plain <i>x</i>"  # byte-exact, nothing else
        m = await expect(ann, "message")
        assert m["nick"] is None and m["text"] == "from plain <i>x</i>"
        assert m["id"] == j["id"]

        await plain.send(b"\x00\x01binary")
        assert await recv(plain) == b"\x00\x01binary"
        assert await recv(ann) == b"\x00\x01binary"

        await ann.send(json.dumps({"type": "message", "text": "hello: plain"}))
        assert await recv(plain) == "ann: hello: plain"
        m = await expect(ann, "message")
        assert (m["id"], m["text"]) == (w["id"], "hello: plain")
        await assert_quiet(plain)  # no notices or envelopes for plain clients

    run(main())


def test_nick_from_the_query_is_percent_decoded_and_validated(server):
    srv = server()

    async def main():
        async with v1(srv.port, "q", "Jos%C3%A9") as a:
            assert (await expect(a, "welcome"))["nick"] == "José"
        async with v1(srv.port, "q", "%3Cscript%3E") as b:
            assert (await expect(b, "error"))["code"] == "bad_nick"
            await b.send(json.dumps({"type": "hello", "nick": "fine"}))
            assert (await expect(b, "welcome"))["nick"] == "fine"

    run(main())


def envelope_of_size(size: int) -> str:
    """A `message` envelope exactly `size` bytes long in UTF-8 (escapes and all), its text
    padded with 'x' after a part that JSON escapes or UTF-8 makes wider than it looks."""
    tricky = 'a "quote", a \\ and a\nnewline, é, ☃ and 😀 '
    fixed = len(json.dumps({"type": "message", "text": tricky}, ensure_ascii=False).encode())
    assert size >= fixed, size
    return json.dumps({"type": "message", "text": tricky + "x" * (size - fixed)},
                      ensure_ascii=False)


def test_welcome_states_the_message_limit_and_it_is_exact(server):
    """The welcome's `max_message_bytes` is --max-message, counted on the whole envelope in
    UTF-8: one of exactly that size is relayed, one byte more is closed with 1009."""
    srv = server("--max-message", "1000")

    async def main():
        async with v1(srv.port, "big", "ann") as ann, v1(srv.port, "big", "bob") as bob:
            limit = (await expect(ann, "welcome"))["max_message_bytes"]
            assert limit == 1000
            await expect(bob, "welcome")
            await expect(ann, "join")
            fits = envelope_of_size(limit)
            assert len(fits.encode()) == limit
            await ann.send(fits)
            for ws in (ann, bob):
                assert (await expect(ws, "message"))["text"] == json.loads(fits)["text"]
            await ann.send(envelope_of_size(limit + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ann)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            left = await expect(bob, "leave")
            assert left["nick"] == "ann"

    run(main())


def test_binary_from_a_v1_client_is_closed_with_1003(server):
    srv = server()

    async def main():
        async with v1(srv.port, "bin", "ann") as a:
            await expect(a, "welcome")
            await a.send(b"\x01\x02")
            with pytest.raises(ConnectionClosed) as closed:
                await recv(a)
            assert closed.value.rcvd.code == 1003

    run(main())


def test_no_hello_in_time_is_closed_with_1008(server):
    srv = server("--handshake-timeout", "1")

    async def main():
        async with v1(srv.port, "slow") as a:
            started = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                await recv(a, timeout=10)
            assert closed.value.rcvd.code == 1008
            assert closed.value.rcvd.reason == "hello expected"
            assert time.monotonic() - started < 8

    run(main())


def test_online_counts_span_all_shards(server):
    srv = server(workers=4)
    expected_workers = 1 if MODEL == "single" else 4

    async def main():
        ids, clients = [], []
        try:
            watcher = await v1(srv.port, "count", "watch")
            clients.append(watcher)
            w = await expect(watcher, "welcome")
            ids.append(w["id"])
            # Seven more, plain and v1 alternating: each arrival is counted, on whatever shard
            # the acceptor dealt it to.
            for n in range(2, 9):
                if n % 2:
                    c = await connect(srv.port, "count")
                else:
                    c = await v1(srv.port, "count", f"u{n}")
                    assert (await expect(c, "welcome"))["online"] == n
                clients.append(c)
                j = await expect(watcher, "join")
                assert j["online"] == n, j
                ids.append(j["id"])
            workers = {i.split(".")[0] for i in ids}
            assert len(workers) == expected_workers, f"ids {ids} should span the shards"
            assert len(set(ids)) == len(ids)
            # Leaves count down, whichever shard the leaver was on.
            for n in range(8, 4, -1):
                gone = clients.pop()
                await gone.close()
                le = await expect(watcher, "leave")
                assert (le["online"], le["id"]) == (n - 1, ids[n - 1])
            # A newcomer on any shard sees the same total.
            for _ in range(4):
                async with v1(srv.port, "count", "late") as late:
                    assert (await expect(late, "welcome"))["online"] == 5
                await expect(watcher, "join")
                assert (await expect(watcher, "leave"))["online"] == 4
        finally:
            for c in clients:
                await c.close()

    run(main(), timeout=40)


CRASHER = textwrap.dedent(
    """
    import asyncio, sys
    from websockets.asyncio.client import connect
    async def main():
        ws = await connect(sys.argv[1], subprotocols=["shardcast.v1"], ping_interval=None)
        print(await ws.recv(), flush=True)
        await asyncio.sleep(3600)
    asyncio.run(main())
    """
)


def start_crasher(url: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, url], stdout=subprocess.PIPE)
    line = proc.stdout.readline()
    assert line, "the crasher client did not get its welcome"
    return proc, json.loads(line)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_crashed_or_frozen_client_leaves_within_the_pong_timeout(server, how):
    """SIGKILL: the kernel closes the socket (no close frame). SIGSTOP: the process stops
    answering but the connection stays up, like a pulled cable: the ping goes unanswered."""
    srv = server("--ping-interval", "1", "--pong-timeout", "1")

    async def main():
        async with v1(srv.port, "crash", "watch") as watcher:
            await expect(watcher, "welcome")
            proc, welcome = start_crasher(srv.url("crash") + "?nick=doomed")
            try:
                assert (await expect(watcher, "join"))["nick"] == "doomed"
                os.kill(proc.pid, getattr(signal, how))
                killed = time.monotonic()
                left = await expect(watcher, "leave", timeout=15)
                # Ping interval + pong timeout = 2 s; generous for a loaded machine.
                assert time.monotonic() - killed < 10
                assert left == {"type": "leave", "id": welcome["id"], "nick": "doomed",
                                "online": 1}
            finally:
                proc.kill()
                proc.wait()

    run(main(), timeout=30)


def test_a_slow_consumer_leaves_at_once(server):
    srv = server("--max-buffered", "65536", "--max-message", "8192", workers=2)

    async def main():
        async with v1(srv.port, "flood", "watch") as watcher:
            await expect(watcher, "welcome")
            # A raw v1 client that never reads, with a small receive window.
            stuck = wire.Conn.open(srv.port, rcvbuf=4096)
            resp = stuck.request(wire.upgrade_request(
                "/flood?nick=stuck", None, "13", "Sec-WebSocket-Protocol: shardcast.v1"))
            assert resp.status == 101
            assert resp.headers["sec-websocket-protocol"] == "shardcast.v1"
            j = await expect(watcher, "join")
            assert (j["nick"], j["online"]) == ("stuck", 2)
            async with connect(srv.port, "flood") as sender:
                await expect(watcher, "join")

                async def watch_for_leave():
                    while True:
                        env = await watcher.recv()
                        if isinstance(env, str) and '"type":"leave"' in env[:20]:
                            return json.loads(env)

                # The server's kernel send buffer to the stuck client grows to tcp_wmem's
                # maximum (4 MiB by default) before the session's own queue fills: send up
                # to 12 MB, stopping once the leave is seen. Each message waits for its echo,
                # so that the reading members never fall behind.
                leave_seen = asyncio.create_task(watch_for_leave())
                payload = "x" * 4000
                for _ in range(3000):
                    if leave_seen.done():
                        break
                    await sender.send(payload)
                    await recv(sender)
                leave = await asyncio.wait_for(leave_seen, 10)
                assert (leave["nick"], leave["online"]) == ("stuck", 2)
            stuck.close()

    run(main(), timeout=30)
    assert srv.metrics()["shardcast_slow_consumer_closes_total"] >= 1


def test_no_presence_sends_no_join_or_leave(server):
    srv = server("--no-presence")

    async def main():
        async with v1(srv.port, "quiet", "ann") as ann:
            assert (await expect(ann, "welcome"))["online"] == 1
            async with v1(srv.port, "quiet", "bob") as bob:
                assert (await expect(bob, "welcome"))["online"] == 2
                await assert_quiet(ann)
                await bob.send(json.dumps({"type": "message", "text": "hi"}))
                assert (await expect(ann, "message"))["text"] == "hi"
            async with v1(srv.port, "quiet", "cy") as cy:
                assert (await expect(cy, "welcome"))["online"] == 2
            await assert_quiet(ann)

    run(main())
