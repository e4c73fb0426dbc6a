"""Byte-level HTTP and WebSocket helpers for raw-socket tests.

The `websockets` library refuses to produce broken frames (bad UTF-8, unmasked client
frames, reserved bits), and we want to see the server's exact HTTP answers, so these
tests speak the wire format themselves. Every read is bounded by the socket timeout.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import resource
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

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
    def open(
        cls,
        port: int,
        host: str = "127.0.0.1",
        *,
        source: str | None = None,
        rcvbuf: int | None = None,
    ) -> "Conn":
        """Connects to `host:port`, from the loopback address `source` if given (any
        127.x.y.z works on Linux without configuration), with SO_RCVBUF set to `rcvbuf`
        before connecting if given (so that it also bounds the advertised window)."""
        return cls(open_socket(port, host, source=source, rcvbuf=rcvbuf))

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


def open_socket(
    port: int,
    host: str = "127.0.0.1",
    *,
    source: str | None = None,
    rcvbuf: int | None = None,
    timeout: float | None = TIMEOUT,
) -> socket.socket:
    """A connected TCP socket (see `Conn.open`); `timeout=None` connects without blocking
    (the connect may still be in progress when this returns)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            sock.bind((source, 0))
        if timeout is None:
            sock.setblocking(False)
            err = sock.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
        else:
            sock.settimeout(timeout)
            sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def peer_closed(sock: socket.socket) -> bool:
    """Without reading or waiting: has the peer ended its side of `sock` (FIN or reset),
    whether or not unread data is still in front of the end?"""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)
    return bool(poller.poll(0))


def read_to_eof(sock: socket.socket, timeout: float) -> bytes:
    """Everything the peer sends until it closes (EOF, or a reset after its data); fails if
    it has not closed within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"still open after {timeout} s ({len(data)} bytes read)")
            sock.settimeout(left)
            try:
                chunk = sock.recv(1 << 20)
            except socket.timeout:
                continue
            if not chunk:
                return bytes(data)
            data += chunk
    except ConnectionResetError:
        return bytes(data)


def get(path: str, *extra: str, version: str = "1.1") -> bytes:
    """A GET request head with a Host header and any extra header lines."""
    lines = [f"GET {path} HTTP/{version}", "Host: 127.0.0.1", *extra, "", ""]
    return "\r\n".join(lines).encode()


def upgrade_request(
    path: str = "/", key: str | None = None, version: str = "13", *extra: str
) -> bytes:
    """A WebSocket upgrade request; key=None makes a fresh valid key, key="" leaves it out;
    `extra` header lines (e.g. "Origin: https://a.example") are added at the end."""
    key = base64.b64encode(os.urandom(16)).decode() if key is None else key
    lines = ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Version: {version}"]
    if key:
        lines.append(f"Sec-WebSocket-Key: {key}")
    return get(path, *lines, *extra)


def accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_connect(port: int, path: str = "/", **open_args) -> Conn:
    """Does the opening handshake by hand and returns the connection, ready for frames.
    `open_args` go to `Conn.open` (source, rcvbuf)."""
    key = base64.b64encode(os.urandom(16)).decode()
    conn = Conn.open(port, **open_args)
    try:
        resp = conn.request(upgrade_request(path, key))
        assert resp.status == 101, resp
        assert resp.headers["sec-websocket-accept"] == accept_value(key)
    except BaseException:
        conn.close()
        raise
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


def read_close(conn: Conn) -> tuple[int, str]:
    """Skips data frames until the server's close frame; returns its code and reason."""
    while True:
        _, opcode, payload = read_frame(conn)
        if opcode == OP_CLOSE:
            return parse_close(payload)


def read_close_code(conn: Conn) -> int:
    """Skips data frames until the server's close frame and returns its status code."""
    return read_close(conn)[0]


def parse_close(payload: bytes) -> tuple[int, str]:
    """Code and reason of a close frame's payload (the reason must be UTF-8, RFC 6455 §5.5.1)."""
    assert len(payload) >= 2, f"close frame without a code: {payload!r}"
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8")


def close_frame(code: int, reason: str) -> bytes:
    """The exact bytes of an unmasked server close frame (reason under 124 bytes)."""
    body = struct.pack("!H", code) + reason.encode()
    assert len(body) <= 125
    return bytes([0x80 | OP_CLOSE, len(body)]) + body


def metrics(port: int, source: str = "127.0.0.1") -> dict[str, float]:
    """GET /metrics, as {"name{labels}": value} exactly as the lines spell them. `source` is
    the local address to connect from (mind per-address limits)."""
    with Conn.open(port, source=source) as conn:
        resp = conn.request(get("/metrics", "Connection: close"))
    assert resp.status == 200, resp
    values = {}
    for line in resp.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def raise_nofile() -> int:
    """Raises this process's soft RLIMIT_NOFILE to the hard limit (tests that hold hundreds
    of sockets need it); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02
):
    """Polls `predicate` until it returns something truthy (which is returned); fails with
    `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last: {value!r})")
        time.sleep(interval)
