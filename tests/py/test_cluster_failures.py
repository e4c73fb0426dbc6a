"""A room's one order across nodes survives what goes wrong (issue 14; docs/cluster.md, the
failure table): Redis is the rooms' sequencer, and every test here breaks it or a node on
purpose, with real `redis-server` and shardcast processes started and stopped by PID.

* Redis SIGKILLed mid-run and restarted on the same port, without persistence: a new epoch, so
  no resume across the outage is `recovered: true`; v1 publishes while Redis is down get
  `unavailable` and are never delivered; afterwards one order again on every node.
* The same with AOF (`appendfsync always`): the epoch survives, and every member gets every
  message that reached Redis exactly once, live or by resuming.
* A node SIGKILLed mid-run: every message that reached Redis is in the history and reached the
  other nodes' members, and its member resumes on another node with every message once.
* The room's meta key flushed (FLUSHALL, or DEL of the key alone): a new epoch, members told,
  a resume with the old epoch `recovered: false`.
* A quiet room with members outlives `--history-ttl` (its keys are renewed while followed);
  once nobody is in it they expire, and a resume finds a new epoch.

What the tests hold the server to is the product's own promise (docs/protocol.md), checked on
every connection: no message twice, offsets contiguous from the welcome on (never a silent
gap: a member that cannot be given a message is closed with 1013 and resumes), one text per
(epoch, offset) across all members and nodes. Nothing is asserted about the order between two
senders, nor about time beyond the generous bounds below.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections import Counter
from typing import Callable

import pytest
from websockets.exceptions import ConnectionClosed

import wire
from chat import connect, expect, v1
from chat import run as run_with_deadline
from conftest import REDIS_BIN, START_TIMEOUT, Redis
from test_cluster import start_nodes

# --history-size for every node: far more than any test sends, so the history always reaches
# back to every member's first message.
HISTORY = 1000
# Seconds between two messages of one sender (a few senders: ~60 messages a second in all).
PACE = 0.05
# A link change (Redis gone, Redis back) shows in every node's `shardcast_cluster_up`: at once
# when the connection breaks; within the reconnect backoff (2 s) and a heartbeat (2 s) after
# Redis is back. With slack for a loaded 2-core machine.
LINK_BOUND = 20.0
# Any message or close a client waits for.
DELIVERY_BOUND = 20.0
# How a member is told that it may have missed messages (docs/protocol.md, "One order").
MISSED = (1013, "missed messages: resume with since")
# The whole of one test, under `run`.
TEST_BOUND = 55.0


def run(coro):
    return run_with_deadline(coro, TEST_BOUND)


# ---------------------------------------------------------------------------------------------
# Members: every connection records all it receives, and the checks read the records


class Member:
    """One connection in the room, recording in the background everything it receives: its
    `message` envelopes (v1) or frames (plain), errors and notices, and its close.

    Message payloads are keys `<sender>#<n>`, unique in a test; a plain member receives a v1
    sender's as `<nick>: <key>`."""

    def __init__(self, name: str, ws, welcome: dict | None) -> None:
        self.name = name
        self.ws = ws
        self.welcome = welcome
        self.messages: list = []  # v1: message envelopes; plain: frames
        self.errors: list[dict] = []
        self.notices: list[dict] = []
        self.closed: tuple[int | None, str | None] | None = None
        self.sent: list[str] = []
        self.reader = asyncio.create_task(self._read())

    @property
    def v1(self) -> bool:
        return self.welcome is not None

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if not self.v1:
                    self.messages.append(frame)
                    continue
                env = json.loads(frame)
                kind = env["type"]
                if kind == "message":
                    self.messages.append(env)
                elif kind == "error":
                    self.errors.append(env)
                else:
                    self.notices.append(env)
        except ConnectionClosed:
            pass
        rcvd = self.ws.protocol.close_rcvd
        self.closed = (rcvd.code, rcvd.reason) if rcvd else (None, None)

    def keys(self) -> list[str]:
        if self.v1:
            return [env["text"] for env in self.messages]
        return [f.rsplit(" ", 1)[-1] if isinstance(f, str) else repr(f) for f in self.messages]

    def offsets(self) -> list[int]:
        return [env["offset"] for env in self.messages]

    def since(self) -> str:
        """Where this member is: its epoch and the offset of its last message."""
        last = self.messages[-1]["offset"] if self.messages else self.welcome["offset"]
        return f"{self.welcome['epoch']}:{last}"

    def unavailable(self) -> int:
        return sum(1 for e in self.errors if e["code"] == "unavailable")

    def echoed(self) -> set[str]:
        return set(self.sent) & set(self.keys())

    async def close(self) -> None:
        """Closes the connection and waits until the record is complete."""
        await self.ws.close()
        await self.reader

    async def send(self, key: str) -> None:
        """Sends `key` as a message (a v1 envelope, or the bare text)."""
        text = json.dumps({"type": "message", "text": key}) if self.v1 else key
        await self.ws.send(text)
        self.sent.append(key)

    async def send_paced(self, stop: asyncio.Event, prefix: str = "") -> None:
        """Keys `<name>#<prefix><n>` every PACE seconds until `stop`, or until closed."""
        n = 0
        while not stop.is_set():
            try:
                await self.send(f"{self.name}#{prefix}{n}")
            except ConnectionClosed:
                return
            n += 1
            await asyncio.sleep(PACE)


class Room:
    """The members a test opened in one room, so that every check covers all of them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: list[Member] = []

    async def join(
        self,
        node,
        nick: str | None = None,
        *,
        name: str = "",
        query: str = "",
        timeout: float = DELIVERY_BOUND,
    ) -> Member:
        """A v1 member `nick` (its welcome read within `timeout`), or a plain one called
        `name`, on `node`."""
        if nick is None:
            path = self.name + (f"?{query}" if query else "")
            member = Member(name or "plain", await connect(node.port, path), None)
        else:
            ws = await v1(node.port, self.name, nick, query=query)
            member = Member(nick, ws, await expect(ws, "welcome", timeout))
        self.members.append(member)
        return member

    async def history(self, node, nick: str) -> Member:
        """A fresh v1 member on `node` that asked for the whole history: once its replay is in,
        it is closed and its record is the room's history as that node serves it."""
        member = await self.join(node, nick, query=f"history={HISTORY}")
        replay = member.welcome.get("replay", 0)
        await until(lambda: len(member.messages) >= replay, DELIVERY_BOUND,
                    f"{nick}: its replay of {replay}")  # fmt: skip
        await member.close()
        return member

    async def close_all(self) -> None:
        for member in self.members:
            await member.close()


async def until(predicate: Callable[[], object], timeout: float, what: str):
    """Polls `predicate` (without blocking the clients' readers) until it holds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)
    return value


def cluster_up(nodes, value: int) -> bool:
    return all(node.metrics().get("shardcast_cluster_up") == value for node in nodes)


async def all_receive(senders: list[Member], receivers: list[Member], what: str) -> None:
    """Until every receiver has every key the senders sent."""
    keys = {k for s in senders for k in s.sent}
    try:
        await until(lambda: all(keys <= set(r.keys()) for r in receivers), DELIVERY_BOUND, what)
    except AssertionError as e:
        lacking = {r.name: (len(keys - set(r.keys())), r.closed) for r in receivers}
        raise AssertionError(f"{e}; (missing, closed) by member: {lacking}") from None


async def warm_up(room: Room, sender: Member, receivers: list[Member]) -> None:
    """One message from `sender` reaches every receiver: every node follows the room."""
    await sender.send(f"{sender.name}#warm")
    await all_receive([sender], receivers, "the first message reaches every member")


async def settled_epoch(room: Room, nodes, old: str, *, same: bool) -> str:
    """After Redis came back or lost the room's meta: publishes through fresh v1 clients until a
    message is sequenced and a fresh member on every node is welcomed in one epoch, the old
    one when `same`, another one else. Returns it.

    A publisher may meet `unavailable` (its node has not seen the link back yet) or be closed
    with 1013 (its node learns of the new epoch with its own message); it just tries again."""
    deadline = time.monotonic() + LINK_BOUND
    for attempt in range(1000):
        assert time.monotonic() < deadline, f"no settled epoch within {LINK_BOUND} s"
        primer = await room.join(nodes[attempt % len(nodes)], f"primer{attempt}")
        await primer.send(f"primer{attempt}#0")
        await until(lambda: primer.messages or primer.errors or primer.closed, DELIVERY_BOUND,
                    f"primer {attempt}: its message back, an error or a close")  # fmt: skip
        await primer.close()
        if not primer.messages:
            await asyncio.sleep(0.2)
            continue
        epochs = set()
        for i, node in enumerate(nodes):
            look = await room.join(node, f"look{attempt}n{i}")
            epochs.add(look.welcome["epoch"])
            await look.close()
        if len(epochs) == 1 and (epochs == {old}) == same:
            return epochs.pop()
        await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# The checks every test makes on every connection


def assert_each_once(room: Room) -> None:
    """No connection received a message twice (live and replayed together)."""
    for m in room.members:
        twice = [k for k, n in Counter(m.keys()).items() if n > 1]
        assert not twice, f"{m.name} received {twice[:5]} more than once"


def assert_contiguous(room: Room) -> None:
    """Every v1 connection's offsets run without a gap from its first (the welcome's offset,
    less its replay, plus one), replayed messages first: a member either has every message of
    its epoch after its welcome or was closed (never a silent gap, never a silent new epoch)."""
    for m in room.members:
        if not m.v1 or "offset" not in m.welcome:
            continue
        replay = m.welcome.get("replay", 0)
        first = m.welcome["offset"] - replay + 1
        offsets = m.offsets()
        assert offsets == list(range(first, first + len(offsets))), (
            f"{m.name} (welcome {m.welcome}, closed {m.closed}): offsets {offsets}"
        )
        flags = [env.get("history", False) for env in m.messages]
        assert flags == [True] * min(replay, len(flags)) + [False] * (len(flags) - replay), (
            f"{m.name}: the replay ({replay}) is not the first messages: {flags}"
        )


def assert_one_order(room: Room) -> dict[tuple[str, int], str]:
    """One text per (epoch, offset) over every v1 connection on every node; the map."""
    seen: dict[tuple[str, int], str] = {}
    for m in room.members:
        if not m.v1 or "epoch" not in m.welcome:
            continue
        for env in m.messages:
            where = (m.welcome["epoch"], env["offset"])
            text = seen.setdefault(where, env["text"])
            assert text == env["text"], f"{m.name}: {where} is {env['text']!r}, elsewhere {text!r}"
    return seen


def assert_never_delivered(room: Room, keys: set[str]) -> None:
    for m in room.members:
        got = keys & set(m.keys())
        assert not got, f"{m.name} received {sorted(got)}, sent while Redis was down"


def check_room(room: Room) -> dict[tuple[str, int], str]:
    assert_each_once(room)
    assert_contiguous(room)
    return assert_one_order(room)


def texts_after(history: Member, offset: int) -> list[str]:
    return [env["text"] for env in history.messages if env["offset"] > offset]


# ---------------------------------------------------------------------------------------------
# Redis killed mid-run and restarted


class DurableRedis(Redis):
    """A redis-server with an append-only file, fsynced on every write, in the test's folder:
    what docs/cluster.md advises for history that survives a Redis restart."""

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        data = self.log_path.parent / "redis-aof"
        data.mkdir(exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "yes", "--appendfsync", "always", "--dir", str(data),
                 "--protected-mode", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        wire.wait_for(self.ping, START_TIMEOUT, f"redis (AOF) on port {self.port}")


@pytest.fixture
def durable_redis(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    r = DurableRedis(port, None, tmp_path / "redis-aof.log")
    r.start()
    yield r
    r.kill()


def redis_killed_mid_run(nodes, redis, *, durable: bool) -> None:
    """Senders on three nodes; Redis SIGKILLed while they publish, then restarted on its port.
    `durable`: it runs with AOF, so the room's epoch and stream survive."""
    room = Room("killed")

    async def main():
        watchers = [await room.join(node, f"w{i}") for i, node in enumerate(nodes)]
        plain_watcher = await room.join(nodes[2], name="pw")
        senders = [
            await room.join(nodes[0], "s0"),
            await room.join(nodes[1], "s1"),
            await room.join(nodes[2], name="p2"),  # plain: its messages are dropped when down
        ]
        leaver = await room.join(nodes[0], "leaver")
        old = [*watchers, plain_watcher, *senders, leaver]
        await warm_up(room, senders[0], old)

        stop = asyncio.Event()
        sending = [asyncio.create_task(s.send_paced(stop)) for s in senders]
        await until(lambda: len(leaver.messages) >= 10, DELIVERY_BOUND, "leaver: 10 messages")
        since = leaver.since()
        await leaver.close()
        epoch = leaver.welcome["epoch"]
        await until(lambda: all(len(w.messages) >= 40 for w in watchers), DELIVERY_BOUND,
                    "every watcher: 40 messages")  # fmt: skip

        redis.kill()
        await until(lambda: cluster_up(nodes, 0), LINK_BOUND, "every node sees Redis down")
        stop.set()
        await asyncio.gather(*sending)
        # The messages in flight at the kill were sequenced (echoed), refused, or neither: wait
        # until each v1 sender's count stops moving, so that no late answer is taken for the
        # answer to what follows.
        v1_senders = [s for s in senders if s.v1]
        for s in v1_senders:
            await until_still(lambda s=s: (len(s.messages), len(s.errors)))

        # A resume from before the kill, made while Redis is down: it waits for the room to be
        # synced again (docs/cluster.md), and is then recovered only if Redis kept the room.
        waiting = asyncio.create_task(
            room.join(nodes[1], "leaver3", query=f"since={since}", timeout=TEST_BOUND)
        )

        # Redis is down on every node: a v1 message gets `unavailable`, each one.
        down_keys = set()
        for s in v1_senders:
            for n in range(3):
                before = s.unavailable()
                await s.send(f"{s.name}#down{n}")
                down_keys.add(f"{s.name}#down{n}")
                what = f"{s.name}: unavailable for a message sent while Redis is down"
                await until(lambda s=s, b=before: s.unavailable() > b, DELIVERY_BOUND, what)
        # A plain sender is not told (the plain relay sends nothing of its own): its messages
        # are dropped and counted.
        dropped = "shardcast_cluster_publish_dropped_total"
        before = nodes[2].metrics()[dropped]
        for n in range(3):
            await senders[2].send(f"p2#down{n}")
            down_keys.add(f"p2#down{n}")
        await until(lambda: nodes[2].metrics()[dropped] >= before + 3, DELIVERY_BOUND,
                    "the plain sender's three messages counted as dropped")  # fmt: skip

        redis.start()
        await until(lambda: cluster_up(nodes, 1), LINK_BOUND, "every node sees Redis back")
        # A resume from before the kill at once, before anything else is published: without
        # persistence the messages it missed are gone, so it cannot be recovered.
        early = await room.join(nodes[2], "leaver1", query=f"since={since}")
        during = await waiting
        now = await settled_epoch(room, nodes, epoch, same=durable)

        # Each watcher was told it may have missed messages (closed), or is past the outage:
        # it has the first message sequenced after it. Whoever was told resumes, elsewhere.
        primed = {k for m in room.members if m.name.startswith("primer") for k in m.echoed()}
        await until(lambda: all(w.closed or primed <= set(w.keys()) for w in watchers),
                    DELIVERY_BOUND, "every watcher: told, or past the outage")  # fmt: skip
        resumed: dict[str, tuple[Member, Member]] = {}
        for i, w in enumerate(watchers):
            assert durable or w.closed, f"{w.name} was not told of the new epoch"
            if w.closed:
                assert w.closed == MISSED, f"{w.name} closed with {w.closed}"
                elsewhere = nodes[(i + 1) % len(nodes)]
                again = await room.join(elsewhere, f"{w.name}r", query=f"since={w.since()}")
                resumed[w.name] = (w, again)
        back = await room.join(nodes[1], "leaver2", query=f"since={since}")

        # After recovery: new members on every node, new senders on two; one order for all.
        late = [await room.join(node, f"q{i}") for i, node in enumerate(nodes)]
        late_plain = await room.join(nodes[0], name="qp")
        talkers = [await room.join(nodes[0], "t0"), await room.join(nodes[1], "t1")]
        stop = asyncio.Event()
        sending = [asyncio.create_task(t.send_paced(stop)) for t in talkers]
        await until(lambda: all(len(t.sent) >= 15 for t in talkers), DELIVERY_BOUND, "15 each")
        stop.set()
        await asyncio.gather(*sending)
        still_open = [m for m in room.members if m.closed is None and m not in talkers]
        await all_receive(talkers, still_open, "every open member: every message after recovery")
        early_told = early.closed, during.closed
        histories = [await room.history(node, f"h{i}") for i, node in enumerate(nodes)]
        await room.close_all()
        return (epoch, now, since, watchers, senders, down_keys, resumed, early, during,
                early_told, back, late, late_plain, talkers, histories)  # fmt: skip

    (epoch, now, since, watchers, senders, down_keys, resumed, early, during, early_told, back,
     late, late_plain, talkers, histories) = run(main())  # fmt: skip

    check_room(room)
    assert_never_delivered(room, down_keys)
    for s in senders:
        if s.v1:
            # No message both delivered and refused. (One in the pipeline in flight when the
            # connection broke may get neither: docs/cluster.md, "Failures with history on".)
            assert len(s.echoed()) + s.unavailable() <= len(s.sent), (s.name, s.errors)
    # One order after recovery: every member that joined since sees the same sequence.
    after = {k for t in talkers for k in t.sent}
    sequences = [[k for k in m.keys() if k in after] for m in [*late, late_plain]]
    assert all(seq == sequences[0] for seq in sequences), sequences
    assert sorted(sequences[0]) == sorted(after)
    assert {m.welcome["epoch"] for m in late} == {now}
    # The history is one on every node.
    assert len({h.welcome["epoch"] for h in histories}) == 1
    assert all(h.keys() == histories[0].keys() for h in histories)

    if not durable:
        assert now != epoch, "a Redis restart without persistence must start a new epoch"
        for resume in (early, during):
            assert resume.welcome["recovered"] is False, f"since {since}: {resume.welcome}"
        for w, again in [*resumed.values(), (None, back)]:
            where = f"resume since {since if w is None else w.since()}: {again.welcome}"
            assert again.welcome["recovered"] is False, where
            assert again.welcome["epoch"] == now, where
        return

    # With AOF: the epoch survived, and every message that reached Redis is in the history.
    assert now == epoch, "the epoch must survive a Redis restart with AOF"
    history = histories[0]
    in_history = set(history.keys())
    for s in senders:
        lost = s.echoed() - in_history
        assert not lost, f"{s.name}'s {sorted(lost)} came back to it but are not in the history"
    # A resume from before the kill is recovered: exactly the messages it missed.
    assert back.welcome["recovered"] is True, back.welcome
    after_since = texts_after(history, int(since.split(":")[1]))
    assert back.keys() == after_since, "the resume across the outage got another sequence"
    # The same at once after the restart (then live messages; or told, if the node could not
    # go on: a prefix of it).
    for resume, told in zip((early, during), early_told):
        assert resume.welcome["recovered"] is True, resume.welcome
        got = resume.keys()
        if told is None:
            assert got == after_since, f"{resume.name}: resumed with another sequence"
        else:
            assert told == MISSED and got == after_since[: len(got)], (resume.name, told)
    # Every watcher (on through the outage, or told and resumed) got each message exactly once.
    for w in watchers:
        chain = [w]
        if w.name in resumed:
            again = resumed[w.name][1]
            assert again.welcome["recovered"] is True, again.welcome
            chain.append(again)
        got = [k for m in chain for k in m.keys()]
        want = texts_after(history, w.welcome["offset"])
        assert got == want, f"{w.name}: {len(got)} messages, the history has {len(want)} after it"


async def until_still(measure: Callable[[], object], quiet: float = 1.0, bound: float = 10.0):
    """Until `measure` has not changed for `quiet` seconds (or `bound` passed: then it is
    as still as it gets, and the checks after it judge)."""
    deadline = time.monotonic() + bound
    value, since = measure(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        await asyncio.sleep(0.05)
        if (now := measure()) != value:
            value, since = now, time.monotonic()


def test_redis_killed_without_persistence_starts_a_new_epoch(server, redis):
    nodes = start_nodes(server, redis, 3, "--history-size", str(HISTORY))
    redis_killed_mid_run(nodes, redis, durable=False)


def test_redis_killed_with_aof_keeps_the_epoch_and_every_message(server, durable_redis):
    nodes = start_nodes(server, durable_redis, 3, "--history-size", str(HISTORY))
    redis_killed_mid_run(nodes, durable_redis, durable=True)


# ---------------------------------------------------------------------------------------------
# A node killed mid-run


def test_a_killed_node_loses_nothing_that_reached_redis(server, redis):
    nodes = start_nodes(server, redis, 3, "--history-size", str(HISTORY))
    doomed = nodes[0]
    room = Room("crash")

    async def main():
        watchers = [await room.join(nodes[1], "w1"), await room.join(nodes[2], "w2")]
        plain_watcher = await room.join(nodes[2], name="pw")
        senders = [
            await room.join(doomed, "a"),
            await room.join(doomed, name="pa"),
            await room.join(nodes[1], "b"),
        ]
        await warm_up(room, senders[2], [*watchers, plain_watcher, *senders])
        stop = asyncio.Event()
        sending = [asyncio.create_task(s.send_paced(stop)) for s in senders]
        await until(lambda: all(len(w.messages) >= 40 for w in watchers), DELIVERY_BOUND,
                    "every watcher: 40 messages")  # fmt: skip
        doomed.kill()
        a, b = senders[0], senders[2]
        at_kill = len(b.sent)
        # The crashed node's v1 member comes back on another node while b goes on.
        await until(lambda: a.closed, DELIVERY_BOUND, "a's connection ends with its node")
        back = await room.join(nodes[2], "a2", query=f"since={a.since()}")
        await until(lambda: len(b.sent) >= at_kill + 20, DELIVERY_BOUND, "b sends on")
        stop.set()
        await asyncio.gather(*sending)
        await all_receive([b], [*watchers, plain_watcher, b], "b's messages reach everyone")
        await until(lambda: b.sent[-1] in back.keys(), DELIVERY_BOUND, "a2: b's last message")
        histories = [await room.history(nodes[i], f"h{i}") for i in (1, 2)]
        await room.close_all()
        return watchers, plain_watcher, senders, back, histories

    watchers, plain_watcher, senders, back, histories = run(main())
    check_room(room)
    h1, h2 = histories
    assert h1.welcome["epoch"] == h2.welcome["epoch"], "one epoch on every node"
    assert h1.keys() == h2.keys(), "one history on every node"
    assert {w.welcome["epoch"] for w in watchers} == {h1.welcome["epoch"]}
    in_history = set(h1.keys())
    for s in senders:
        lost = s.echoed() - in_history
        assert not lost, f"{s.name}'s {sorted(lost)} came back to it but are not in the history"
    assert any(k.startswith("a#") for k in in_history), "the doomed node's sender got through"
    # Every member of the other nodes got exactly what reached Redis after it joined.
    for w in watchers:
        assert w.keys() == texts_after(h1, w.welcome["offset"]), w.name
    assert plain_watcher.keys() == watchers[1].keys()
    # The crashed node's member, resumed elsewhere, has every message exactly once.
    a = senders[0]
    assert back.welcome["recovered"] is True, back.welcome
    assert a.keys() + back.keys() == texts_after(h1, a.welcome["offset"])


# ---------------------------------------------------------------------------------------------
# The room's meta key flushed while members are in the room


@pytest.mark.parametrize("wipe", ["flushall", "del-meta"])
def test_a_flushed_meta_key_starts_a_new_epoch(server, redis, wipe):
    """FLUSHALL (Redis emptied) or DEL of the meta key alone (as when it expires before the
    stream): the room's offsets restart in a new epoch, whatever is left of the stream."""
    nodes = start_nodes(server, redis, 2, "--history-size", str(HISTORY))
    room = Room("wiped")

    async def main():
        members = [await room.join(nodes[0], "m0"), await room.join(nodes[1], "m1")]
        plain = await room.join(nodes[1], name="pm")
        sender = await room.join(nodes[0], "s")
        await warm_up(room, sender, [*members, plain, sender])
        for n in range(10):
            await sender.send(f"s#{n}")
        await all_receive([sender], [*members, plain], "the first ten")
        epoch, since = members[0].welcome["epoch"], members[1].since()

        if wipe == "flushall":
            assert redis.command("FLUSHALL") == ["OK"]
        else:
            assert redis.command("DEL", f"shardcast:meta:{room.name}") == ["1"]
        now = await settled_epoch(room, nodes, epoch, same=False)
        await until(lambda: all(m.closed for m in members), DELIVERY_BOUND,
                    "the members are told: a new epoch")  # fmt: skip
        resumes = [await room.join(node, f"r{i}", query=f"since={since}")
                   for i, node in enumerate(nodes)]  # fmt: skip
        histories = [await room.history(node, f"h{i}") for i, node in enumerate(nodes)]
        await room.close_all()
        return epoch, now, members, sender, resumes, histories

    epoch, now, members, sender, resumes, histories = run(main())
    check_room(room)
    assert now != epoch
    for m in members:
        assert m.closed == MISSED, f"{m.name} closed with {m.closed}"
    for r in resumes:
        assert (r.welcome["recovered"], r.welcome["epoch"]) == (False, now), r.welcome
    before = set(sender.sent)
    for h in histories:
        assert h.welcome["epoch"] == now
        assert not before & set(h.keys()), f"{h.name}: the old epoch's messages in the new one"
        assert h.keys() and all(k.startswith("primer") for k in h.keys()), h.keys()


# ---------------------------------------------------------------------------------------------
# The room's keys outlive a quiet spell while members are in it, and expire once none is

TTL = 2  # --history-ttl, seconds
# The least a room's keys live in Redis after a message, a read or a follower's renewal,
# whatever the TTL (docs/cluster.md, "Keys"): a quiet spell must outlast it to mean anything.
KEY_LIFE = 10.0


def test_a_quiet_room_with_members_keeps_its_epoch_past_the_ttl(server, redis):
    """On one node a room's offsets never restart while it has members, however quiet it is
    (docs/protocol.md, "History"); the keys in Redis must not expire under a followed room
    either. Once nobody is in it, they do: a resume then finds a new epoch."""
    nodes = start_nodes(server, redis, 2, "--history-ttl", str(TTL))
    room = Room("quiet")
    meta = f"shardcast:meta:{room.name}"

    async def main():
        a, b = await room.join(nodes[0], "a"), await room.join(nodes[1], "b")
        plain = await room.join(nodes[1], name="pb")
        await warm_up(room, a, [a, b, plain])
        # Quiet for longer than the keys would live unrenewed, then one more message.
        await asyncio.sleep(max(TTL, KEY_LIFE) + 3)
        await b.send("b#0")
        await until(lambda: all(m.closed or "b#0" in m.keys() for m in (a, b, plain)),
                    DELIVERY_BOUND, "the message after the quiet spell, or a close")  # fmt: skip
        told = [(m.name, m.closed) for m in (a, b, plain) if m.closed]
        since = b.since()
        await room.close_all()
        # Nobody is in the room now: its keys expire once they are no longer renewed.
        await until(lambda: redis.command("EXISTS", meta) == ["0"], KEY_LIFE + LINK_BOUND,
                    "the room's keys expire once nobody is in it")  # fmt: skip
        again = await room.join(nodes[0], "a2", query=f"since={since}")
        await again.close()
        return a, b, told, again

    a, b, told, again = run(main())
    check_room(room)
    assert not told, f"{told} were closed after a quiet spell: nothing was missed"
    assert a.keys() == b.keys() == ["a#warm", "b#0"], (a.messages, b.messages)
    assert (again.welcome["recovered"], again.welcome["epoch"] != a.welcome["epoch"]) == (
        False, True), again.welcome  # fmt: skip
