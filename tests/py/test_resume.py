"""Exact resume (issue 11, docs/protocol.md): a v1 member that drops out and comes back with
`since=EPOCH:OFFSET` (the epoch of its welcome, the offset of the last message it has) gets
`"recovered": true` and exactly the messages it missed, in order, marked `"history": true`,
then the live ones — as if it had never left.

The cases where the server cannot vouch (`"recovered": false`) are in test_history.py.
"""

from __future__ import annotations

import asyncio
import json

from websockets.exceptions import ConnectionClosed

from chat import as_plain, connect, envelope, expect, next_message, run, v1
from wire import wait_for

# ---------------------------------------------------------------------------------------------
# Resume under load

ROOM = "busy"
SENDERS = 4  # 0 and 2 plain, 1 and 3 v1
RATE = 500.0  # messages per second, all senders together
ROUNDS = 20
GAP = 1.0  # seconds between the drop and the reconnect: ~500 messages missed each time
LIVE = 0.25  # seconds of live messages checked after each (re)join, and at least...
LIVE_MIN = 20  # ...this many
HISTORY = 4096  # --history-size: a gap's worth of messages 8 times over
RECV_TIMEOUT = 10.0


class Log:
    """The room's messages as one v1 member received them: offset -> `nick: text` (see
    `as_plain`), checked contiguous as they come: no hole, no duplicate."""

    def __init__(self, who: str, welcome: dict) -> None:
        self.who = who
        self.epoch = welcome["epoch"]
        self.first = welcome["offset"] + 1
        self.last = welcome["offset"]
        self.texts: dict[int, str] = {}
        self.replayed: list[int] = []  # the replay count of each resume

    def add(self, env: dict, *, replayed: bool) -> None:
        assert env["offset"] == self.last + 1, (
            f"{self.who}: offset {env['offset']} after {self.last} ({env})"
        )
        assert env.get("history", False) is replayed, f"{self.who}: history flag wrong: {env}"
        self.last = env["offset"]
        self.texts[self.last] = as_plain(env)

    async def read_live(self, ws, until: float, at_least: int) -> None:
        """Live messages until the loop's clock passes `until` and at least `at_least` came."""
        loop = asyncio.get_running_loop()
        start = self.last
        while loop.time() < until or self.last - start < at_least:
            self.add(await next_message(ws, RECV_TIMEOUT), replayed=False)

    async def read_to(self, ws, offset: int) -> None:
        while self.last < offset:
            self.add(await next_message(ws, RECV_TIMEOUT), replayed=False)


async def sender(port: int, i: int, go: asyncio.Event, stop: asyncio.Event) -> int:
    """Sends its share of RATE from `go` until `stop`, reading the room meanwhile so that it
    never becomes a slow consumer; returns how many it sent, once all of them came back (so
    that the room surely has them before it closes)."""
    plain = i % 2 == 0
    ws = await (connect(port, ROOM) if plain else v1(port, ROOM, f"s{i}"))
    if not plain:
        await expect(ws, "welcome")
    mine = f"m{i}."
    echoed = [0]

    async def drain():
        async for got in ws:
            if not plain:
                env = json.loads(got)
                got = env.get("text", "") if env["type"] == "message" else ""
            if got.startswith(mine):
                echoed[0] += 1

    draining = asyncio.create_task(drain())
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        await go.wait()
        start = loop.time() + i / RATE
        while not stop.is_set():
            message = f"{mine}{sent}"
            await ws.send(message if plain else json.dumps({"type": "message", "text": message}))
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * SENDERS / RATE - loop.time()))
        deadline = loop.time() + RECV_TIMEOUT
        while echoed[0] < sent and not draining.done() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert echoed[0] == sent, f"sender {i}: {echoed[0]} of its {sent} messages came back"
    finally:
        draining.cancel()
        await ws.close()
    return sent


async def resume_rounds(port: int) -> tuple[Log, Log]:
    reference_ws = await v1(port, ROOM, "ref")
    reference = Log("reference", await expect(reference_ws, "welcome"))
    go, stop = asyncio.Event(), asyncio.Event()
    senders = [asyncio.create_task(sender(port, i, go, stop)) for i in range(SENDERS)]

    async def follow():
        while True:
            reference.add(await next_message(reference_ws, RECV_TIMEOUT), replayed=False)

    following = asyncio.create_task(follow())
    loop = asyncio.get_running_loop()
    ws = None
    stage = "the first join"
    try:
        await asyncio.sleep(0.2)  # the senders are connected
        go.set()
        ws = await v1(port, ROOM, "res")
        resumer = Log("resumer", await expect(ws, "welcome"))
        assert resumer.epoch == reference.epoch
        await resumer.read_live(ws, loop.time() + LIVE, LIVE_MIN)
        for n in range(ROUNDS):
            stage = f"round {n}, the drop and rejoin after offset {resumer.last}"
            # Abruptly: the TCP connection is cut, no close frame (an RST, since unread data
            # is waiting), whatever the library had buffered beyond `resumer.last` is lost.
            ws.transport.abort()
            await asyncio.sleep(GAP)
            # A new name each time: the dropped connection holds "res" until its shard has
            # seen it go, which a quick rejoin on another shard may beat (nick_taken).
            ws = await v1(port, ROOM, f"res{n}", query=f"since={resumer.epoch}:{resumer.last}")
            welcome = await expect(ws, "welcome")
            where = f"round {n}: since {resumer.last}, {welcome}"
            assert welcome["recovered"] is True, where
            assert welcome["epoch"] == resumer.epoch, where
            # The replay runs from the client's offset to the room's latest at the join.
            assert welcome["replay"] == welcome["offset"] - resumer.last, where
            resumer.replayed.append(welcome["replay"])
            stage = f"round {n}, the replay of {welcome['replay']} after offset {resumer.last}"
            for _ in range(welcome["replay"]):
                resumer.add(await next_message(ws, RECV_TIMEOUT), replayed=True)
            stage = f"round {n}, live messages after offset {resumer.last}"
            await resumer.read_live(ws, loop.time() + LIVE, LIVE_MIN)

        stage = "the end"
        stop.set()
        total = sum(await asyncio.gather(*senders))
        # Every message, to the last one sent, reaches both.
        await resumer.read_to(ws, total)
        deadline = loop.time() + RECV_TIMEOUT
        while reference.last < total and not following.done() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if following.done():
            following.result()  # raise its error
        assert reference.last == total, f"reference at {reference.last} of {total}"
        return reference, resumer
    except (AssertionError, TimeoutError, ConnectionClosed) as e:
        raise AssertionError(f"{stage}: {e!r} (reference at offset {reference.last})") from e
    finally:
        stop.set()
        following.cancel()
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        for w in (reference_ws, ws):
            if w is not None:
                await w.close()


def test_an_abruptly_dropped_member_resumes_exactly_twenty_times(server):
    srv = server("--history-size", str(HISTORY))
    reference, resumer = run(resume_rounds(srv.port), timeout=55)

    assert reference.first == 1
    assert list(resumer.texts) == list(range(resumer.first, resumer.last + 1))
    # The resumed member's whole sequence, replays and live parts, is the reference's.
    for offset, rendered in resumer.texts.items():
        assert rendered == reference.texts[offset], f"offset {offset}"
    assert resumer.last == reference.last
    # Not a claim about the server: the test's own check that it did drop messages to resume.
    assert sum(resumer.replayed) > ROUNDS, f"replays {resumer.replayed}"
    print(f"{reference.last} messages; replays {resumer.replayed}")

    def counted():
        m = srv.metrics()
        gone = [m[f'shardcast_closes_total{{reason="{r}"}}'] for r in ("peer_gone", "io_error")]
        return m['shardcast_resumes_total{recovered="true"}'] == ROUNDS and sum(gone) >= ROUNDS

    # The server saw every drop as a connection gone without a close frame, and counted every
    # resume as exact.
    wait_for(counted, 5, f"{ROUNDS} exact resumes and {ROUNDS} abrupt closes counted")


# ---------------------------------------------------------------------------------------------
# Exact edges


async def publish(port: int, room: str, count: int, start: int = 0) -> list[str]:
    """A plain member sends `count` messages, each back before the next (so the room has
    them all when this returns); their texts."""
    texts = [f"msg {i}" for i in range(start, start + count)]
    async with connect(port, room) as ws:
        for t in texts:
            await ws.send(t)
            while (got := await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)) != t:
                pass
    return texts


async def replay(ws, welcome: dict) -> list[dict]:
    """The `replay` messages after `welcome`, each marked as history."""
    out = [await next_message(ws) for _ in range(welcome["replay"])]
    assert all(m.get("history") is True for m in out), out
    return out


def test_resume_with_nothing_missed_replays_nothing(server):
    srv = server()

    async def scenario():
        await publish(srv.port, "calm", 3)
        async with v1(srv.port, "calm", "ann") as ws:
            w = await expect(ws, "welcome")
            assert (w["offset"], w["replay"]) == (3, 0) and "recovered" not in w, w
        async with v1(srv.port, "calm", "ann", query=f"since={w['epoch']}:3") as ws:
            again = await expect(ws, "welcome")
            assert again["recovered"] is True and again["replay"] == 0, again
            assert (again["epoch"], again["offset"]) == (w["epoch"], 3)
            await publish(srv.port, "calm", 1, start=3)
            m = await next_message(ws)
            assert (m["offset"], m["text"], "history" in m) == (4, "msg 3", False), m

    run(scenario())


def test_resume_reaches_back_exactly_to_the_history_size(server):
    """--history-size 10 and 30 messages: the history holds 21-30, so a client that has 20
    missed nothing the server cannot give back."""
    srv = server("--history-size", "10")

    async def scenario():
        texts = await publish(srv.port, "edge", 30)
        async with v1(srv.port, "edge", "ann") as ws:
            epoch = (await expect(ws, "welcome"))["epoch"]
        async with v1(srv.port, "edge", "ann", query=f"since={epoch}:20") as ws:
            w = await expect(ws, "welcome")
            assert (w["recovered"], w["offset"], w["replay"]) == (True, 30, 10), w
            got = await replay(ws, w)
            assert [(m["offset"], m["text"]) for m in got] == list(zip(range(21, 31), texts[20:]))

    run(scenario())


def test_since_with_history_replays_only_what_was_missed(server):
    """Recovered, `replay` is exactly what came after the client's offset, whatever `history`
    asked for."""
    srv = server()

    async def scenario():
        texts = await publish(srv.port, "both", 10)
        async with v1(srv.port, "both", "ann") as ws:
            epoch = (await expect(ws, "welcome"))["epoch"]
        async with v1(srv.port, "both", "ann", query=f"since={epoch}:8&history=5") as ws:
            w = await expect(ws, "welcome")
            assert (w["recovered"], w["replay"]) == (True, 2), w
            got = await replay(ws, w)
            assert [(m["offset"], m["text"]) for m in got] == [(9, texts[8]), (10, texts[9])]

    run(scenario())


def test_resume_in_a_hello(server):
    """A client that joins with `hello` gives `since` there, as an object."""
    srv = server()

    async def scenario():
        texts = await publish(srv.port, "hi", 5)
        async with v1(srv.port, "hi", "ann") as ws:
            epoch = (await expect(ws, "welcome"))["epoch"]
        async with v1(srv.port, "hi") as ws:
            await ws.send(json.dumps({"type": "hello", "nick": "ann",
                                      "since": {"epoch": epoch, "offset": 2}}))
            w = await expect(ws, "welcome")
            assert (w["recovered"], w["replay"], w["offset"]) == (True, 3, 5), w
            got = await replay(ws, w)
            assert [m["text"] for m in got] == texts[2:]
        # A malformed `since` object makes the hello a bad envelope: no member yet.
        async with v1(srv.port, "hi") as ws:
            for since in ({"epoch": epoch}, {"epoch": epoch, "offset": "2"}, "x:2",
                          {"epoch": 5, "offset": 2}):
                await ws.send(json.dumps({"type": "hello", "nick": "bob", "since": since}))
                assert (await expect(ws, "error"))["code"] == "bad_envelope", since
            await ws.send(json.dumps({"type": "hello", "nick": "bob"}))
            assert (await expect(ws, "welcome"))["nick"] == "bob"
        # A well-formed object whose epoch is no epoch: `bad_since`, and the join goes on.
        async with v1(srv.port, "hi") as ws:
            since = {"epoch": "not an epoch", "offset": 2}
            await ws.send(json.dumps({"type": "hello", "nick": "cy", "since": since}))
            got = {}
            for _ in range(2):
                env = await envelope(ws)
                got[env["type"]] = env
            assert got.keys() == {"error", "welcome"}, got
            assert got["error"]["code"] == "bad_since", got
            assert (got["welcome"]["recovered"], got["welcome"]["replay"]) == (False, 0), got

    run(scenario())

