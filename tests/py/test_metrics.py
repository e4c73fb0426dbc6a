"""GET /metrics: the Prometheus text format, read by the real parser, and counters that move
by exactly what the test did.

Shards publish their counters once per event-loop turn, so a scrape may lag a moment behind
what a client already saw; every check of a moved value polls (bounded) until it holds, then
insists on the exact value.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import BIN, expected_shards
from websockets.exceptions import ConnectionClosed

from chat import connect, recv, run
from wire import Conn, get, upgrade_request

WORKERS = 4
SCRAPE_WAIT = 5.0

# The single model runs one loop whatever --workers says.
SHARD_LABELS = {str(i) for i in range(expected_shards(WORKERS))}
GAUGES = {
    "shardcast_shards": None,
    "shardcast_connections": ("shard", SHARD_LABELS),
    "shardcast_connections_all": None,
    "shardcast_websocket_sessions": ("shard", SHARD_LABELS),
    "shardcast_websocket_sessions_all": None,
    "shardcast_connection_rate_addresses": None,
    "shardcast_rooms": None,
    "shardcast_room_members_max": None,
    "process_resident_memory_bytes": None,
    "process_virtual_memory_bytes": None,
    "process_open_fds": None,
    "process_max_fds": None,
    "process_start_time_seconds": None,
}
COUNTERS = {
    "shardcast_handshakes_total": (
        "result",
        {"ok", "bad_request", "forbidden", "not_found", "method", "version", "unavailable", "timeout",
         "unauthorized"},
    ),
    "shardcast_http_responses_total": ("status", {"200", "400", "404", "405", "431", "500", "503"}),
    "shardcast_messages_received_total": None,
    "shardcast_bytes_received_total": None,
    "shardcast_bytes_sent_total": None,
    "shardcast_broadcast_deliveries_total": None,
    "shardcast_slow_consumer_closes_total": None,
    "shardcast_close_frames_sent_total": (
        "code", {"1000", "1001", "1002", "1003", "1007", "1008", "1009", "1011", "1013"}
    ),
    "shardcast_timer_closes_total": ("timer", {"handshake", "pong", "idle", "close", "hello",
                                                "token"}),
    "shardcast_envelope_errors_total": None,
    "shardcast_presence_notices_total": None,
    "shardcast_mesh_dropped_total": None,
    "shardcast_presence_notices_dropped_total": None,
    "shardcast_closes_total": (
        "reason",
        {"client_close", "peer_gone", "io_error", "slow_consumer", "no_hello", "unsupported_data",
         "message_too_big", "invalid_utf8", "protocol_error", "internal_error", "idle_timeout",
         "pong_timeout", "shutdown", "missed_messages", "rate_limit",
         "disconnected", "unauthorized", "room_forbidden", "token_expired", "read_only"},
    ),
    "shardcast_rate_limited_messages_total": None,
    "shardcast_history_dropped_total": ("cause", {"memory", "ttl"}),
    "shardcast_resumes_total": ("recovered", {"true", "false"}),
    "shardcast_loop_iterations_total": ("shard", SHARD_LABELS),
    "shardcast_per_ip_refused_total": None,
    "shardcast_connection_rate_refused_total": None,
    "process_cpu_seconds_total": None,
    "shardcast_tokens_total": (
        "result",
        {"ok", "missing", "too_large", "malformed", "algorithm", "signature", "expired",
         "not_yet_valid", "claims", "room"},
    ),
}


class Metrics(dict):
    """One scrape: {(sample name, frozenset of label pairs): value}, plus the families."""

    families: dict

    def get_value(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self, f"no sample {name}{labels or ''}"
        return self[key]

    def total(self, name: str) -> float:
        """Sum over every label value of a family (e.g. over shards)."""
        return sum(v for (n, _), v in self.items() if n == name)


class Scraper:
    """Scrapes over one keep-alive connection, so the scraper itself is a constant one
    connection in the gauges (reopened if the server ever closes it)."""

    def __init__(self, port: int):
        self.port = port
        self.conn = Conn.open(port)

    def close(self) -> None:
        self.conn.close()

    def raw(self):
        try:
            return self.conn.request(get("/metrics"))
        except (EOFError, ConnectionError):
            self.conn.close()
            self.conn = Conn.open(self.port)
            return self.conn.request(get("/metrics"))

    def __call__(self) -> Metrics:
        resp = self.raw()
        assert resp.status == 200
        text = resp.body.decode()
        try:
            families = list(text_string_to_metric_families(text))
        except Exception as e:  # the parser raises ValueError (and others) on bad input
            pytest.fail(f"/metrics does not parse: {e!r}\n{text}")
        metrics = Metrics()
        metrics.families = {}
        for family in families:
            metrics.families[family.name] = family
            for s in family.samples:
                key = (s.name, frozenset(s.labels.items()))
                assert key not in metrics, f"duplicate sample {key}"
                metrics[key] = s.value
        return metrics

    def until(self, check, what: str, timeout: float = SCRAPE_WAIT) -> Metrics:
        """Scrapes until `check(metrics)` is true; fails with the last scrape's view."""
        deadline = time.monotonic() + timeout
        while True:
            m = self()
            if check(m):
                return m
            if time.monotonic() >= deadline:
                raise AssertionError(f"metrics never showed {what}")
            time.sleep(0.02)

    def until_delta(self, before: Metrics, want: dict[tuple, float], timeout: float = SCRAPE_WAIT) -> Metrics:
        """Waits until every sample in `want` ({(name, labels dict as tuple): delta}) has moved
        by at least its delta since `before`, then checks each moved by exactly that."""

        def delta(m, key):
            name, labels = key
            return m.get_value(name, **dict(labels)) - before.get_value(name, **dict(labels))

        try:
            m = self.until(lambda m: all(delta(m, k) >= d for k, d in want.items()), str(want), timeout)
        except AssertionError:
            m = self()
        got = {k: delta(m, k) for k in want}
        assert got == want, f"counter deltas: got {got}, want {want}"
        return m


def key(name: str, **labels: str) -> tuple:
    return (name, tuple(labels.items()))


@pytest.fixture
def port(server):
    # A long handshake timeout: the scraper's idle keep-alive connection must outlive a test.
    return server("--handshake-timeout", "60", "--max-message", "4096").port


@pytest.fixture
def scrape(port):
    s = Scraper(port)
    yield s
    s.close()


def test_exposition_format_families_types_and_labels(scrape):
    resp = scrape.raw()
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = scrape()

    for name, labels in {**GAUGES, **COUNTERS}.items():
        is_counter = name in COUNTERS
        # The parser names a counter family without its _total suffix.
        family_name = name.removesuffix("_total") if is_counter else name
        assert family_name in m.families, f"family {name} missing; have {sorted(m.families)}"
        family = m.families[family_name]
        assert family.type == ("counter" if is_counter else "gauge"), f"{name} is {family.type}"
        assert family.documentation, f"{name} has no HELP text"
        samples = [s for s in family.samples if s.name == name]
        assert samples, f"{name} has no samples"
        if labels is None:
            assert [s.labels for s in samples] == [{}], f"{name}: {[s.labels for s in samples]}"
        else:
            label, values = labels
            seen = [s.labels for s in samples]
            assert all(set(l) == {label} for l in seen), f"{name} labels: {seen}"
            assert sorted(l[label] for l in seen) == sorted(values), f"{name} {label}s: {seen}"
        for s in samples:
            assert s.value >= 0, f"{s.name}{s.labels} = {s.value}"
            if name not in ("process_cpu_seconds_total", "process_start_time_seconds"):
                assert s.value == int(s.value), f"{s.name}{s.labels} = {s.value}"

    assert m.get_value("shardcast_shards") == expected_shards(WORKERS)
    # The _all gauges are the sums of the per-shard ones; the scraper itself is connected.
    assert m.get_value("shardcast_connections_all") == m.total("shardcast_connections") >= 1
    assert m.get_value("shardcast_websocket_sessions_all") == m.total("shardcast_websocket_sessions") == 0
    assert m.total("shardcast_messages_received_total") == 0


def test_messages_and_deliveries_count_exactly(port, scrape):
    members, messages = 3, 7
    before = scrape()

    async def scenario():
        # 3 members (dealt round-robin, so on 3 different shards) and one in another room.
        room = [await connect(port, "counted") for _ in range(members)]
        outsider = await connect(port, "other")
        try:
            sent = []
            for i in range(messages):
                payload = f"message {i}" if i % 2 else f"binary {i}".encode()
                sent.append(payload)
                await room[i % members].send(payload)
                # Every member (the sender too) gets it before the next one is sent.
                for ws in room:
                    assert await recv(ws) == payload
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(outsider.recv(), 0.2)
            return sent
        finally:
            for ws in [*room, outsider]:
                await ws.close()

    sent = run(scenario())
    payload_bytes = sum(len(p if isinstance(p, bytes) else p.encode()) for p in sent)
    after = scrape.until_delta(
        before,
        {
            key("shardcast_messages_received_total"): messages,
            key("shardcast_broadcast_deliveries_total"): messages * members,
        },
    )
    # Each message came in masked with a frame header, and left once per member.
    def moved(name: str) -> float:
        return after.get_value(name) - before.get_value(name)

    received = moved("shardcast_bytes_received_total")
    sent_bytes = moved("shardcast_bytes_sent_total")
    assert received >= payload_bytes + messages * 6
    assert sent_bytes >= (payload_bytes + messages * 2) * members
    assert after.get_value("shardcast_mesh_dropped_total") == 0
    assert after.get_value("shardcast_slow_consumer_closes_total") == 0


def test_handshake_and_http_counters(port, scrape):
    before = scrape()

    # A 101.
    async def one_member():
        async with connect(port, "hello") as ws:
            await ws.send("hi")
            assert await recv(ws) == "hi"

    run(one_member())
    # A 426 (WebSocket version 8).
    with Conn.open(port) as conn:
        assert conn.request(upgrade_request("/", version="8")).status == 426
    # A 404 for a missing asset (plain HTTP, keep-alive) and a 404 upgrade to a non-room path.
    with Conn.open(port) as conn:
        assert conn.request(get("/no-such-asset.js")).status == 404
        assert conn.request(upgrade_request("/health")).status == 404

    scrape.until_delta(
        before,
        {
            key("shardcast_handshakes_total", result="ok"): 1,
            key("shardcast_handshakes_total", result="version"): 1,
            key("shardcast_handshakes_total", result="not_found"): 1,
            key("shardcast_handshakes_total", result="bad_request"): 0,
            key("shardcast_http_responses_total", status="404"): 1,
            key("shardcast_http_responses_total", status="400"): 0,
            # The member closed (1000) itself: the server only echoed it, and echoes count too.
            key("shardcast_close_frames_sent_total", code="1000"): 1,
            key("shardcast_closes_total", reason="client_close"): 1,
        },
    )


def test_message_too_big_close_is_counted(port, scrape):
    before = scrape()

    async def too_big():
        async with connect(port, "big") as ws:
            await ws.send(b"x" * 5000)  # over --max-message 4096
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    run(too_big())
    scrape.until_delta(
        before,
        {
            key("shardcast_close_frames_sent_total", code="1009"): 1,
            key("shardcast_closes_total", reason="message_too_big"): 1,
            key("shardcast_messages_received_total"): 0,
            key("shardcast_handshakes_total", result="ok"): 1,
        },
    )


def test_gauges_follow_connects_and_disconnects(port, scrape):
    base = scrape()
    base_conns = base.get_value("shardcast_connections_all")
    assert base_conns == 1, "only the scraper is connected"
    assert base.get_value("shardcast_websocket_sessions_all") == 0

    def gauges(sessions: int, plain: int = 0):
        def check(m):
            per_shard_ok = (
                m.get_value("shardcast_connections_all") == m.total("shardcast_connections")
                and m.get_value("shardcast_websocket_sessions_all") == m.total("shardcast_websocket_sessions")
            )
            return (
                per_shard_ok
                and m.get_value("shardcast_websocket_sessions_all") == sessions
                and m.get_value("shardcast_connections_all") == base_conns + sessions + plain
            )

        return scrape.until(check, f"{sessions} sessions and {plain} plain connections")

    async def scenario():
        clients = [await connect(port, f"g{i % 2}") for i in range(6)]
        try:
            m = await asyncio.to_thread(gauges, 6)
            # Dealt round-robin over the 4 shards: balanced to within one.
            spread = [v for (n, _), v in m.items() if n == "shardcast_websocket_sessions"]
            assert max(spread) - min(spread) <= 1, spread
            # A plain HTTP connection counts as a connection, not a session.
            with Conn.open(port) as plain:
                assert plain.request(get("/health")).status == 200
                await asyncio.to_thread(gauges, 6, 1)
            await asyncio.to_thread(gauges, 6, 0)
            for ws in clients[:2]:
                await ws.close()
            await asyncio.to_thread(gauges, 4)
            # A client that vanishes without a close frame is counted out too.
            clients[2].transport.abort()
            await asyncio.to_thread(gauges, 3)
        finally:
            for ws in clients:
                await ws.close()
        await asyncio.to_thread(gauges, 0)

    run(scenario(), timeout=30)


def test_loop_iterations_increase(port, scrape):
    def per_shard(m: Metrics, name: str) -> dict[str, float]:
        return {dict(labels)["shard"]: v for (n, labels), v in m.items() if n == name}

    before = per_shard(scrape(), "shardcast_loop_iterations_total")
    assert set(before) == SHARD_LABELS

    async def touch_shards():
        # Four connections in a row: dealt round-robin, they wake all four shards.
        async with connect(port, "a") as a, connect(port, "a") as b, connect(port, "a") as c, \
                connect(port, "a") as d:
            await a.send("wake")
            for ws in (a, b, c, d):
                assert await recv(ws) == "wake"
            # Every shard that holds a connection now has turned since `before`.
            def busy_shards_turned(m):
                conns = per_shard(m, "shardcast_connections")
                turns = per_shard(m, "shardcast_loop_iterations_total")
                busy = [s for s in SHARD_LABELS if conns[s] > 0]
                return len(busy) >= min(2, len(SHARD_LABELS)) and all(turns[s] > before[s] for s in busy)

            return await asyncio.to_thread(scrape.until, busy_shards_turned, "busy shards turning")

    after = run(touch_shards())
    now = per_shard(after, "shardcast_loop_iterations_total")
    assert all(now[s] >= before[s] for s in SHARD_LABELS), "a counter went backwards"
    # And the total keeps moving as the server works.
    total = after.total("shardcast_loop_iterations_total")
    scrape.until(lambda m: m.total("shardcast_loop_iterations_total") > total, "more loop turns")


def test_rooms_open_and_the_largest_room(port, scrape):
    """Rooms with members on the node, each counted once however many shards it spans, and
    the largest one's members; both follow leaves (the census runs every second)."""

    def census(rooms: int, largest: int):
        def check(m):
            return (m.get_value("shardcast_rooms"), m.get_value("shardcast_room_members_max")) == (
                rooms,
                largest,
            )

        return scrape.until(check, f"{rooms} rooms, the largest with {largest}", timeout=10)

    async def scenario():
        await asyncio.to_thread(census, 0, 0)
        # Six in one room, dealt round-robin: the room spans every shard.
        big = [await connect(port, "big") for _ in range(6)]
        small = [await connect(port, "small") for _ in range(2)]
        try:
            await asyncio.to_thread(census, 2, 6)
            for ws in big[:4]:
                await ws.close()
            await asyncio.to_thread(census, 2, 2)
            for ws in small:
                await ws.close()
            await asyncio.to_thread(census, 1, 2)
        finally:
            for ws in big + small:
                await ws.close()
        await asyncio.to_thread(census, 0, 0)

    run(scenario(), timeout=60)


def test_process_figures_and_build_info(port, scrape):

    m = scrape()
    # Build info: the version `--version` prints, and a revision.
    info = [s for s in m.families["shardcast_build_info"].samples]
    assert len(info) == 1 and info[0].value == 1, info
    version = subprocess.run([str(BIN), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.split() == ["shardcast", info[0].labels["version"], f"({info[0].labels['revision']})"]
    assert info[0].labels["revision"], "an empty revision"

    now = time.time()
    assert now - 600 < m.get_value("process_start_time_seconds") <= now + 1
    assert m.get_value("process_resident_memory_bytes") > 1_000_000
    assert m.get_value("process_max_fds") >= m.get_value("process_open_fds") > 0
    cpu = m.get_value("process_cpu_seconds_total")

    # Every connection is a descriptor: 20 more connections, at least 20 more descriptors.
    async def scenario():
        base = m.get_value("process_open_fds")
        clients = [await connect(port, "fds") for _ in range(20)]
        try:
            await asyncio.to_thread(
                scrape.until, lambda m: m.get_value("process_open_fds") >= base + 20, "20 more descriptors"
            )
            for _ in range(200):
                await clients[0].send("x" * 1000)
            for _ in range(200):
                await recv(clients[1])
        finally:
            # At once: 18 of them never read, so each close waits out its close timeout
            # behind 200 unread messages (one after the other, 38 s).
            await asyncio.gather(*(ws.close() for ws in clients))

    run(scenario(), timeout=60)
    assert scrape().get_value("process_cpu_seconds_total") >= cpu
