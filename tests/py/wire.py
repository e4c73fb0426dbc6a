"""Byte-level HTTP and WebSocket helpers for raw-socket tests.

The `websockets` library refuses to produce broken frames (bad UTF-8, unmasked client
frames, reserved bits), and we want to see the server's exact HTTP answers, so these
tests speak the wire format themselves. Every read is bounded by the socket timeout.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
from dataclasses import dataclass, field

TIMEOUT = 5.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class Conn:
    """A TCP connection with a read buffer, so pipelined/keep-alive reads don't lose bytes."""

    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)

    @classmethod
    def open(cls, port: int, host: str = "127.0.0.1") -> "Conn":
        return cls(socket.create_connection((host, port), timeout=TIMEOUT))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        while (i := self.buf.find(marker)) < 0:
            if len(self.buf) > limit:
                raise ValueError(f"no {marker!r} within {limit} bytes")
            self._fill()
        out = bytes(self.buf[: i + len(marker)])
        del self.buf[: i + len(marker)]
        return out

    def read_response(self) -> Response:
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *lines = head[:-4].split("\r\n")
        version, status, reason = (status_line.split(" ", 2) + [""])[:3]
        assert version == "HTTP/1.1", status_line
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self.read_exact(int(headers.get("content-length", "0")))
        return Response(int(status), reason, headers, body)

    def request(self, raw: bytes) -> Response:
        self.send(raw)
        return self.read_response()

    def reads_eof(self) -> bool:
        """True once the server closed its side: EOF (or a reset) after any leftovers."""
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def get(path: str, *extra: str, version: str = "1.1") -> bytes:
    """A GET request head with a Host header and any extra header lines."""
    lines = [f"GET {path} HTTP/{version}", "Host: 127.0.0.1", *extra, "", ""]
    return "\r\n".join(lines).encode()


def upgrade_request(path: str = "/", key: str | None = None, version: str = "13") -> bytes:
    """A WebSocket upgrade request; key=None makes a fresh valid key, key="" leaves it out."""
    key = base64.b64encode(os.urandom(16)).decode() if key is None else key
    extra = ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Version: {version}"]
    if key:
        extra.append(f"Sec-WebSocket-Key: {key}")
    return get(path, *extra)


def accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_connect(port: int, path: str = "/") -> Conn:
    """Does the opening handshake by hand and returns the connection, ready for frames."""
    key = base64.b64encode(os.urandom(16)).decode()
    conn = Conn.open(port)
    resp = conn.request(upgrade_request(path, key))
    assert resp.status == 101, resp
    assert resp.headers["sec-websocket-accept"] == accept_value(key)
    return conn


def encode_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One frame; `rsv` is the 3 reserved bits (RSV1 = 0b100)."""
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", first, mask_bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


def read_frame(conn: Conn) -> tuple[bool, int, bytes]:
    """Reads one server frame: (fin, opcode, payload). Server frames must be unmasked."""
    b0, b1 = conn.read_exact(2)
    assert b0 & 0x70 == 0, f"server set reserved bits: {b0:#x}"
    assert b1 & 0x80 == 0, "server frames must not be masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", conn.read_exact(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", conn.read_exact(8))
    return bool(b0 & 0x80), b0 & 0x0F, conn.read_exact(n)


def read_close_code(conn: Conn) -> int:
    """Skips data frames until the server's close frame and returns its status code."""
    while True:
        _, opcode, payload = read_frame(conn)
        if opcode == OP_CLOSE:
            assert len(payload) >= 2, f"close frame without a code: {payload!r}"
            return struct.unpack("!H", payload[:2])[0]
