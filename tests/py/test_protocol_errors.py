"""Frames written by hand: broken ones no client library will send (the server answers with
the right close code, ends the connection, and keeps serving everyone else), and control and
continuation frames placed exactly where the RFC allows them."""

from __future__ import annotations

import struct

import pytest

from chat import assert_server_survives
from wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    encode_frame,
    read_close_code,
    read_frame,
    ws_connect,
)

CASES = {
    # Text must be UTF-8 (RFC 6455 §8.1): 1007.
    "invalid-utf8": (encode_frame(OP_TEXT, b"\xff\xfe"), 1007),
    # A UTF-8 sequence cut short at the end of a (complete) message: 1007 as well.
    "truncated-utf8": (encode_frame(OP_TEXT, "€".encode()[:2]), 1007),
    # Clients must mask every frame (§5.1): 1002.
    "unmasked": (encode_frame(OP_TEXT, b"hello", mask=False), 1002),
    # RSV1 without a negotiated extension (§5.2): 1002.
    "rsv1": (encode_frame(OP_TEXT, b"hello", rsv=0b100), 1002),
    # A continuation frame with no message to continue: 1002.
    "stray-continuation": (encode_frame(OP_CONT, b"hello"), 1002),
}


@pytest.mark.parametrize("frame, code", CASES.values(), ids=CASES.keys())
def test_bad_frame_gets_close_code(server, frame, code):
    srv = server()
    with ws_connect(srv.port, "/bad") as conn:
        conn.send(frame)
        assert read_close_code(conn) == code
        # After its close frame the server ends the TCP connection.
        assert conn.reads_eof()
    assert_server_survives(srv.port)


def test_utf8_may_be_split_across_fragments(server):
    # Validity is judged on the whole message: "€" cut between two frames is fine.
    srv = server()
    euro = "€".encode()
    with ws_connect(srv.port, "/split") as conn:
        conn.send(encode_frame(OP_TEXT, b"price: " + euro[:1], fin=False))
        conn.send(encode_frame(OP_CONT, euro[1:] + b"5"))
        assert read_frame(conn) == (True, OP_TEXT, "price: €5".encode())
        # And a large binary message written as many small frames comes back as one.
        parts = [bytes([i]) * 1000 for i in range(50)]
        for i, part in enumerate(parts):
            opcode = OP_BINARY if i == 0 else OP_CONT
            conn.send(encode_frame(opcode, part, fin=i == len(parts) - 1))
        assert read_frame(conn) == (True, OP_BINARY, b"".join(parts))


def test_ping_is_answered_and_close_is_echoed(server):
    srv = server()
    with ws_connect(srv.port, "/ctl") as conn:
        conn.send(encode_frame(OP_PING, b"are you there"))
        assert read_frame(conn) == (True, OP_PONG, b"are you there")
        # A ping between the fragments of a message must not disturb it (§5.4).
        conn.send(encode_frame(OP_TEXT, b"in ", fin=False))
        conn.send(encode_frame(OP_PING, b"mid"))
        conn.send(encode_frame(OP_CONT, b"between"))
        assert read_frame(conn) == (True, OP_PONG, b"mid")
        assert read_frame(conn) == (True, OP_TEXT, b"in between")
        # A normal close is answered with a close frame, then the server ends the connection.
        conn.send(encode_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye"))
        assert read_close_code(conn) == 1000
        assert conn.reads_eof()
