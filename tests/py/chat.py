"""Asyncio helpers around the `websockets` client.

Tests are plain functions that call `run(...)`, which keeps pytest-asyncio out of the
dependencies; every coroutine runs under an overall deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid

from websockets.asyncio.client import ClientConnection, connect as ws_connect
from websockets.exceptions import ConnectionClosed

RECV_TIMEOUT = 5.0


def run(coro, timeout: float = 20.0):
    """Runs `coro` to completion, failing with TimeoutError after `timeout` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def connect(port: int, room: str = "", **kwargs):
    """A client in `room` ("" is the lobby). No compression: the server offers none, and
    sizes and bytes on the wire should be exactly what the test sends."""
    kwargs.setdefault("open_timeout", 5)
    kwargs.setdefault("close_timeout", 2)
    kwargs.setdefault("max_size", None)
    return ws_connect(f"ws://127.0.0.1:{port}/{room}", compression=None, **kwargs)


async def recv(ws: ClientConnection, timeout: float = RECV_TIMEOUT):
    try:
        return await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        raise TimeoutError(f"no message within {timeout} s") from None


async def close_received(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, str | None]:
    """Reads (and drops) whatever is still coming until the connection closes; the code and
    reason of the server's close frame (None if it sent none)."""

    async def drain():
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass

    try:
        await asyncio.wait_for(drain(), timeout)
    except TimeoutError:
        return None, "no close within the timeout"
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code, rcvd.reason) if rcvd else (None, None)


async def assert_chat_works(port: int, room: str = "after") -> None:
    """A fresh pair of clients (on different shards) can still talk: the server survived."""
    async with connect(port, room) as a, connect(port, room) as b:
        token = f"still alive {uuid.uuid4()}"
        await a.send(token)
        assert await recv(a) == token
        assert await recv(b) == token


def assert_server_survives(port: int) -> None:
    run(assert_chat_works(port), timeout=15)


class FrameLog(logging.Handler):
    """Records the frames a `websockets` connection logs (it logs each one at DEBUG level as
    "< FRAME" received or "> FRAME" sent): pass `FrameLog().logger` as `logger=`.

    Lets a test see the control frames the library handles by itself (pings it answers)."""

    _count = itertools.count()

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        # A private logger, so that two connections or two tests never mix their records.
        self.logger = logging.getLogger(f"shardcast-tests.frames.{next(self._count)}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.logger.addHandler(self)
        self.frames: list[tuple[str, str, float]] = []  # (direction "<" or ">", opcode, time)

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg in ("< %s", "> %s") and record.args:
            frame = record.args[0]
            self.frames.append((record.msg[0], frame.opcode.name, time.monotonic()))

    def times(self, direction: str, opcode: str) -> list[float]:
        return [t for d, op, t in list(self.frames) if d == direction and op == opcode]


# ---------------------------------------------------------------------------------------------
# shardcast.v1 clients (docs/protocol.md)

V1 = ["shardcast.v1"]
# Presence envelopes: they come and go with members, outside the room's message order.
NOTICES = ("join", "leave", "online")


def v1(port: int, room: str, nick: str | None = None, *, query: str = "", **kwargs):
    """A `shardcast.v1` client in `room`, joining at the upgrade if `nick` is given; `query` is
    more of the query string (e.g. "since=EPOCH:OFFSET&history=5"), appended as is."""
    params = "&".join(p for p in (f"nick={nick}" if nick is not None else "", query) if p)
    return connect(port, room + (f"?{params}" if params else ""), subprotocols=V1, **kwargs)


async def envelope(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> dict:
    """The next message, which must be a JSON envelope."""
    message = await recv(ws, timeout)
    assert isinstance(message, str), f"expected a text envelope, got {message!r}"
    return json.loads(message)


async def expect(ws: ClientConnection, kind: str, timeout: float = RECV_TIMEOUT) -> dict:
    """The next envelope, which must be of type `kind`."""
    env = await envelope(ws, timeout)
    assert env["type"] == kind, f"expected {kind}, got {env}"
    return env


async def next_message(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> dict:
    """The next `message` envelope, skipping presence notices (join, leave, online); any other
    envelope (an error) fails."""
    while True:
        env = await envelope(ws, timeout)
        if env["type"] == "message":
            return env
        assert env["type"] in NOTICES, f"unexpected envelope {env}"


async def assert_quiet(ws: ClientConnection, seconds: float = 0.3, *, notices: bool = False):
    """Nothing arrives within `seconds` (presence notices aside, if `notices`)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            got = await asyncio.wait_for(ws.recv(), left)
        except TimeoutError:
            return
        if notices and isinstance(got, str) and json.loads(got)["type"] in NOTICES:
            continue
        raise AssertionError(f"expected nothing, got {got!r}")


def as_plain(env: dict) -> str:
    """A v1 `message` as a plain client receives it: `nick: text`, or the bare text of a plain
    sender (nick null). Lets plain and v1 members' sequences be compared."""
    return env["text"] if env["nick"] is None else f"{env['nick']}: {env['text']}"
