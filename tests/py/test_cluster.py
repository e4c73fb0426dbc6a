"""Multi-node rooms over a real Redis (docs/cluster.md): each test starts its own redis-server
on a free loopback port and stops it by PID, and runs several shardcast nodes against it.

Checked with Python `websockets` clients and with the Rust load generator: exact delivery in
per-sender order across nodes, local delivery through a Redis outage and recovery without
restarting nodes, a SIGKILLed node leaving the counts, and presence across nodes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time

import wire
from chat import connect, recv, run
from conftest import BIN
from test_load_generator import LOAD


V1 = ["shardcast.v1"]
# Nodes lost from the counts: 3 missed 2 s heartbeats (6 s), plus slack for a loaded machine.
NODE_LOSS_BOUND = 15.0
# Cross-node delivery resumes within the reconnect backoff cap (2 s) after Redis is back.
RESUME_BOUND = 10.0


def start_nodes(server, redis, count: int, *extra: str) -> list:
    nodes = [
        server("--redis", redis.url, "--node-id", f"n{i + 1}", *extra, workers=2)
        for i in range(count)
    ]
    wire.wait_for(
        lambda: all(n.metrics().get("shardcast_cluster_nodes") == count - 1 for n in nodes),
        15,
        f"all {count} nodes see each other",
    )
    return nodes


def wait_subscribed(redis, room: str, nodes: int) -> None:
    """Until `nodes` nodes subscribe to the room's channel (asked of Redis itself)."""
    channel = f"shardcast:room:{room}"
    wire.wait_for(
        lambda: redis.command("PUBSUB", "NUMSUB", channel) == [channel, str(nodes)],
        10,
        f"{nodes} nodes subscribed to {channel}",
    )


async def welcome_until_online(ws, online: int, timeout: float = 5.0) -> dict:
    """The welcome, then notices until `online` is reached. Across nodes counts are eventually
    consistent (docs/protocol.md): a welcome given one Redis round trip after a join on another
    node may not count it yet, and the `join` (or `online`) that follows corrects it."""
    welcome = await expect(ws, "welcome", timeout)
    count = welcome["online"]
    deadline = time.monotonic() + timeout
    while count != online:
        left = deadline - time.monotonic()
        assert left > 0, f"online stayed {count}, expected {online}"
        env = json.loads(await recv(ws, left))
        assert env["type"] in ("join", "online"), env
        count = env["online"]
    return welcome


async def assert_nothing_more(ws, seconds: float = 0.5, ignore: str = "probe") -> None:
    """No further message but late ones starting with `ignore` (a duplicate would show up)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            extra = await recv(ws, left)
        except TimeoutError:
            return
        assert extra.startswith(ignore), f"unexpected extra message {extra!r}"


async def expect(ws, kind: str, timeout: float = 5.0) -> dict:
    while True:
        env = json.loads(await recv(ws, timeout))
        if env["type"] == kind:
            return env


def test_three_nodes_three_rooms_exact_delivery_in_sender_order(server, redis):
    nodes = start_nodes(server, redis, 3)
    rooms, per_node, messages = ["red", "green", "blue"], 2, 40

    async def main():
        members = {}  # (room, node, k) -> connection
        for room in rooms:
            for n, node in enumerate(nodes):
                for k in range(per_node):
                    members[(room, n, k)] = await connect(node.port, room)
        for room in rooms:
            wait_subscribed(redis, room, len(nodes))
        expected = {room: per_node * len(nodes) for room in rooms}

        async def member(key, ws):
            room = key[0]
            me = f"{key[1]}.{key[2]}"

            async def send_all():
                for seq in range(messages):
                    await ws.send(f"{room}:{me}:{seq}")
                await ws.send(f"end:{room}:{me}")

            sender = asyncio.create_task(send_all())
            next_seq, ended = {}, set()
            while len(ended) < expected[room]:
                text = await recv(ws, 10)
                end = text.startswith("end:")
                r, who, *seq = text.split(":")[1:] if end else text.split(":")
                assert r == room, f"{room}/{me} got another room's message {text!r}"
                if end:
                    assert who not in ended, f"duplicate end marker {text!r}"
                    assert next_seq.get(who, 0) == messages, f"{who} ended early at {next_seq}"
                    ended.add(who)
                    continue
                want = next_seq.get(who, 0)
                # In order, none lost, none twice: each sender's numbers arrive 0, 1, 2, ...
                assert int(seq[0]) == want, f"{room}/{me}: from {who} got {seq[0]}, want {want}"
                next_seq[who] = want + 1
            await sender
            return sum(next_seq.values())

        try:
            counts = await asyncio.gather(*(member(k, ws) for k, ws in members.items()))
        finally:
            for ws in members.values():
                await ws.close()
        assert counts == [messages * per_node * len(nodes)] * len(members)

    run(main(), timeout=60)
    for node in nodes:
        m = node.metrics()
        assert m["shardcast_cluster_publish_dropped_total"] == 0
        # Pipelining: fewer round trips than envelopes published.
        assert m["shardcast_cluster_publish_round_trips_total"] < m["shardcast_cluster_published_total"]


def test_load_generator_across_nodes_sees_no_loss(server, redis):
    """The Rust client: shardcast-load spreads its connections over the nodes' URLs."""
    assert LOAD.is_file(), f"{LOAD} not found: run `cargo build --release --workspace`"
    nodes = start_nodes(server, redis, 3)
    # A member on each node first, so that every node subscribes before traffic starts.
    keepers = []

    async def hold():
        for node in nodes:
            keepers.append(await connect(node.port, "load"))

    loop = asyncio.new_event_loop()
    loop.run_until_complete(hold())
    try:
        wait_subscribed(redis, "load", 3)
        args = [str(LOAD), "fanout", "--subscribers", "60", "--publishers", "3", "--rate", "300",
                "--duration", "2", "--warmup", "0.5", "--json", "--quiet"]  # fmt: skip
        for node in nodes:
            args += ["--url", node.url("load")]
        tool = subprocess.run(args, capture_output=True, timeout=120)
        assert tool.returncode == 0, tool.stderr.decode(errors="replace")
        report = json.loads(tool.stdout)
        assert report["sent"] > 0
        assert report["loss"] == 0 and report["duplicates"] == 0 and report["reordered"] == 0
        assert report["delivered"] == report["expected_deliveries"] == report["sent"] * 63
    finally:
        for ws in keepers:
            loop.run_until_complete(ws.close())
        loop.close()


def test_redis_outage_keeps_local_rooms_and_recovers_without_restarts(server, redis):
    # History off: each node delivers its own members' messages itself, so local rooms go on
    # through the outage. (With history on, Redis orders every message and publishes are
    # refused while it is away: tests/py/test_cluster_failures.py.)
    a, b = start_nodes(server, redis, 2, "--history-size", "0")

    async def main():
        a1, a2 = await connect(a.port, "out"), await connect(a.port, "out")
        b1, b2 = await connect(b.port, "out"), await connect(b.port, "out")
        wait_subscribed(redis, "out", 2)
        await a1.send("before")
        for ws in (a1, a2, b1, b2):
            assert await recv(ws) == "before"

        redis.kill()
        wire.wait_for(lambda: a.metrics()["shardcast_cluster_up"] == 0, 10, "node a sees Redis down")
        # Local delivery goes on at once on each node; nothing crosses.
        for seq in range(20):
            await a1.send(f"a-local-{seq}")
            await b1.send(f"b-local-{seq}")
            for ws in (a1, a2):
                assert await recv(ws) == f"a-local-{seq}"
            for ws in (b1, b2):
                assert await recv(ws) == f"b-local-{seq}"

        redis.start()
        back = time.monotonic()
        # Probes until one crosses; every probe is delivered locally regardless.
        crossed = None
        seq = 0
        while crossed is None:
            assert time.monotonic() - back < RESUME_BOUND, "cross-node delivery did not resume"
            seq += 1
            await a1.send(f"probe-{seq}")
            assert await recv(a1) == f"probe-{seq}"
            try:
                got = await recv(b1, 0.2)
            except TimeoutError:
                continue
            crossed = got
        resumed_after = time.monotonic() - back
        # From then on, everything crosses, exactly once.
        for n in range(10):
            await a1.send(f"after-{n}")
            await b2.send(f"b-after-{n}")
        # b1 gets all twenty (a late probe that crossed after the first may come between).
        got_b = []
        while len(got_b) < 20:
            message = await recv(b1)
            if not message.startswith("probe"):
                got_b.append(message)
        assert sorted(got_b) == sorted([f"after-{n}" for n in range(10)] +
                                       [f"b-after-{n}" for n in range(10)])
        await assert_nothing_more(b1)
        for ws in (a1, a2, b1, b2):
            await ws.close()
        return resumed_after

    resumed_after = run(main(), timeout=60)
    assert resumed_after < RESUME_BOUND
    for node in (a, b):
        wire.wait_for(lambda: node.metrics()["shardcast_cluster_up"] == 1, 10, "cluster up again")
        m = node.metrics()
        assert m["shardcast_cluster_outages_total"] == 1
        assert m["shardcast_cluster_down_seconds_total"] > 0
        assert "cross-node delivery restored after" in node.log()


def test_a_killed_node_leaves_the_counts_and_the_others_chat_on(server, redis):
    a, b, c = start_nodes(server, redis, 3)

    async def main():
        watcher = await connect(a.port, "kill?nick=watch", subprotocols=V1)
        assert (await expect(watcher, "welcome"))["online"] == 1
        on_b = await connect(b.port, "kill?nick=bee", subprotocols=V1)
        await welcome_until_online(on_b, 2)
        assert (await expect(watcher, "join"))["nick"] == "bee"
        doomed = [await connect(c.port, "kill") for _ in range(3)]
        for n in range(3, 6):
            assert (await expect(watcher, "join"))["online"] == n
        wait_subscribed(redis, "kill", 3)

        c.expected_exit = True
        c.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        # The others chat on meanwhile.
        await on_b.send(json.dumps({"type": "message", "text": "still here"}))
        msg = await expect(watcher, "message")
        assert (msg["nick"], msg["text"]) == ("bee", "still here")
        online = await expect(watcher, "online", timeout=NODE_LOSS_BOUND)
        assert online["online"] == 2
        assert time.monotonic() - killed < NODE_LOSS_BOUND
        # Node b drops node c on its own clock (within 8 s of c's last heartbeat).
        async with connect(b.port, "kill?nick=late", subprotocols=V1) as late:
            await welcome_until_online(late, 3, timeout=NODE_LOSS_BOUND)
        for ws in (watcher, on_b, *doomed):
            await ws.close()

    run(main(), timeout=60)


def test_presence_spans_nodes(server, redis):
    a, b = start_nodes(server, redis, 2)

    async def main():
        ann = await connect(a.port, "p?nick=ann", subprotocols=V1)
        wa = await expect(ann, "welcome")
        assert wa["id"].startswith("n1.")
        bob = await connect(b.port, "p?nick=bob", subprotocols=V1)
        wb = await welcome_until_online(bob, 2)
        assert wb["id"].startswith("n2.")
        assert await expect(ann, "join") == {"type": "join", "id": wb["id"], "nick": "bob",
                                             "online": 2}
        plain = await connect(a.port, "p")
        assert (await expect(bob, "join"))["nick"] is None
        assert (await expect(ann, "join"))["online"] == 3
        wait_subscribed(redis, "p", 2)
        await bob.send(json.dumps({"type": "message", "text": "hi across"}))
        assert await recv(plain) == "bob: hi across"
        m = await expect(ann, "message")
        assert (m["id"], m["nick"], m["text"]) == (wb["id"], "bob", "hi across")
        await bob.close()
        assert await expect(ann, "leave") == {"type": "leave", "id": wb["id"], "nick": "bob",
                                              "online": 2}
        await ann.close()
        await plain.close()
        # The last local member gone, each node unsubscribes from the room's channel.
        wait_subscribed(redis, "p", 0)

    run(main(), timeout=30)
