"""Asyncio helpers around the `websockets` client.

Tests are plain functions that call `run(...)`, which keeps pytest-asyncio out of the
dependencies; every coroutine runs under an overall deadline.
"""

from __future__ import annotations

import asyncio
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
