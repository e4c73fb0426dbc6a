"""TLS: https and wss on one listener, with a certificate made for the test (trustme).

The certificate is issued for 127.0.0.1 and localhost by a throwaway CA (self-signed root);
clients trust only that CA and verify the server's name, so a passing test means the server
really presented the configured chain.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import time

import pytest

from conftest import expected_shards
import trustme
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidHandshake, InvalidMessage

from chat import recv, run
from procs import make_certificate
from wire import get, upgrade_request

HANDSHAKE_TIMEOUT = 1.0
BIG = 60 * 1000  # a 60 KB message: several TLS records, under the 64 KiB --max-message


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """(cert file, key file, CA) for 127.0.0.1/localhost."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


def client_context(ca: trustme.CA, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


@pytest.fixture
def tls_server(server, pki):
    """A TLS server with a 1 s handshake timeout, and a client SSL context that trusts it."""
    cert, key, ca = pki
    srv = server(
        "--tls-cert", str(cert), "--tls-key", str(key),
        "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
    )
    return srv.port, client_context(ca)


def wss(port: int, room: str, ctx: ssl.SSLContext, **kwargs):
    kwargs.setdefault("open_timeout", 5)
    kwargs.setdefault("close_timeout", 2)
    return ws_connect(
        f"wss://127.0.0.1:{port}/{room}",
        ssl=ctx,
        compression=None,
        max_size=None,
        proxy=None,
        **kwargs,
    )


def https_get(port: int, ctx: ssl.SSLContext, path: str) -> tuple[int, dict[str, str], bytes, str]:
    """(status, lower-cased headers, body, negotiated TLS version) of one GET over https."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, headers, body, conn.sock.version()
    finally:
        conn.close()


async def exchange(a, b, payload) -> None:
    """`a` sends `payload`; both members (sender included) receive exactly it."""
    await a.send(payload)
    for who, ws in (("sender", a), ("peer", b)):
        got = await recv(ws)
        assert type(got) is type(payload), f"{who} got {type(got).__name__}"
        assert got == payload, f"{who} got a different {len(got)}-byte message"


async def chat_both_ways(a, b, tag: str) -> None:
    await exchange(a, b, f"hello from a {tag}")
    await exchange(b, a, f"hello from b {tag}")
    await exchange(a, b, bytes(range(256)) * 3)
    await exchange(b, a, b"\x00\xff binary from b " + tag.encode())
    await exchange(a, b, bytes(i * 7 % 251 for i in range(BIG)))  # 60 KB binary
    await exchange(b, a, ("é" + "x" * 98 + "\n") * (BIG // 101))  # ~60 KB text, multi-byte UTF-8


def test_wss_members_chat_both_ways(tls_server):
    port, ctx = tls_server

    async def scenario():
        # Two members (on different shards: connections are dealt round-robin) and a
        # member of another room, who must hear nothing.
        async with wss(port, "tls-room", ctx) as a, wss(port, "tls-room", ctx) as b, \
                wss(port, "elsewhere", ctx) as other:
            await chat_both_ways(a, b, "first")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(other.recv(), 0.3)

    run(scenario())


def test_wss_burst_of_large_messages_reaches_everyone(tls_server):
    """Both members send several 60 KB messages back to back, so more than 64 KiB (rustls's
    own output buffer) waits for each recipient at once; all of it must arrive, in each
    sender's order, without either client sending anything more to unblock it."""
    port, ctx = tls_server
    burst = 4

    def message(sender: str, i: int):
        body = (f"{sender}{i}:".encode() * (BIG // 3))[:BIG]
        return body.decode() if sender == "t" else body  # one sends text, the other binary

    async def member(ws, sender: str) -> list:
        for i in range(burst):
            await ws.send(message(sender, i))
        got = []
        while len(got) < 2 * burst:
            try:
                got.append(await recv(ws, timeout=3))
            except TimeoutError:
                raise AssertionError(
                    f"member {sender} stalled after {len(got)} of {2 * burst} messages"
                ) from None
        return got

    async def scenario():
        async with wss(port, "burst", ctx) as a, wss(port, "burst", ctx) as b:
            for ws, got in zip((a, b), await asyncio.gather(member(a, "t"), member(b, "b"))):
                for sender in ("t", "b"):
                    mine = [m for m in got if m[:1] == (sender if sender == "t" else b"b")]
                    assert mine == [message(sender, i) for i in range(burst)], f"{sender}'s messages"

    run(scenario(), timeout=30)


def test_wss_message_larger_than_the_tls_output_buffer(server, pki):
    """One 200 KB message (with --max-message raised to allow it): more than rustls buffers
    at once (64 KiB), so the server must keep writing until the socket, not rustls, is full.
    Neither client sends anything after the message."""
    cert, key, ca = pki
    srv = server("--tls-cert", str(cert), "--tls-key", str(key), "--max-message", str(256 * 1024))
    ctx = client_context(ca)
    payload = bytes(i * 13 % 256 for i in range(200_000))

    async def scenario():
        async with wss(srv.port, "huge", ctx, ping_interval=None) as a, \
                wss(srv.port, "huge", ctx, ping_interval=None) as b:
            await a.send(payload)
            for who, ws in (("sender", a), ("peer", b)):
                try:
                    got = await recv(ws, timeout=3)
                except TimeoutError:
                    raise AssertionError(f"the {who} never got the whole 200 KB message") from None
                assert got == payload, who

    run(scenario())


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["1.2", "1.3"])
def test_https_health(tls_server, pki, version):
    port, _ = tls_server
    status, headers, body, negotiated = https_get(port, client_context(pki[2], version), "/health")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["shards"] == expected_shards(4)
    assert health["connections"] == 0, "the asking connection is not counted"
    assert negotiated == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


def test_https_metrics_and_chat_page(tls_server):
    port, ctx = tls_server
    status, headers, body, _ = https_get(port, ctx, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "shardcast_shards" in names
    status, headers, body, _ = https_get(port, ctx, "/some-room")
    assert status == 200 and b"<html" in body.lower()


def read_until_closed(sock: socket.socket, limit: float = 5.0) -> bytes:
    """Everything the server sends until it closes (EOF or reset). Fails if it does not
    close within `limit` seconds: the plain-text client must not be left hanging."""
    deadline = time.monotonic() + limit
    sock.settimeout(0.2)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"server neither answered nor closed within {limit} s (got {data!r})"
                ) from None
            continue
        except (ConnectionResetError, BrokenPipeError):
            return data
        if not chunk:
            return data
        data += chunk


def assert_tls_refusal(data: bytes, what: str) -> None:
    """The server may answer plain text with a TLS alert record, or just close; it must not
    answer as if it were plain HTTP."""
    assert not data.startswith(b"HTTP/"), f"{what}: a plain-text HTTP answer on the TLS port"
    if data:
        # TLS record: content type 21 (alert), version 3.x
        assert data[0] == 0x15 and data[1] == 0x03, f"{what}: not a TLS alert: {data[:16]!r}"


def test_plain_text_on_tls_port_fails_cleanly(tls_server):
    port, ctx = tls_server

    async def scenario():
        async with wss(port, "steady", ctx) as a, wss(port, "steady", ctx) as b:
            await exchange(a, b, "before the plain-text clients")

            for what, request in [
                ("plain GET /health", get("/health")),
                ("plain WebSocket handshake", upgrade_request("/steady")),
            ]:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(request)
                    data = await asyncio.to_thread(read_until_closed, sock)
                assert_tls_refusal(data, what)

            # A real ws:// client (websockets) gets an error promptly, not a hang.
            started = time.monotonic()
            with pytest.raises((InvalidMessage, InvalidHandshake, EOFError, OSError)):
                async with ws_connect(f"ws://127.0.0.1:{port}/steady", open_timeout=5, proxy=None):
                    pass
            assert time.monotonic() - started < 3, "the plain ws:// client was left hanging"

            # The wss members never noticed.
            await chat_both_ways(a, b, "after")

        # And new wss clients still get in.
        async with wss(port, "steady", ctx) as c, wss(port, "steady", ctx) as d:
            await exchange(c, d, "new members after the plain-text clients")

    run(scenario(), timeout=30)


def scrape(port: int, ctx: ssl.SSLContext) -> dict[tuple[str, tuple], float]:
    status, _, body, _ = https_get(port, ctx, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }


def test_silent_clients_are_dropped_at_handshake_timeout(tls_server):
    port, ctx = tls_server
    # One client connects and sends nothing at all (not even a ClientHello); another completes
    # the TLS handshake and then sends no request. Both must be cut off at --handshake-timeout.
    started = time.monotonic()
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                          server_hostname="127.0.0.1")
    with raw, tls:
        assert read_until_closed(raw, limit=HANDSHAKE_TIMEOUT + 4) == b""
        raw_after = time.monotonic() - started
        try:
            leftover = tls.recv(1024)  # EOF, with or without close_notify
        except (ssl.SSLEOFError, ConnectionResetError):
            leftover = b""
        tls_after = time.monotonic() - started
    assert leftover == b""
    for what, after in [("raw TCP client", raw_after), ("TLS client", tls_after)]:
        assert HANDSHAKE_TIMEOUT * 0.8 <= after <= HANDSHAKE_TIMEOUT + 3, (
            f"{what} dropped after {after:.2f} s"
        )

    # Both count as handshake timeouts (the metrics scrape is a client that does send a request).
    want = {
        ("shardcast_handshakes_total", (("result", "timeout"),)): 2,
        ("shardcast_timer_closes_total", (("timer", "handshake"),)): 2,
    }
    deadline = time.monotonic() + 5
    while True:
        got = {k: scrape(port, ctx).get(k) for k in want}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert got == want
