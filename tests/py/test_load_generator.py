"""The load generator's figures agree with an independent client (Python `websockets`).

While `shardcast-load fanout` drives a room, a few `websockets` subscribers in the same room
count the messages carrying the load generator's token. Every member receives every message,
so each independent count must match what the tool says one recipient got (its deliveries
divided by its recipients) within 10%, and the tool must report no loss on a server that
drops nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import websockets

from conftest import REPO

LOAD = Path(os.environ.get("SHARDCAST_LOAD", REPO / "target/release/shardcast-load"))
TOKEN = "SCL1:"


async def count_tokens(url: str, ready: asyncio.Event, stop: asyncio.Event, counts: list, i: int):
    async with websockets.connect(url, max_size=None) as ws:
        ready.set()
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                continue
            if isinstance(message, str) and TOKEN in message:
                counts[i] += 1


def test_deliveries_agree_with_python_subscribers(server):
    assert LOAD.is_file(), f"{LOAD} not found: run `cargo build --release --workspace`"
    srv = server()
    url = srv.url("agree")
    subscribers, publishers, rate, seconds = 40, 2, 200, 3

    async def scenario():
        counts = [0, 0, 0]
        stop = asyncio.Event()
        readies = [asyncio.Event() for _ in counts]
        tasks = [
            asyncio.create_task(count_tokens(url, readies[i], stop, counts, i))
            for i in range(len(counts))
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 10)
        tool = await asyncio.create_subprocess_exec(
            str(LOAD), "fanout", "--url", url, "--subscribers", str(subscribers),
            "--publishers", str(publishers), "--rate", str(rate), "--duration", str(seconds),
            "--warmup", "0", "--json", "--quiet",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(tool.communicate(), 60)
        assert tool.returncode == 0, err.decode(errors="replace")
        # Messages still in flight to the Python clients arrive within moments.
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        return json.loads(out), counts

    report, counts = asyncio.run(scenario())
    recipients = subscribers + publishers
    assert report["loss"] == 0 and report["duplicates"] == 0 and report["reordered"] == 0
    assert report["delivered"] == report["expected_deliveries"] == report["sent"] * recipients
    per_recipient = report["delivered"] / recipients
    for count in counts:
        assert abs(count - per_recipient) <= 0.10 * per_recipient, (count, per_recipient)
    # And both agree with what was sent (the independent clients missed nothing either).
    assert all(count == report["sent"] for count in counts), (counts, report["sent"])
