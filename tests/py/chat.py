"""Asyncio helpers around the `websockets` client.

Tests are plain functions that call `run(...)`, which keeps pytest-asyncio out of the
dependencies; every coroutine runs under an overall deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid

from websockets.asyncio.client import ClientConnection, connect as ws_connect

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
