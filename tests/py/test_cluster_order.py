"""One order, history and resume across nodes, with Redis as every room's sequencer (issue 14,
docs/cluster.md "One order across nodes"). Each test starts its own redis-server and stops it
by PID (the `redis` fixture), and several shardcast nodes against it, history on.

Asserted is only what the product guarantees: every member of a room, on any node, plain or
v1, receives the room's messages in one order; v1 offsets are contiguous; a member that drops
from one node and resumes on another with `since` gets exactly what it missed, then live
messages; a resume it cannot vouch for says `recovered: false`.
"""

from __future__ import annotations

import asyncio
import json

from websockets.exceptions import ConnectionClosed

import wire
from chat import as_plain, connect, envelope, expect, next_message, run, v1
from test_cluster import start_nodes, wait_subscribed
from test_resume import Log

RECV_TIMEOUT = 10.0


async def until_online(ws, online: int) -> None:
    """Reads presence notices until the room's count reaches `online` (every member, on every
    node, was admitted: a node counts only members it admitted)."""
    count = -1
    while count != online:
        env = await envelope(ws, RECV_TIMEOUT)
        assert env["type"] in ("welcome", "join", "leave", "online"), env
        count = env["online"]


# ---------------------------------------------------------------------------------------------
# One order

PER_SENDER = 100


def test_every_member_on_every_node_sees_one_order(server, redis):
    nodes = start_nodes(server, redis, 3)
    room = "order"

    async def main():
        # On each node: a plain and a v1 sender, a plain and a v1 listener (all members).
        clients = []  # (name, ws, v1?, sender?)
        for n, node in enumerate(nodes):
            clients.append((f"p{n}", await connect(node.port, room), False, True))
            clients.append((f"v{n}", await v1(node.port, room, f"v{n}"), True, True))
            clients.append((f"lp{n}", await connect(node.port, room), False, False))
            clients.append((f"lv{n}", await v1(node.port, room, f"lv{n}"), True, False))
        members = len(clients)
        for _, ws, is_v1, _ in clients:
            if is_v1:
                await until_online(ws, members)
        wait_subscribed(redis, room, len(nodes))

        async def send_all(name, ws, is_v1):
            for i in range(PER_SENDER):
                text = f"{name}-{i}"
                await ws.send(json.dumps({"type": "message", "text": text}) if is_v1 else text)
                if i % 10 == 9:
                    await asyncio.sleep(0.01)

        total = PER_SENDER * sum(1 for c in clients if c[3])

        async def collect(ws, is_v1):
            got, offsets = [], []
            while len(got) < total:
                if is_v1:
                    env = await next_message(ws, RECV_TIMEOUT)
                    got.append(as_plain(env))
                    offsets.append(env["offset"])
                else:
                    got.append(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
            return got, offsets

        collecting = [asyncio.create_task(collect(ws, is_v1)) for _, ws, is_v1, _ in clients]
        await asyncio.gather(*(send_all(name, ws, is_v1)
                               for name, ws, is_v1, sends in clients if sends))
        results = await asyncio.gather(*collecting)
        for _, ws, _, _ in clients:
            await ws.close()
        return clients, results, total

    clients, results, total = run(main(), timeout=90)
    reference, _ = results[0]
    assert len(reference) == total and len(set(reference)) == total, "each message once"
    for (name, _, is_v1, _), (got, offsets) in zip(clients, results):
        assert got == reference, f"{name} saw another order"
        if is_v1:
            first = offsets[0]
            assert offsets == list(range(first, first + total)), f"{name}: offsets not contiguous"
    # Per-sender order holds within the one order.
    for name, _, is_v1, sends in clients:
        if sends:
            mine = [m for m in reference if m.split(": ")[-1].startswith(f"{name}-")]
            assert [m.split(": ")[-1] for m in mine] == [f"{name}-{i}" for i in range(PER_SENDER)]


# ---------------------------------------------------------------------------------------------
# Resume on another node

SENDERS = 4
RATE = 200.0  # messages per second, all senders together
ROUNDS = 6
GAP = 0.6  # seconds between the drop and the resume
HISTORY = 2048


async def sender(port: int, room: str, i: int, stop: asyncio.Event) -> int:
    """Sends its share of RATE until `stop`, draining the room meanwhile; returns how many it
    sent once all of them came back (so the room surely has them before it closes)."""
    ws = await v1(port, room, f"s{i}")
    await expect(ws, "welcome")
    mine = f"m{i}."
    echoed = [0]

    async def drain():
        async for got in ws:
            env = json.loads(got)
            if env["type"] == "message" and env["text"].startswith(mine):
                echoed[0] += 1

    draining = asyncio.create_task(drain())
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        start = loop.time() + i / RATE
        while not stop.is_set():
            await ws.send(json.dumps({"type": "message", "text": f"{mine}{sent}"}))
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * SENDERS / RATE - loop.time()))
        deadline = loop.time() + RECV_TIMEOUT
        while echoed[0] < sent and not draining.done() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert echoed[0] == sent, f"sender {i}: {echoed[0]} of its {sent} messages came back"
    finally:
        draining.cancel()
        await ws.close()
    return sent


def test_a_member_dropped_from_one_node_resumes_exactly_on_another(server, redis):
    nodes = start_nodes(server, redis, 3, "--history-size", str(HISTORY))
    room = "travel"

    async def main():
        loop = asyncio.get_running_loop()
        reference_ws = await v1(nodes[2].port, room, "ref")
        reference = Log("reference", await expect(reference_ws, "welcome"))
        stop = asyncio.Event()
        # Two senders on each of the first two nodes.
        senders = [asyncio.create_task(sender(nodes[i % 2].port, room, i, stop))
                   for i in range(SENDERS)]

        async def follow():
            while True:
                reference.add(await next_message(reference_ws, RECV_TIMEOUT), replayed=False)

        following = asyncio.create_task(follow())
        ws = None
        stage = "the first join"
        try:
            ws = await v1(nodes[0].port, room, "res")
            resumer = Log("resumer", await expect(ws, "welcome"))
            assert resumer.epoch == reference.epoch, "one epoch on every node"
            await resumer.read_live(ws, loop.time() + 0.3, 10)
            for n in range(ROUNDS):
                # From node n % 3 to the next one.
                there = nodes[(n + 1) % len(nodes)]
                stage = f"round {n}, the drop and resume after offset {resumer.last}"
                ws.transport.abort()  # no close frame: the connection is simply gone
                await asyncio.sleep(GAP)
                ws = await v1(there.port, room, f"res{n}",
                              query=f"since={resumer.epoch}:{resumer.last}")
                welcome = await expect(ws, "welcome")
                where = f"round {n}: since {resumer.last}, {welcome}"
                assert welcome["recovered"] is True, where
                assert welcome["epoch"] == resumer.epoch, where
                assert welcome["replay"] == welcome["offset"] - resumer.last, where
                resumer.replayed.append(welcome["replay"])
                stage = f"round {n}, the replay of {welcome['replay']} after {resumer.last}"
                for _ in range(welcome["replay"]):
                    resumer.add(await next_message(ws, RECV_TIMEOUT), replayed=True)
                stage = f"round {n}, live messages after offset {resumer.last}"
                await resumer.read_live(ws, loop.time() + 0.3, 10)

            stage = "a resume with another epoch"
            wrong = "0123456789abcdef" if resumer.epoch != "0123456789abcdef" else "fedcba9876543210"
            async with v1(nodes[1].port, room, "stranger",
                          query=f"since={wrong}:{resumer.last}") as other:
                welcome = await expect(other, "welcome")
                assert welcome["recovered"] is False, welcome
                assert welcome["epoch"] == resumer.epoch, welcome

            stage = "the end"
            stop.set()
            total = sum(await asyncio.gather(*senders))
            await resumer.read_to(ws, reference.first - 1 + total)
            deadline = loop.time() + RECV_TIMEOUT
            while reference.last < total and not following.done() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if following.done():
                following.result()
            assert reference.last == total, f"reference at {reference.last} of {total}"
            return reference, resumer
        except (AssertionError, TimeoutError, ConnectionClosed) as e:
            raise AssertionError(f"{stage}: {e!r} (reference at {reference.last})") from e
        finally:
            stop.set()
            following.cancel()
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
            for w in (reference_ws, ws):
                if w is not None:
                    await w.close()

    reference, resumer = run(main(), timeout=80)
    assert reference.first == 1
    assert list(resumer.texts) == list(range(resumer.first, resumer.last + 1))
    for offset, rendered in resumer.texts.items():
        assert rendered == reference.texts[offset], f"offset {offset}"
    assert resumer.last == reference.last
    assert sum(resumer.replayed) > ROUNDS, f"replays {resumer.replayed}: nothing was missed"


# ---------------------------------------------------------------------------------------------
# Nothing is ordered while Redis is away


def test_messages_are_refused_while_redis_is_away(server, redis, tmp_path):
    from test_api import KEY, Api

    key_file = tmp_path / "api.key"
    key_file.write_text(KEY)
    a, b = start_nodes(server, redis, 2, "--api-key-file", str(key_file))
    room = "away"

    async def main():
        ann = await v1(a.port, room, "ann")
        await expect(ann, "welcome")
        bob = await v1(b.port, room, "bob")
        await expect(bob, "welcome")
        wait_subscribed(redis, room, 2)
        await ann.send(json.dumps({"type": "message", "text": "before"}))
        for ws in (ann, bob):  # the sender's own message, too, comes back from Redis
            assert (await next_message(ws))["text"] == "before"

        redis.kill()
        wire.wait_for(lambda: a.metrics()["shardcast_cluster_up"] == 0, 10, "node a sees Redis down")
        await ann.send(json.dumps({"type": "message", "text": "during"}))
        while (env := await envelope(ann))["type"] != "error":
            # cluster_down and presence notices, and nothing else: no message
            assert env["type"] in ("notice", "join", "leave", "online"), env
        assert env["code"] == "unavailable", env
        answer = await asyncio.to_thread(Api(a.port).call, "POST", "/api/publish",
                                         {"room": room, "data": "api during"})
        assert answer.status_code == 503, answer.text
        assert "Redis unreachable" in answer.json()["error"], answer.text
        for ws in (ann, bob):
            await ws.close()

    run(main(), timeout=40)
    assert a.metrics()["shardcast_cluster_publish_dropped_total"] >= 1
