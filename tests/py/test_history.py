"""Room history (issue 11, docs/protocol.md): `?history=N`, the limits on it, history turned
off, and every case where a resume cannot be vouched for — `"recovered": false`, with the
room's current epoch and whatever history the client asked for instead.

Exact resumes (`"recovered": true`) are in test_resume.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest

import wire
from chat import assert_quiet, connect, envelope, expect, next_message, recv, run, v1

RECV_TIMEOUT = 10.0


async def publish(port: int, room: str, messages: list[str | bytes]) -> None:
    """A plain member sends each message and waits for it back before the next, so the room
    has them all, in this order, when this returns."""
    async with connect(port, room) as ws:
        for m in messages:
            await ws.send(m)
            while (got := await recv(ws, RECV_TIMEOUT)) != m:
                pass


def texts(count: int, start: int = 0) -> list[str]:
    return [f"msg {i}" for i in range(start, start + count)]


async def current(port: int, room: str) -> dict:
    """The welcome a fresh v1 member of `room` gets (epoch and latest offset)."""
    async with v1(port, room, "peek") as ws:
        return await expect(ws, "welcome")


async def resume(port: int, room: str, since: str, history: int | None = None):
    """Joins with `since` (and `history`); returns the welcome and the replayed messages, each
    checked to be marked as history."""
    query = f"since={since}" + (f"&history={history}" if history is not None else "")
    async with v1(port, room, "back", query=query) as ws:
        welcome = await expect(ws, "welcome")
        replayed = [await next_message(ws) for _ in range(welcome.get("replay", 0))]
        assert all(m.get("history") is True for m in replayed), replayed
        await assert_quiet(ws, notices=True)
    return welcome, replayed


def other_epoch(epoch: str) -> str:
    """A well-formed epoch that is not `epoch` (its last hex digit changed)."""
    assert len(epoch) == 16 and int(epoch, 16) >= 0, epoch
    return epoch[:-1] + format((int(epoch[-1], 16) + 1) % 16, "x")


def offsets_and_texts(messages: list[dict]) -> list[tuple[int, str]]:
    return [(m["offset"], m["text"]) for m in messages]


# ---------------------------------------------------------------------------------------------
# Not recovered


def test_a_wrong_epoch_is_not_recovered(server):
    srv = server()

    async def scenario():
        sent = texts(5)
        await publish(srv.port, "ep", sent)
        now = await current(srv.port, "ep")
        assert now["offset"] == 5, now
        wrong = other_epoch(now["epoch"])
        w, replayed = await resume(srv.port, "ep", f"{wrong}:3")
        assert (w["recovered"], w["replay"], w["epoch"], w["offset"]) == (
            False, 0, now["epoch"], 5), w  # fmt: skip
        # With `history`, the client gets something to show.
        w, replayed = await resume(srv.port, "ep", f"{wrong}:3", history=2)
        assert (w["recovered"], w["replay"]) == (False, 2), w
        assert offsets_and_texts(replayed) == [(4, sent[3]), (5, sent[4])]

    run(scenario())


def test_an_offset_older_than_the_history_is_not_recovered(server):
    srv = server("--history-size", "10")

    async def scenario():
        sent = texts(30)
        await publish(srv.port, "old", sent)
        epoch = (await current(srv.port, "old"))["epoch"]
        w, _ = await resume(srv.port, "old", f"{epoch}:1")
        assert (w["recovered"], w["replay"], w["epoch"]) == (False, 0, epoch), w
        w, replayed = await resume(srv.port, "old", f"{epoch}:1", history=10)
        assert (w["recovered"], w["replay"]) == (False, 10), w
        assert offsets_and_texts(replayed) == list(zip(range(21, 31), sent[20:]))

    run(scenario())


def test_a_future_offset_is_not_recovered(server):
    srv = server()

    async def scenario():
        await publish(srv.port, "future", texts(5))
        epoch = (await current(srv.port, "future"))["epoch"]
        for offset in (6, 1000, 2**64 - 1):  # 6: one the room has not had yet
            w, _ = await resume(srv.port, "future", f"{epoch}:{offset}")
            assert (w["recovered"], w["replay"], w["offset"]) == (False, 0, 5), (offset, w)

    run(scenario())


def test_a_restarted_server_has_a_new_epoch(server):
    """The history lives in the server process: a new process on the same port cannot vouch
    for the old one's offsets."""
    srv = server()

    async def before():
        await publish(srv.port, "restart", texts(5))
        return await current(srv.port, "restart")

    old = run(before())
    srv.kill()
    again = server(port=srv.port)
    assert again.port == srv.port

    async def after():
        w, _ = await resume(again.port, "restart", f"{old['epoch']}:{old['offset']}")
        assert w["recovered"] is False, w
        assert w["epoch"] != old["epoch"] and w["offset"] == 0, (old, w)

    run(after())


def test_an_expired_history_has_a_new_epoch(server):
    """--history-ttl 1: a room nobody is in forgets its history after a second."""
    srv = server("--history-ttl", "1")

    async def scenario():
        await publish(srv.port, "ttl", texts(3))
        old = await current(srv.port, "ttl")
        assert old["offset"] == 3, old
        await asyncio.sleep(3.0)  # the TTL (counted from the last leave), and then some
        now = await current(srv.port, "ttl")
        assert now["epoch"] != old["epoch"] and now["offset"] == 0, (old, now)
        w, _ = await resume(srv.port, "ttl", f"{old['epoch']}:3", history=5)
        assert (w["recovered"], w["replay"], w["epoch"]) == (False, 0, now["epoch"]), w

    run(scenario())


# ---------------------------------------------------------------------------------------------
# ?history=N and its limits


def test_history_over_the_limit_is_capped_with_an_error(server):
    srv = server("--history-size", "10")

    async def scenario():
        sent = texts(15)
        await publish(srv.port, "cap", sent)
        async with v1(srv.port, "cap", "ann", query="history=50") as ws:
            # The error comes before the replayed messages (before or after the welcome).
            first = await envelope(ws)
            if first["type"] == "error":
                error, welcome = first, await expect(ws, "welcome")
            else:
                assert first["type"] == "welcome", first
                welcome, error = first, await expect(ws, "error")
            assert error["code"] == "history_limit" and error["text"], error
            assert welcome["replay"] == 10 and "recovered" not in welcome, welcome
            replayed = [await next_message(ws) for _ in range(10)]
            assert all(m["history"] is True for m in replayed)
            assert offsets_and_texts(replayed) == list(zip(range(6, 16), sent[5:]))
            await assert_quiet(ws, notices=True)
        # At the limit or under it: no error, the last N.
        for n in (10, 3):
            async with v1(srv.port, "cap", "ann", query=f"history={n}") as ws:
                welcome = await expect(ws, "welcome")
                assert (welcome["replay"], welcome["offset"]) == (n, 15), welcome
                replayed = [await next_message(ws) for _ in range(n)]
                assert offsets_and_texts(replayed) == list(zip(range(16 - n, 16), sent[-n:]))
                await assert_quiet(ws, notices=True)

    run(scenario())


def test_history_for_a_plain_client_is_the_last_frames_byte_exact(server):
    srv = server()
    # As a plain member received them: a v1 sender's text as `nick: text`, bytes as bytes.
    frames = ["one", b"\x00\x01two", "ann: three \u2713", "four"]

    async def scenario():
        async with v1(srv.port, "raw", "ann") as ann:
            await expect(ann, "welcome")
            await publish(srv.port, "raw", frames[:2])
            await ann.send(json.dumps({"type": "message", "text": "three \u2713"}))
            await next_message(ann)
            await publish(srv.port, "raw", frames[3:])
        for n in (3, 100):
            expected = frames[-n:]
            async with connect(srv.port, f"raw?history={n}") as ws:
                got = [await recv(ws) for _ in expected]
                assert got == expected and [type(g) for g in got] == [type(e) for e in expected]
                await assert_quiet(ws)  # nothing more, and nothing marks them as history
                await ws.send(f"live {n}")
                assert await recv(ws) == f"live {n}"
            frames.append(f"live {n}")

    run(scenario())


def test_history_off(server):
    """--history-size 0: no epoch or offsets anywhere, nothing replayed, every resume
    unrecovered."""
    srv = server("--history-size", "0")

    async def scenario():
        async with v1(srv.port, "off", "ann") as ann:
            w = await expect(ann, "welcome")
            assert not {"epoch", "offset", "recovered"} & w.keys(), w
            assert w.get("replay", 0) == 0, w
            await publish(srv.port, "off", texts(3))
            for _ in range(3):
                assert "offset" not in await next_message(ann)
        w, replayed = await resume(srv.port, "off", "0123456789abcdef:2", history=5)
        assert w["recovered"] is False and not replayed, w
        assert not {"epoch", "offset"} & w.keys(), w
        async with connect(srv.port, "off?history=5") as plain:
            await assert_quiet(plain)

    run(scenario())


# ---------------------------------------------------------------------------------------------
# Malformed values: refused at the upgrade

MALFORMED = [
    "since=0123456789abcdef",  # no offset
    "since=0123456789abcdef:",
    "since=0123456789abcdef:x",
    "since=0123456789abcdef:-1",
    "since=0123456789abcdef:1.5",
    "since=0123456789abcdef:18446744073709551616",  # 2^64: not a u64
    "since=:5",
    "history=x",
    "history=-1",
    "history=2.5",
]


@pytest.mark.parametrize("query", MALFORMED)
def test_a_malformed_since_or_history_is_refused_with_400(server, query):
    srv = server()
    protocol = "Sec-WebSocket-Protocol: shardcast.v1"
    with wire.Conn.open(srv.port) as conn:
        resp = conn.request(wire.upgrade_request(f"/bad?nick=ann&{query}", None, "13", protocol))
        assert resp.status == 400, resp
    # The same upgrade with well-formed values is accepted.
    with wire.Conn.open(srv.port) as conn:
        good = "/bad?nick=ann&since=0123456789abcdef:5&history=3"
        assert conn.request(wire.upgrade_request(good, None, "13", protocol)).status == 101

