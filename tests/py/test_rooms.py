"""Room fan-out across shards: every member gets every message of its room, and only those."""

from __future__ import annotations

import asyncio

from chat import connect, run

ROOMS = ["red", "green", "blue"]
MEMBERS = 5
MESSAGES = 40
END = "end"


async def member(ws, room: str, me: int) -> list[tuple[str, int, int]]:
    """Sends MESSAGES tagged (room, sender, seq) then an end marker; returns every data message
    received until all members' end markers arrived (per-sender order puts each sender's data
    before its marker)."""

    async def send_all():
        for seq in range(MESSAGES):
            await ws.send(f"{room}:{me}:{seq}")
        await ws.send(f"{END}:{room}:{me}")

    sender = asyncio.create_task(send_all())
    got, ended = [], set()
    while len(ended) < MEMBERS:
        try:
            text = await asyncio.wait_for(ws.recv(), 10)
        except TimeoutError:
            raise AssertionError(
                f"{room}/{me} stalled after {len(got)} messages, end markers from {ended}"
            ) from None
        if text.startswith(END + ":"):
            _, r, who = text.split(":")
            assert r == room, f"{room}/{me} got another room's end marker: {text}"
            assert who not in ended, f"{room}/{me} got end marker twice: {text}"
            ended.add(who)
        else:
            r, who, seq = text.split(":")
            got.append((r, int(who), int(seq)))
    await sender
    return got


async def stays_quiet(ws, who) -> None:
    try:
        extra = await asyncio.wait_for(ws.recv(), 0.3)
    except TimeoutError:
        return
    raise AssertionError(f"{who} got a message after all end markers: {extra!r}")


async def scenario(port: int) -> None:
    # Connect room by room, one member at a time (red0, green0, blue0, red1, ...): the
    # server deals connections round-robin to its 4 shards, so each room's 5 members
    # land on all 4 shards.
    clients = {}
    try:
        for m in range(MEMBERS):
            for room in ROOMS:
                clients[room, m] = await connect(port, room)
        # Everyone is in before anyone talks; then all send and receive at once.
        keys = list(clients)
        received = await asyncio.gather(*(member(clients[key], *key) for key in keys))
        results = dict(zip(keys, received))
        # Nothing may trail the end markers (a late duplicate, say).
        await asyncio.gather(*(stays_quiet(ws, key) for key, ws in clients.items()))
    finally:
        await asyncio.gather(*(ws.close() for ws in clients.values()))

    for (room, m), got in results.items():
        assert all(r == room for r, _, _ in got), f"{room}/{m} got another room's messages"
        assert len(got) == MEMBERS * MESSAGES, f"{room}/{m} got {len(got)} messages"
        for sender in range(MEMBERS):
            seqs = [seq for _, who, seq in got if who == sender]
            # In order, none lost, none repeated.
            assert seqs == list(range(MESSAGES)), f"{room}/{m} from {sender}: {seqs}"


def test_three_rooms_of_five_across_shards(server):
    srv = server()
    run(scenario(srv.port), timeout=45)
