"""Every kind of bad input the server must refuse, with its exact answer, as one table.

Each case runs on its own server: an HTTP case sends its bytes on a fresh connection and
expects one exact status line (plus the headers that status requires) and then the end of the
connection; a WebSocket case upgrades by hand, sends its bytes, and expects the server's very
next frame to be a close frame with one exact code (and a UTF-8 reason), then the end of the
connection. After every case a fresh `websockets` pair still connects and chats on the same
server: a bad client never costs anyone else their service.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from chat import assert_server_survives
from wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Conn,
    encode_frame,
    get,
    parse_close,
    read_frame,
    upgrade_request,
    ws_connect,
)

STATUS_LINES = {
    400: "HTTP/1.1 400 Bad Request",
    405: "HTTP/1.1 405 Method Not Allowed",
    426: "HTTP/1.1 426 Upgrade Required",
    431: "HTTP/1.1 431 Request Header Fields Too Large",
}


@dataclass
class Case:
    data: bytes
    expect: int  # an HTTP status (>= 400 and < 1000) or a close code (>= 1000)
    args: tuple[str, ...] = ()  # extra server flags

    @property
    def is_http(self) -> bool:
        return self.expect < 1000


def masked_header(first: int, length: int) -> bytes:
    """A masked client frame header announcing `length` payload bytes (64-bit length form),
    with no payload after it."""
    return bytes([first, 0x80 | 127]) + struct.pack("!Q", length) + b"\x11\x22\x33\x44"


def upgrade_with(*extra: str, method: str = "GET") -> bytes:
    raw = upgrade_request("/bad", None, "13", *extra)
    return raw.replace(b"GET ", method.encode() + b" ", 1)


def upgrade_of_size(size: int) -> bytes:
    """A valid upgrade request head of exactly `size` bytes (padded with one header)."""
    base = upgrade_with("X-Pad: ")
    assert len(base) <= size
    return upgrade_with("X-Pad: " + "p" * (size - len(base)))


def upgrade_with_headers(count: int) -> bytes:
    """A valid upgrade request with exactly `count` header lines in all."""
    base = upgrade_with()
    present = base.count(b"\r\n") - 2  # less the request line and the empty line
    return upgrade_with(*(f"X-Extra-{i}: {i}" for i in range(count - present)))


CLIENT_HELLO = bytes.fromhex("160301 00c8 010000c4 0303") + bytes(32) + b"\x00\x00\x02\x13\x01"
EURO = "€".encode()  # e2 82 ac

CASES: dict[str, Case] = {
    # ---- HTTP: answered with one status, then the connection is closed. ----
    "request-line-without-version": Case(b"GET /\r\nHost: x\r\n\r\n", 400),
    "request-line-garbage": Case(b"THIS IS NOT HTTP\r\n\r\n", 400),
    # A TLS ClientHello on the plain port is not HTTP either.
    "tls-client-hello": Case(CLIENT_HELLO, 400),
    "ws-key-missing": Case(upgrade_request("/bad", key=""), 400),
    "ws-key-5-bytes": Case(upgrade_request("/bad", key="c2hvcnQ="), 400),
    "ws-key-not-base64": Case(upgrade_request("/bad", key="!" * 22 + "=="), 400),
    "ws-key-twice": Case(upgrade_with("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), 400),
    "ws-version-8": Case(upgrade_request("/bad", version="8"), 426),
    "ws-version-missing": Case(
        upgrade_request("/bad").replace(b"Sec-WebSocket-Version: 13\r\n", b""), 426
    ),
    "upgrade-without-host": Case(upgrade_with().replace(b"Host: 127.0.0.1\r\n", b""), 400),
    "upgrade-without-connection-upgrade": Case(
        upgrade_with().replace(b"Connection: Upgrade", b"Connection: keep-alive"), 400
    ),
    "upgrade-over-http-1.0": Case(upgrade_with().replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400),
    "upgrade-with-body": Case(upgrade_with("Content-Length: 5") + b"hello", 400),
    "upgrade-with-post": Case(upgrade_with(method="POST"), 405),
    "upgrade-with-head": Case(upgrade_with(method="HEAD"), 405),
    "upgrade-with-put": Case(upgrade_with(method="PUT"), 405),
    "headers-100KiB": Case(get("/", *(f"X-Filler-{i}: {'a' * 1000}" for i in range(100))), 431),
    "headers-65-default-limit": Case(upgrade_with_headers(65), 431),
    "head-over-max-request-head": Case(
        upgrade_of_size(1025), 431, ("--max-request-head", "1024")
    ),
    "headers-over-max-headers": Case(upgrade_with_headers(9), 431, ("--max-headers", "8")),
    # ---- WebSocket: the next frame is a close frame with this code. ----
    "unmasked-frame": Case(encode_frame(OP_TEXT, b"hello", mask=False), 1002),
    "reserved-opcode-3": Case(encode_frame(0x3, b"x"), 1002),
    "reserved-opcode-7": Case(encode_frame(0x7, b""), 1002),
    "reserved-control-opcode-b": Case(encode_frame(0xB, b""), 1002),
    "reserved-control-opcode-f": Case(encode_frame(0xF, b"x"), 1002),
    "rsv1": Case(encode_frame(OP_TEXT, b"x", rsv=0b100), 1002),
    "rsv2": Case(encode_frame(OP_BINARY, b"x", rsv=0b010), 1002),
    "rsv3": Case(encode_frame(OP_TEXT, b"x", rsv=0b001), 1002),
    "ping-126-bytes": Case(encode_frame(OP_PING, b"p" * 126), 1002),
    "pong-126-bytes": Case(encode_frame(OP_PONG, b"p" * 126), 1002),
    "close-126-bytes": Case(encode_frame(OP_CLOSE, struct.pack("!H", 1000) + b"r" * 124), 1002),
    "fragmented-ping": Case(encode_frame(OP_PING, b"p", fin=False), 1002),
    "fragmented-close": Case(encode_frame(OP_CLOSE, struct.pack("!H", 1000), fin=False), 1002),
    "continuation-without-start": Case(encode_frame(OP_CONT, b"hello"), 1002),
    "new-message-inside-fragmented": Case(
        encode_frame(OP_TEXT, b"a", fin=False) + encode_frame(OP_TEXT, b"b"), 1002
    ),
    "close-payload-1-byte": Case(encode_frame(OP_CLOSE, b"\x03"), 1002),
    "close-code-1005": Case(encode_frame(OP_CLOSE, struct.pack("!H", 1005)), 1002),
    "close-code-999": Case(encode_frame(OP_CLOSE, struct.pack("!H", 999)), 1002),
    "oversize-message": Case(encode_frame(OP_BINARY, b"x" * 4097), 1009, ("--max-message", "4096")),
    "oversize-fragmented": Case(
        encode_frame(OP_TEXT, b"x" * 4000, fin=False) + encode_frame(OP_CONT, b"x" * 97),
        1009,
        ("--max-message", "4096"),
    ),
    "oversize-default-64KiB": Case(encode_frame(OP_BINARY, b"x" * 65537), 1009),
    # Headers alone: the server must refuse on the announced length, not wait for (or
    # allocate) the payload.
    "announces-1GiB": Case(masked_header(0x82, 1 << 30), 1009),
    "announces-2^63": Case(masked_header(0x82, 1 << 63), 1009),
    "invalid-utf8-text": Case(encode_frame(OP_TEXT, b"\xff\xfe"), 1007),
    "invalid-utf8-overlong": Case(encode_frame(OP_TEXT, b"\xc0\xaf"), 1007),
    "invalid-utf8-surrogate": Case(encode_frame(OP_TEXT, b"\xed\xa0\x80"), 1007),
    "utf8-truncated-at-end": Case(encode_frame(OP_TEXT, EURO[:2]), 1007),
    "invalid-utf8-across-fragments": Case(
        encode_frame(OP_TEXT, EURO[:2], fin=False) + encode_frame(OP_CONT, b"A"), 1007
    ),
    "invalid-utf8-close-reason": Case(
        encode_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye \xff"), 1007
    ),
}


def check_http_answer(port: int, case: Case) -> None:
    with Conn.open(port) as conn:
        conn.send(case.data)
        resp = conn.read_response()
        got = f"HTTP/1.1 {resp.status} {resp.reason}"
        assert got == STATUS_LINES[case.expect], f"sent {case.data[:80]!r}..."
        assert resp.headers["connection"].lower() == "close"
        if case.expect == 426:
            assert resp.headers["sec-websocket-version"] == "13"
        if case.expect == 405:
            assert "GET" in {m.strip() for m in resp.headers["allow"].split(",")}
        assert "sec-websocket-accept" not in resp.headers
        assert conn.reads_eof(), "the server kept the connection open after its answer"


def check_close_frame(port: int, case: Case) -> None:
    with ws_connect(port, "/bad") as conn:
        conn.send(case.data)
        # Nothing else is due on a fresh session (pings come after 30 s), so the very next
        # frame must be the close frame.
        fin, opcode, payload = read_frame(conn)
        assert (fin, opcode) == (True, OP_CLOSE), f"expected a close frame, got {opcode:#x}"
        code, reason = parse_close(payload)
        assert code == case.expect, f"close code {code} ({reason!r}), expected {case.expect}"
        # After its close frame the server ends the TCP connection.
        assert conn.reads_eof(), "no EOF after the close frame"


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_gets_exact_answer(server, case):
    srv = server(*case.args)
    if case.is_http:
        check_http_answer(srv.port, case)
    else:
        check_close_frame(srv.port, case)
    assert_server_survives(srv.port)


@pytest.mark.parametrize(
    "args, at_limit, over_limit",
    [
        (("--max-request-head", "1024"), upgrade_of_size(1024), upgrade_of_size(1025)),
        ((), upgrade_of_size(8192), upgrade_of_size(8193)),
        (("--max-headers", "8"), upgrade_with_headers(8), upgrade_with_headers(9)),
        ((), upgrade_with_headers(64), upgrade_with_headers(65)),
    ],
    ids=["head-1024", "head-default-8192", "headers-8", "headers-default-64"],
)
def test_head_limits_are_exact(server, args, at_limit, over_limit):
    # The limits are inclusive: a head exactly at a limit is served, one byte or one header
    # more is refused.
    srv = server(*args)
    with Conn.open(srv.port) as conn:
        assert conn.request(at_limit).status == 101
    with Conn.open(srv.port) as conn:
        assert conn.request(over_limit).status == 431
        assert conn.reads_eof()
    assert_server_survives(srv.port)
