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


def test_idle_reports_memory_in_the_server_and_in_the_kernel(server):
    """`idle` gives the server's RSS per connection and, beside it, the kernel's TCP figures
    (/proc/net/sockstat and the slab), before connecting and with the connections open.

    The kernel's figures are the whole machine's, which other processes move too, so only what
    this run guarantees is checked: while the connections are open, both ends of each (the load
    generator's socket and the server's, all on loopback) are sockets in use.
    """
    assert LOAD.is_file(), f"{LOAD} not found: run `cargo build --release --workspace`"
    srv = server()
    connections = 300
    tool = subprocess.run(
        [str(LOAD), "idle", "--url", srv.url("idle"), "--connections", str(connections),
         "--hold", "1", "--server-pid", str(srv.pid), "--json", "--quiet"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert tool.returncode == 0, tool.stderr.decode(errors="replace")
    report = json.loads(tool.stdout)
    assert report["opened"] == connections
    assert report["server"]["pid"] == srv.pid
    assert report["server"]["rss_after"] > 0
    kernel = report["kernel"]
    assert kernel["page_size"] > 0 and kernel["page_size"] % 1024 == 0
    for moment in ("before", "after"):
        sample = kernel[moment]
        for field in ("inuse", "alloc", "mem_pages", "slab_bytes"):
            assert isinstance(sample[field], int) and sample[field] >= 0, (moment, field)
    assert kernel["after"]["inuse"] >= 2 * connections
    assert kernel["after"]["slab_bytes"] > 0
    # The per-connection figures are the differences they say they are.
    opened, page = report["opened"], kernel["page_size"]
    mem = (kernel["after"]["mem_pages"] - kernel["before"]["mem_pages"]) * page / opened
    assert abs(kernel["tcp_mem_per_connection"] - mem) < 1e-6
    sockets = (kernel["after"]["inuse"] - kernel["before"]["inuse"]) / opened
    assert abs(kernel["sockets_per_connection"] - sockets) < 1e-6
    slab = (kernel["after"]["slab_bytes"] - kernel["before"]["slab_bytes"]) / opened
    assert abs(kernel["slab_per_connection"] - slab) < 1e-6
