"""Log output with `--log-format json` (docs/operations.md, "Logs"): every stderr line is one
JSON object, each WebSocket session gets an access line when it is upgraded and one when it
closes (target `shardcast::access`, with the reason and close code), plain HTTP requests get
none, and neither message contents nor a Redis password ever reach the log.

One server sees a plain client, a `shardcast.v1` client, a slow consumer cut off with 1008, a
client that closes with 1000 and a SIGTERM; its whole log is read after it has exited.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import socket
import subprocess
import time
import uuid
from datetime import datetime

import pytest

import wire
from chat import close_received, connect, recv, run

V1 = ["shardcast.v1"]
ACCESS = "shardcast::access"
LEVELS = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"}
ACCESS_FIELDS = ("session", "peer", "room", "subprotocol")
CLOSE_INTEGERS = ("code", "duration_ms", "bytes_in", "bytes_out")
REASONS = {
    "client_close", "peer_gone", "slow_consumer", "no_hello", "unsupported_data",
    "message_too_big", "invalid_utf8", "protocol_error", "internal_error", "idle_timeout",
    "pong_timeout", "shutdown", "io_error",
}  # fmt: skip
SHUTDOWN_REASON = "server shutting down"
FLOOD_PAYLOAD = "x" * 4000


def log_records(text: str) -> list[dict]:
    """Every line of a server's stderr as a JSON object; fails on the first line that is not
    one, or that lacks `timestamp`, `level`, `target` or `fields`. Read the log once the server
    has exited: a running one may be in the middle of a line."""
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError as e:
            pytest.fail(f"stderr line {n} is not JSON ({e}): {line!r}")
        assert isinstance(record, dict), f"line {n} is not an object: {line!r}"
        assert isinstance(record.get("timestamp"), str), f"line {n}: no timestamp: {line!r}"
        datetime.fromisoformat(record["timestamp"])  # RFC 3339, e.g. 2026-12-05T08:43:08.745Z
        assert record.get("level") in LEVELS, f"line {n}: bad level: {line!r}"
        assert isinstance(record.get("target"), str) and record["target"], f"line {n}: {line!r}"
        assert isinstance(record.get("fields"), dict), f"line {n}: no fields object: {line!r}"
        for span in record.get("spans", []):
            assert isinstance(span, dict) and isinstance(span.get("name"), str), (n, line)
        records.append(record)
    return records


def access_lines(records: list[dict], message: str) -> list[dict]:
    """The `fields` of the access lines whose message is `message` ("upgrade" or "close")."""
    found = []
    for r in records:
        if r["target"] == ACCESS:
            assert r["level"] == "INFO", r
            assert r["fields"].get("message") in ("upgrade", "close"), r
            if r["fields"]["message"] == message:
                found.append(r["fields"])
    return found


def peer_of(sockname: tuple) -> str:
    host, port = sockname[:2]
    return f"{host}:{port}"


async def expect(ws, kind: str, timeout: float = 5.0) -> dict:
    """The next envelope, which must be of type `kind`."""
    message = await recv(ws, timeout)
    assert isinstance(message, str), f"expected a text envelope, got {message!r}"
    env = json.loads(message)
    assert env["type"] == kind, f"expected {kind}, got {env}"
    return env


def stop(srv, signalled: bool = False) -> None:
    """SIGTERM (unless `signalled` already) and a bounded wait for exit code 0."""
    srv.expected_exit = True
    if not signalled:
        srv.process.send_signal(signal.SIGTERM)
    try:
        code = srv.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 10 s after SIGTERM; log:\n{srv.log()[-4000:]}")
    assert code == 0, f"exit code {code} after SIGTERM; log:\n{srv.log()[-4000:]}"


def kernel_send_buffer_max() -> int:
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        return int(f.read().split()[2])


def scrape_until(srv, check, timeout: float) -> dict:
    """Scrapes /metrics until `check(metrics)` holds or `timeout` passes; the last scrape
    (shards publish their counters once per loop turn, so a scrape may trail a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        m = srv.metrics()
        if check(m) or time.monotonic() >= deadline:
            return m
        time.sleep(0.05)


CLIENTS = {  # the clients of test_json_log_and_access_lines: (room, subprotocol)
    "ann": ("room-a", "shardcast.v1"),
    "plain": ("room-a", "none"),
    "stuck": ("room-a", "none"),
    "quitter": ("room-b", "none"),
}
CLOSES = {  # and how each one ends: (reason, code)
    "stuck": ("slow_consumer", 1008),
    "quitter": ("client_close", 1000),
    "ann": ("shutdown", 1001),
    "plain": ("shutdown", 1001),
}


def check_access_lines(
    records: list[dict], peers: dict[str, str], ids: dict[str, str], sent: dict[str, int]
) -> None:
    """Exactly one upgrade and one close line per client of CLIENTS (and none for anything
    else), told apart by their peer address; `ids` holds the session ids other clients saw
    and `sent` the payload bytes the chatting ones sent."""
    # One upgrade line per upgraded client, no more (none for the HTTP requests).
    upgrades = access_lines(records, "upgrade")
    by_peer = {}
    for fields in upgrades:
        for name in ACCESS_FIELDS:
            assert isinstance(fields.get(name), str), f"upgrade line without {name}: {fields}"
        assert fields["peer"] not in by_peer, f"two upgrade lines for {fields['peer']}"
        by_peer[fields["peer"]] = fields
    assert set(by_peer) == set(peers.values()), f"upgrade lines {upgrades}, clients {peers}"
    client_at = {peer: client for client, peer in peers.items()}
    upgrade = {client_at[peer]: fields for peer, fields in by_peer.items()}
    for client, (room, subprotocol) in CLIENTS.items():
        fields = upgrade[client]
        assert (fields["room"], fields["subprotocol"]) == (room, subprotocol), (client, fields)
    for client, session in ids.items():
        assert upgrade[client]["session"] == session, (client, upgrade[client])
    assert len({f["session"] for f in upgrades}) == len(upgrades), upgrades

    # One close line per session, with the upgrade line's fields, its reason and code.
    closes = access_lines(records, "close")
    close = {}
    for fields in closes:
        assert fields.get("peer") in client_at, f"close line for an unknown peer: {fields}"
        client = client_at[fields["peer"]]
        assert client not in close, f"two close lines for {client}: {close[client]}, {fields}"
        close[client] = fields
        for name in ACCESS_FIELDS:
            assert fields.get(name) == upgrade[client][name], (name, fields, upgrade[client])
        assert fields.get("reason") in REASONS, fields
        for name in CLOSE_INTEGERS:
            value = fields.get(name)
            assert isinstance(value, int) and not isinstance(value, bool), (name, fields)
            assert value >= 0, (name, fields)
    assert set(close) == set(peers), f"close lines {closes}, clients {peers}"
    reasons = {client: (fields["reason"], fields["code"]) for client, fields in close.items()}
    assert reasons == CLOSES, reasons
    for client in ("ann", "plain", "quitter"):
        assert close[client]["bytes_in"] >= sent[client] > 0, (client, close[client])
        assert close[client]["bytes_out"] > 0, (client, close[client])
    assert close["stuck"]["bytes_out"] > 0, close["stuck"]


def test_json_log_and_access_lines(server, monkeypatch):
    # --log-level must decide (RUST_LOG would win); debug, so that session lines and library
    # records are in the log too and every one of them must be JSON.
    monkeypatch.delenv("RUST_LOG", raising=False)
    srv = server(
        "--log-format", "json", "--log-level", "debug",
        "--max-message", "8192", "--max-buffered", "65536",
        workers=2,
    )  # fmt: skip
    token = uuid.uuid4().hex  # in every chat message: must never reach the log
    peers: dict[str, str] = {}  # client -> its address as the server sees it
    ids: dict[str, str] = {}  # client -> its session id, as other clients see it
    sent: dict[str, int] = {}  # client -> payload bytes it sent

    async def main():
        async with connect(srv.port, "room-a?nick=ann", subprotocols=V1) as ann:
            assert ann.subprotocol == "shardcast.v1"
            peers["ann"] = peer_of(ann.local_address)
            welcome = await expect(ann, "welcome")
            assert welcome["room"] == "room-a"
            ids["ann"] = welcome["id"]

            # 1. A plain client in the same room sends a message.
            async with connect(srv.port, "room-a") as plain:
                assert plain.subprotocol is None
                peers["plain"] = peer_of(plain.local_address)
                ids["plain"] = (await expect(ann, "join"))["id"]
                text = f"plain says {token}"
                await plain.send(text)
                sent["plain"] = len(text)
                assert await recv(plain) == text
                assert (await expect(ann, "message"))["text"] == text

                # 2. The v1 client chats.
                text = f"ann says {token}"
                await ann.send(json.dumps({"type": "message", "text": text}))
                sent["ann"] = len(text)
                assert await recv(plain) == f"ann: {text}"
                assert (await expect(ann, "message"))["text"] == text

                # 3. A raw client joins room-a and never reads: a slow consumer.
                stuck = wire.Conn.open(srv.port, rcvbuf=4096)
                try:
                    resp = stuck.request(wire.upgrade_request("/room-a"))
                    assert resp.status == 101, resp
                    peers["stuck"] = peer_of(stuck.sock.getsockname())
                    ids["stuck"] = (await expect(ann, "join"))["id"]

                    # The kernel takes up to tcp_wmem's maximum into the stuck socket's send
                    # buffer before --max-buffered counts at all: flood twice beyond that,
                    # stopping once ann sees the stuck one leave. Each message waits until both
                    # readers have it (they may be on different shards), so that neither ever
                    # falls behind.
                    per_client = kernel_send_buffer_max() + 4096 + 65536
                    count = max(3000, math.ceil(2 * per_client / len(FLOOD_PAYLOAD)))
                    leave = None
                    for _ in range(count):
                        await plain.send(FLOOD_PAYLOAD)
                        sent["plain"] += len(FLOOD_PAYLOAD)
                        assert await recv(plain, 10) == FLOOD_PAYLOAD
                        while (env := json.loads(await recv(ann, 10)))["type"] != "message":
                            assert env["type"] == "leave", env
                            leave = env
                        if leave is not None:
                            break
                    assert leave is not None, f"not cut off after {count} messages"
                    assert leave["id"] == ids["stuck"], leave

                    # What the stuck client was sent ends with close 1008, then EOF.
                    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                    rest = await asyncio.to_thread(wire.read_to_eof, stuck.sock, 30)
                    data = bytes(stuck.buf) + rest
                    assert data.endswith(wire.close_frame(1008, "slow consumer")), data[-40:]
                finally:
                    stuck.close()

                # 4. A client in another room chats, then closes normally (1000).
                async with connect(srv.port, "room-b") as quitter:
                    peers["quitter"] = peer_of(quitter.local_address)
                    text = f"bye {token}"
                    await quitter.send(text)
                    sent["quitter"] = len(text)
                    assert await recv(quitter) == text
                    await quitter.close(1000)
                    assert quitter.protocol.close_rcvd.code == 1000  # the server's echo

                # Only plain and ann are left: the other two are fully closed, not merely
                # closing, so shutdown cannot overtake their close lines.
                await asyncio.to_thread(
                    wire.wait_for,
                    lambda: srv.metrics().get("shardcast_websocket_sessions_all") == 2,
                    10,
                    "2 open sessions after the slow consumer and the quitter left",
                )

                # Plain HTTP (the page, /health; /metrics above) gets no access line.
                with wire.Conn.open(srv.port) as http:
                    assert http.request(wire.get("/room-a")).status == 200
                    assert http.request(wire.get("/health")).status == 200

                metrics = await asyncio.to_thread(
                    scrape_until,
                    srv,
                    lambda m: m.get('shardcast_closes_total{reason="slow_consumer"}', 0) >= 1
                    and m.get('shardcast_closes_total{reason="client_close"}', 0) >= 1,
                    5,
                )

                # 5. SIGTERM: the two left get 1001, and the server exits 0.
                srv.expected_exit = True
                srv.process.send_signal(signal.SIGTERM)
                results = await asyncio.gather(
                    close_received(ann, 10), close_received(plain, 10)
                )
                assert results == [(1001, SHUTDOWN_REASON)] * 2, results
                return metrics

    metrics = run(main(), timeout=50)
    stop(srv, signalled=True)

    text = srv.log()
    records = log_records(text)
    assert records, "the server logged nothing at all"
    assert token not in text, "message contents reached the log"
    assert FLOOD_PAYLOAD[:100] not in text, "message contents reached the log"

    check_access_lines(records, peers, ids, sent)

    # The same reasons, counted.
    for reason in ("slow_consumer", "client_close"):
        assert metrics.get(f'shardcast_closes_total{{reason="{reason}"}}', 0) >= 1, (
            reason,
            {k: v for k, v in metrics.items() if k.startswith("shardcast_closes_total")},
        )


def test_redis_password_never_reaches_the_log(server, monkeypatch):
    """Nothing listens on 127.0.0.1:1: the server runs on while the bridge retries, logging
    each failure, and the password never appears, at debug level included."""
    monkeypatch.delenv("RUST_LOG", raising=False)
    srv = server(
        "--log-format", "json", "--log-level", "debug", "--redis", "redis://:s3cret@127.0.0.1:1",
        workers=2,
    )  # fmt: skip
    time.sleep(2)  # several reconnect attempts (backoff 100 ms doubling to 2 s)
    assert srv.process.poll() is None, f"server exited; log:\n{srv.log()}"
    assert wire.metrics(srv.port).get("shardcast_cluster_up") == 0
    stop(srv)  # so that the log read below ends with a complete line
    text = srv.log()
    assert log_records(text), "the server logged nothing at all"
    assert "s3cret" not in text, f"the Redis password reached the log:\n{text}"


def test_rust_log_wins_with_per_target_filters(server, monkeypatch):
    """RUST_LOG overrides --log-level: `warn,shardcast::access=info` keeps the access lines
    and drops every other info and debug line."""
    monkeypatch.setenv("RUST_LOG", "warn,shardcast::access=info")
    srv = server("--log-format", "json", "--log-level", "debug", workers=2)
    peer = {}

    async def main():
        async with connect(srv.port, "filtered") as ws:
            peer["ws"] = peer_of(ws.local_address)
            await ws.send("hi")
            assert await recv(ws) == "hi"

    run(main())
    wire.wait_for(
        lambda: srv.metrics().get("shardcast_websocket_sessions_all") == 0,
        10,
        "the session to be closed",
    )
    stop(srv)
    records = log_records(srv.log())
    others = [r for r in records if r["target"] != ACCESS and r["level"] not in ("WARN", "ERROR")]
    assert not others, f"lines RUST_LOG filters out: {others}"
    assert [f["peer"] for f in access_lines(records, "upgrade")] == [peer["ws"]]
    closes = access_lines(records, "close")
    assert [(f["peer"], f["reason"]) for f in closes] == [(peer["ws"], "client_close")], closes
