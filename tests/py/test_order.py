"""One order per room (issue 11): every member of a room, plain or v1, on whichever shard, in
every threading model, receives the room's messages in one and the same order — the room's
offsets — and each sender's messages in the order it sent them.

Nothing is promised about how two senders' messages interleave, nor about timing, so the test
compares the members with each other and with each sender's own order, never with a schedule.
"""

from __future__ import annotations

import asyncio
import json
import struct

import pytest

import wire
from chat import NOTICES, as_plain, assert_quiet, connect, expect, next_message, run, v1
from conftest import expected_shards

WORKERS = 4
MEMBERS = 40  # consecutive connections, dealt round-robin: ten on each of the 4 shards
PLAIN = [i for i in range(MEMBERS) if i % 5 == 0]  # 8 plain members, two on each shard
SENDERS = range(8)  # members 0-7: two on each shard; 0 and 5 are plain
TOTAL = 2000
PER_SENDER = TOTAL // len(SENDERS)
# A sender sends its next message only while fewer than this many of its own are still on
# their way back to it: every sender keeps some in flight all the time, so the 8 streams
# really are concurrent, at the server's pace rather than Python's.
WINDOW = 16
RECV_TIMEOUT = 10.0


def text(sender: int, seq: int) -> str:
    return f"m{sender}.{seq}"


def nick(member: int) -> str:
    return f"n{member}"


def parse(rendered: str) -> tuple[int, int]:
    """(sender, seq) of a message as a plain client receives it ("n3: m3.17" or "m0.4")."""
    body = rendered.rpartition(": ")[2]
    sender, seq = body[1:].split(".")
    return int(sender), int(seq)


class Member:
    """One member's view: the room's messages as a plain client would render them and, for a
    v1 member, their offsets."""

    def __init__(self, index: int, ws, welcome: dict | None) -> None:
        self.index, self.ws, self.welcome = index, ws, welcome
        self.plain = welcome is None
        self.rendered: list[str] = []
        self.offsets: list[int] = []
        # Own messages back so far (senders only), and a wake-up for the sending task.
        self.echoes = 0
        self.echoed = asyncio.Event()

    def __repr__(self) -> str:
        kind = "plain" if self.plain else f"v1 {self.welcome['id']}"
        return f"member {self.index} ({kind})"

    async def read_all(self) -> None:
        while len(self.rendered) < TOTAL:
            try:
                got = await asyncio.wait_for(self.ws.recv(), RECV_TIMEOUT)
            except TimeoutError:
                raise AssertionError(
                    f"{self} stalled after {len(self.rendered)} of {TOTAL} messages"
                ) from None
            if self.plain:
                assert isinstance(got, str), f"{self} got {got!r}"
                rendered = got
            else:
                env = json.loads(got)
                if env["type"] in NOTICES:
                    continue
                assert env["type"] == "message" and "history" not in env, f"{self}: {env}"
                rendered = as_plain(env)
                self.offsets.append(env["offset"])
            self.rendered.append(rendered)
            if parse(rendered)[0] == self.index:
                self.echoes += 1
                self.echoed.set()

    async def send_all(self) -> None:
        for seq in range(PER_SENDER):
            while seq - self.echoes >= WINDOW:
                self.echoed.clear()
                try:
                    await asyncio.wait_for(self.echoed.wait(), RECV_TIMEOUT)
                except TimeoutError:
                    raise AssertionError(f"{self}: {self.echoes} of {seq} sent came back") from None
            if self.plain:
                await self.ws.send(text(self.index, seq))
            else:
                await self.ws.send(json.dumps({"type": "message", "text": text(self.index, seq)}))
            await asyncio.sleep(0)  # let the other senders and the readers run


async def join_all(port: int, room: str) -> list[Member]:
    members: list[Member] = []
    try:
        for i in range(MEMBERS):
            if i in PLAIN:
                members.append(Member(i, await connect(port, room), None))
            else:
                ws = await v1(port, room, nick(i))
                members.append(Member(i, ws, await expect(ws, "welcome")))
    except BaseException:
        await asyncio.gather(*(m.ws.close() for m in members), return_exceptions=True)
        raise
    return members


def first_difference(a: list, b: list) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"at {i}: {x!r} != {y!r}"
    return f"lengths {len(a)} != {len(b)}"


def test_every_member_on_every_shard_sees_one_order(server):
    srv = server(workers=WORKERS)

    async def scenario() -> list[Member]:
        members = await join_all(srv.port, "order")
        try:
            # Everyone is in before anyone talks (a plain member is in from its 101; a v1 one
            # from its welcome); then 8 members send at once while all 40 read.
            readers = [asyncio.create_task(m.read_all()) for m in members]
            senders = [asyncio.create_task(members[s].send_all()) for s in SENDERS]
            await asyncio.gather(*readers, *senders)
            # Nothing trails the 2,000 (a duplicate, say).
            await asyncio.gather(*(assert_quiet(m.ws, notices=True) for m in members))
        finally:
            await asyncio.gather(*(m.ws.close() for m in members), return_exceptions=True)
        return members

    members = run(scenario(), timeout=50)

    v1_members = [m for m in members if not m.plain]
    shards = {m.welcome["id"].split(".")[0] for m in v1_members}
    assert len(shards) == expected_shards(WORKERS), f"members only on shards {shards}"
    for m in v1_members:
        # The room had no message yet in this epoch when they joined.
        assert m.welcome["offset"] == 0 and m.welcome["replay"] == 0, m.welcome
        assert m.welcome["epoch"] == v1_members[0].welcome["epoch"], (m, m.welcome)

    reference = members[0].rendered
    # Each sender's messages in the order it sent them, none lost, none twice.
    for s in SENDERS:
        seqs = [seq for sender, seq in map(parse, reference) if sender == s]
        assert seqs == list(range(PER_SENDER)), f"sender {s} as {members[0]} got them: {seqs}"
    # And everyone, plain or v1, on any shard, got exactly that sequence.
    for m in members[1:]:
        assert m.rendered == reference, (
            f"{m} and {members[0]} differ {first_difference(m.rendered, reference)}"
        )
    # v1 members: the room's offsets, contiguous from 1, the same message at each.
    for m in v1_members:
        assert m.offsets == list(range(1, TOTAL + 1)), (
            f"{m}: offsets not 1..{TOTAL} {first_difference(m.offsets, list(range(1, TOTAL + 1)))}"
        )


# ---------------------------------------------------------------------------------------------
# A last word


@pytest.mark.parametrize("dialect", ["plain", "v1"])
def test_a_message_just_before_the_close_frame_reaches_the_room(server, dialect):
    """A message and the close frame right behind it, in one TCP segment (so the server reads
    both at once): the message was sent while the sender was a member, so it is the room's
    like any other — numbered, delivered, kept. Ten senders in a row, on every shard."""
    srv = server(workers=WORKERS)
    path, extra = "/last", ()
    if dialect == "v1":
        extra = ("Sec-WebSocket-Protocol: shardcast.v1",)

    async def scenario():
        async with v1(srv.port, "last", "watch") as watcher:
            await expect(watcher, "welcome")
            for i in range(10):
                conn = wire.Conn.open(srv.port)
                try:
                    query = f"?nick=s{i}" if dialect == "v1" else ""
                    resp = conn.request(wire.upgrade_request(path + query, None, "13", *extra))
                    assert resp.status == 101, resp
                    body = f"last word {i}"
                    if dialect == "v1":
                        body = json.dumps({"type": "message", "text": body})
                        assert json.loads(wire.read_frame(conn)[2])["type"] == "welcome"
                    conn.send(wire.encode_frame(wire.OP_TEXT, body.encode())
                              + wire.encode_frame(wire.OP_CLOSE, struct.pack("!H", 1000)))
                    # The server answers the close (after the sender's own copy, if any).
                    await asyncio.to_thread(wire.read_close, conn)
                finally:
                    conn.close()
                m = await next_message(watcher)
                assert (m["text"], m["offset"]) == (f"last word {i}", i + 1), m

    run(scenario(), timeout=40)
