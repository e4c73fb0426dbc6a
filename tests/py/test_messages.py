"""Message content: opcodes and bytes survive the trip, fragments are joined, and the size
limit is exact."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed

from chat import assert_server_survives, connect, recv, run

TEXTS = ["plain ascii", "héllo wörld ✓ Ελληνικά 中文 😀🎉", ""]
BINARIES = [bytes(range(256)), b"\x00", b"", "😀".encode() + b"\xff\xfe"]


async def both_receive(sender, other, expected) -> None:
    """The sender (its own echo) and another member get `expected`, same type and bytes."""
    for ws in (sender, other):
        got = await recv(ws)
        assert type(got) is type(expected)
        assert got == expected


def test_text_and_binary_keep_their_opcode_and_bytes(server):
    async def scenario(port):
        # Two consecutive connections: two different shards.
        async with connect(port, "ops") as a, connect(port, "ops") as b:
            for msg in TEXTS + BINARIES:
                await a.send(msg)
                await both_receive(a, b, msg)
            # Several in flight at once keep their order and types.
            mixed = [m for pair in zip(TEXTS, BINARIES) for m in pair]
            for msg in mixed:
                await b.send(msg)
            for ws in (a, b):
                assert [await recv(ws) for _ in mixed] == mixed

    run(scenario(server().port))


def test_fragmented_messages_arrive_whole(server):
    async def scenario(port):
        async with connect(port, "frag") as a, connect(port, "frag") as b:
            # websockets sends an iterable as one message in continuation frames.
            await a.send(["frag", "ment", "ed ✓ ", "😀"])
            await both_receive(a, b, "fragmented ✓ 😀")
            await a.send([bytes(range(100)), bytes(range(100, 256))])
            await both_receive(a, b, bytes(range(256)))

    run(scenario(server().port))


async def expect_closed_with(ws, code: int) -> None:
    """The next thing `ws` gets is the server's close frame with `code`."""
    try:
        got = await recv(ws)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "closed without a close frame"
        assert closed.rcvd.code == code
        return
    pytest.fail(f"expected close code {code}, got a {len(got)}-byte message instead")


async def limit_scenario(port: int, limit: int) -> None:
    async with connect(port, "big") as a, connect(port, "big") as b:
        for msg in ("x" * limit, bytes(i % 256 for i in range(limit))):
            await a.send(msg)
            await both_receive(a, b, msg)
        # One byte over: the sender is closed with 1009; the bystander sees nothing of it.
        await a.send(b"y" * (limit + 1))
        await expect_closed_with(a, 1009)
        with pytest.raises(TimeoutError):
            await recv(b, timeout=0.3)
        # The limit is on the message, not the frame: fragments adding up to limit + 1 too.
        async with connect(port, "big") as c:
            await c.send(["z" * (limit // 2), "z" * (limit - limit // 2 + 1)])
            await expect_closed_with(c, 1009)
        # The bystander is still a working member.
        await b.send("still here")
        assert await recv(b) == "still here"


@pytest.mark.parametrize(
    "extra_args, limit",
    [((), 65536), (("--max-message", "1000"), 1000)],
    ids=["default-64KiB", "max-message-1000"],
)
def test_message_size_limit_is_exact(server, extra_args, limit):
    srv = server(*extra_args)
    run(limit_scenario(srv.port, limit))
    assert_server_survives(srv.port)
