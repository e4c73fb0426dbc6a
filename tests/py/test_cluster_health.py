"""What a cluster's users and operator meet when something is wrong (docs/cluster.md, "Failure
behaviour"; docs/operations.md, "Health and metrics"), with a real redis-server per test
started and stopped by PID:

* a node started with the id of a live node is refused, with one clear line, and the cluster
  it would have split chats on with unique ids and exact counts; a crashed node's id is free
  again within the expiry; two nodes started with one id at once: one runs, one is refused;
  a running node whose id another process took stops its cross-node traffic and says so;
* a Redis outage: `/health` says `degraded` with the reason, v1 members get `cluster_down`
  (with the count the node can vouch for) and `cluster_up`, plain members get nothing;
* the link's metrics, read with `prometheus_client`'s parser, all documented.

Every wait polls up to a generous bound; nothing asserts a fixed sleep.
"""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import wire
from chat import connect, recv, run
from conftest import BASE_ARGS, BIN, expected_shards
from test_cluster import V1, expect, start_nodes, wait_subscribed, welcome_until_online

REPO = Path(__file__).resolve().parents[2]
# A refused start watches the live node renew its claim (every 2 s); a crashed node's claim
# lapses within 6 s. Both with slack for a loaded machine.
CLAIM_BOUND = 20.0
# A link change is seen at once when Redis closes the connection; within 5 s of silence else.
LINK_BOUND = 15.0


def health(port: int) -> tuple[int, dict]:
    with wire.Conn.open(port) as conn:
        resp = conn.request(wire.get("/health", "Connection: close"))
    return resp.status, json.loads(resp.body)


def node_args(redis, node_id: str) -> list[str]:
    return [str(BIN), "--listen", "127.0.0.1:0", *BASE_ARGS, "--workers", "2",
            "--redis", redis.url, "--node-id", node_id]  # fmt: skip


def refused_start(redis, node_id: str) -> tuple[int, str, str]:
    """Runs a node that is expected to stop by itself: its exit code, stdout and stderr."""
    done = subprocess.run(
        node_args(redis, node_id), stdin=subprocess.DEVNULL, capture_output=True,
        timeout=CLAIM_BOUND + 10, text=True,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def assert_clear_refusal(code: int, stdout: str, stderr: str, node_id: str) -> None:
    assert code != 0, f"started anyway; stderr:\n{stderr}"
    assert "listening on" not in stdout
    lines = [line for line in stderr.splitlines() if "already in use" in line]
    assert len(lines) == 1, f"expected one error line; stderr:\n{stderr}"
    assert lines[0].startswith("shardcast: "), lines[0]
    assert f'node id "{node_id}" is already in use by a live node' in lines[0], lines[0]
    assert "--node-id" in lines[0], "it says what to do"


async def chat_across(sender, receivers, text: str) -> None:
    """`sender` says `text`; every receiver gets it, and the sender too (as every member)."""
    await sender.send(json.dumps({"type": "message", "text": text}))
    for ws in [sender, *receivers]:
        assert (await expect(ws, "message"))["text"] == text


def test_a_node_started_with_a_live_nodes_id_is_refused_and_the_room_stays_whole(server, redis):
    a, b = start_nodes(server, redis, 2)  # node ids n1, n2

    async def main():
        ann = await connect(a.port, "split?nick=ann", subprotocols=V1)
        w_ann = await welcome_until_online(ann, 1)
        bob = await connect(b.port, "split?nick=bob", subprotocols=V1)
        w_bob = await welcome_until_online(bob, 2)
        assert (await expect(ann, "join"))["nick"] == "bob"
        wait_subscribed(redis, "split", 2)

        # The user's mistake: a third node with node a's id.
        code, out, err = refused_start(redis, "n1")
        assert_clear_refusal(code, out, err, "n1")

        # What went wrong before cannot: node a's next member gets a fresh id, the counts are
        # exact, and messages cross both ways.
        cy = await connect(a.port, "split?nick=cy", subprotocols=V1)
        w_cy = await welcome_until_online(cy, 3)
        ids = {w_ann["id"], w_bob["id"], w_cy["id"]}
        assert len(ids) == 3, ids
        assert (await expect(bob, "join"))["online"] == 3
        await chat_across(bob, [ann, cy], "from b")
        await chat_across(cy, [bob], "from a")
        for ws in (ann, bob, cy):
            await ws.close()

    run(main(), timeout=60)
    for node in (a, b):
        status, body = health(node.port)
        assert (status, body["status"]) == (200, "ok"), body
        assert node.metrics()["shardcast_cluster_node_id_clash"] == 0
    assert "already in use" not in a.log()


def test_a_crashed_nodes_id_is_free_again_within_the_expiry(server, redis, tmp_path):
    (a,) = start_nodes(server, redis, 1)
    a.kill()
    # Its claim lapses (6 s) and the new process takes it: it starts, as under a supervisor.
    again = subprocess.Popen(node_args(redis, "n1"), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=open(tmp_path / "again.log", "wb"))
    try:
        assert select.select([again.stdout], [], [], CLAIM_BOUND)[0], "did not start"
        line = again.stdout.readline().decode()
        assert line.startswith("listening on 127.0.0.1:"), (tmp_path / "again.log").read_text()
        port = int(line.rsplit(":", 1)[1])
        wire.wait_for(lambda: wire.metrics(port)["shardcast_cluster_up"] == 1, LINK_BOUND,
                      "linked")  # fmt: skip
        assert health(port)[1]["status"] == "ok"
    finally:
        again.kill()
        again.wait(timeout=5)
        again.stdout.close()


def test_a_node_stopped_gracefully_gives_its_id_up_at_once(server, redis, tmp_path):
    (a,) = start_nodes(server, redis, 1)
    assert redis.command("EXISTS", "shardcast:node:n1") == ["1"]
    a.expected_exit = True
    a.process.send_signal(signal.SIGTERM)
    assert a.process.wait(timeout=30) == 0
    # Deleted on the way out: a successor need not wait for it to lapse.
    assert redis.command("EXISTS", "shardcast:node:n1") == ["0"], a.log()
    again = server("--redis", redis.url, "--node-id", "n1", workers=2)
    assert "held by another process" not in again.log()


def test_two_nodes_started_at_once_with_one_id_one_runs_and_one_is_refused(redis, tmp_path):
    procs = [
        subprocess.Popen(node_args(redis, "twin"), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=open(tmp_path / f"twin{i}.log", "wb"))
        for i in range(2)
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + CLAIM_BOUND + 10
        listening, exited = [], []
        while len(listening) + len(exited) < 2:
            assert time.monotonic() < deadline, "neither refused nor started in time"
            for proc in procs:
                if proc in listening or proc in exited:
                    continue
                if proc.poll() is not None:
                    exited.append(proc)
                elif select.select([proc.stdout], [], [], 0.05)[0]:
                    line = proc.stdout.readline()
                    if not line:  # stdout closed: it is exiting
                        proc.wait(timeout=5)
                        exited.append(proc)
                        continue
                    assert line.startswith(b"listening on"), line
                    listening.append(proc)
        assert len(listening) == 1 and len(exited) == 1, "exactly one keeps the id"
        loser = procs.index(exited[0])
        assert exited[0].returncode != 0
        assert_clear_refusal(1, "", (tmp_path / f"twin{loser}.log").read_text(), "twin")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
            proc.stdout.close()


async def ann_plain_and_bob(a, b, redis, room: str):
    """v1 `ann` and a plain member on node `a`, v1 `bob` on node `b`, all in `room`, both
    nodes subscribed to it."""
    ann = await connect(a.port, f"{room}?nick=ann", subprotocols=V1)
    await welcome_until_online(ann, 1)
    plain = await connect(a.port, room)
    bob = await connect(b.port, f"{room}?nick=bob", subprotocols=V1)
    await welcome_until_online(bob, 3)
    wait_subscribed(redis, room, 2)
    return ann, plain, bob


def test_a_running_node_whose_id_was_taken_stands_aside_and_says_so(server, redis):
    # History off: a node that stands aside still serves its local rooms. (With history on,
    # Redis orders every message, and a node cut off from it refuses them: docs/cluster.md.)
    a, b = start_nodes(server, redis, 2, "--history-size", "0")

    async def main():
        ann, plain, bob = await ann_plain_and_bob(a, b, redis, "aside")

        # Another process holds node a's id now (as after a long partition of node a, while a
        # new process took the id): a's next renewal finds it.
        assert redis.command("SET", "shardcast:node:n1", "another-process", "PX", "60000") == ["OK"]
        notice = await expect(ann, "notice", timeout=LINK_BOUND)
        assert (notice["code"], notice["online"]) == ("cluster_down", 2), notice
        status, body = wire.wait_for(
            lambda: (s := health(a.port))[1]["status"] == "degraded" and s, LINK_BOUND,
            "node a degraded",
        )
        assert status == 503, "only a restart mends it: the balancer should send clients on"
        assert "node id clash" in body["reason"] and '"n1"' in body["reason"], body
        assert "--node-id" in body["reason"]
        # Node b no longer counts a's members (a publishes nothing, so b lets it expire).
        while (await expect(bob, "online", timeout=LINK_BOUND))["online"] != 1:
            pass
        # Local chat on node a goes on; its plain member got no notice, only the message.
        await ann.send(json.dumps({"type": "message", "text": "still local"}))
        assert await recv(plain) == "ann: still local"
        for ws in (ann, plain, bob):
            await ws.close()

    run(main(), timeout=60)
    assert re.search(r"ERROR.*node id clash: another live process holds node id \"n1\"", a.log())
    m = a.metrics()
    assert (m["shardcast_cluster_node_id_clash"], m["shardcast_cluster_up"]) == (1, 0)
    assert health(b.port)[1]["status"] == "ok"


def test_a_redis_outage_shows_in_health_and_v1_members_hear_of_it(server, redis):
    # History off, where local rooms go on during the outage (with history on, publishes are
    # refused and joins wait for Redis: tests/py/test_cluster_failures.py).
    a, b = start_nodes(server, redis, 2, "--history-size", "0")

    async def main():
        ann, plain, bob = await ann_plain_and_bob(a, b, redis, "out")
        ok = {"status": "ok", "shards": expected_shards(2), "connections": 2}
        # Polled: the scrapes of a moment ago may not be reaped yet.
        wire.wait_for(lambda: health(a.port) == (200, ok), LINK_BOUND, "ok, two connections")

        redis.kill()
        down = await expect(ann, "notice", timeout=LINK_BOUND)
        # The count drops to what node a can vouch for: ann and the plain member.
        assert (down["code"], down["online"]) == ("cluster_down", 2), down
        assert "other servers" in down["text"]
        assert (await expect(bob, "notice", timeout=LINK_BOUND))["online"] == 1
        status, body = health(a.port)
        # Degraded, still 200: every node loses Redis at once, and each still serves its own
        # members; taking them all out would turn the outage into a total one.
        assert (status, body["status"]) == (200, "degraded"), body
        assert body["reason"].startswith("cluster link down"), body
        # A plain member never gets notices: the next thing it reads is the next message.
        await ann.send(json.dumps({"type": "message", "text": "during"}))
        assert await recv(plain) == "ann: during"
        # A member joining meanwhile is told too, after its welcome.
        cy = await connect(a.port, "out?nick=cy", subprotocols=V1)
        assert (await expect(cy, "welcome"))["online"] == 3
        late = await expect(cy, "notice")
        assert (late["code"], late["online"]) == ("cluster_down", 3), late

        redis.start()
        up = await expect(ann, "notice", timeout=LINK_BOUND)
        assert up["code"] == "cluster_up", up
        # Then node b's heartbeat brings its member back into the count.
        count = up["online"]
        while count != 4:
            count = (await expect(ann, "online", timeout=LINK_BOUND))["online"]
        assert (await expect(bob, "notice", timeout=LINK_BOUND))["code"] == "cluster_up"
        assert (await expect(cy, "notice", timeout=LINK_BOUND))["code"] == "cluster_up"
        wait_subscribed(redis, "out", 2)
        await chat_across(bob, [ann], "after")
        assert await recv(plain) == "bob: after"
        for ws in (ann, plain, bob, cy):
            await ws.close()

    run(main(), timeout=90)
    for node in (a, b):
        wire.wait_for(lambda: health(node.port)[1]["status"] == "ok", LINK_BOUND, "ok again")
        m = node.metrics()
        assert m["shardcast_cluster_outages_total"] == 1
        assert m['shardcast_cluster_reconnects_total{side="subscribe"}'] >= 1
        assert m['shardcast_cluster_link_up{side="subscribe"}'] == 1
        wire.wait_for(
            lambda: node.metrics()['shardcast_cluster_link_up{side="publish"}'] == 1,
            LINK_BOUND, "publisher reconnected",
        )  # fmt: skip
    assert "cross-node delivery down" in a.log()


def test_link_metrics_parse_and_are_documented(server, redis):
    a, b = start_nodes(server, redis, 2)
    wire.wait_for(lambda: a.metrics()["shardcast_cluster_up"] == 1, LINK_BOUND, "a linked")
    with wire.Conn.open(a.port) as conn:
        text = conn.request(wire.get("/metrics", "Connection: close")).body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(name: str, **labels: str) -> float:
        samples = [s for f in families.values() for s in f.samples
                   if s.name == name and s.labels == labels]  # fmt: skip
        assert len(samples) == 1, (name, labels, samples)
        return samples[0].value

    assert families["shardcast_cluster_up"].type == "gauge"
    assert value("shardcast_cluster_up") == 1
    assert value("shardcast_cluster_link_up", side="publish") == 1
    assert value("shardcast_cluster_link_up", side="subscribe") == 1
    assert families["shardcast_cluster_reconnects"].type == "counter"
    assert value("shardcast_cluster_reconnects_total", side="subscribe") == 0
    # The own heartbeat's trip through a local Redis: well under a second.
    assert 0 <= value("shardcast_cluster_heartbeat_lag_seconds") < 1
    # Node b's last heartbeat, sent every 2 s.
    assert 0 <= value("shardcast_cluster_peer_heartbeat_age_seconds", node="n2") < 6
    assert value("shardcast_cluster_nodes") == 1
    assert value("shardcast_cluster_node_id_clash") == 0
    docs = (REPO / "docs/operations.md").read_text()
    for name, family in families.items():
        if name.startswith("shardcast_cluster_"):
            shown = name + "_total" if family.type == "counter" else name
            assert re.search(rf"`{shown}[`{{]", docs), f"{shown} is not in docs/operations.md"
