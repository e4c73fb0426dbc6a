"""Plain HTTP on the WebSocket port, checked byte by byte over raw sockets."""

from __future__ import annotations

import json

import pytest

from chat import assert_server_survives
from conftest import expected_shards
from wire import Conn, get, upgrade_request, ws_connect


@pytest.fixture
def port(server):
    return server().port


def test_chat_page_and_keep_alive(port):
    with Conn.open(port) as conn:
        # Several requests on one HTTP/1.1 connection, a 404 among them, are all answered.
        for path in ["/", "/some-room_1", "/nope.js", "/a/b", "/"]:
            resp = conn.request(get(path))
            if path in ("/nope.js", "/a/b"):
                assert resp.status == 404, path
            else:
                assert resp.status == 200, path
                assert resp.headers["content-type"].startswith("text/html")
                assert b"<html" in resp.body.lower()
            assert resp.headers.get("connection", "keep-alive").lower() != "close"


def test_pipelined_requests_are_answered_in_order(port):
    with Conn.open(port) as conn:
        conn.send(get("/health") + get("/nope.js") + get("/"))
        assert [conn.read_response().status for _ in range(3)] == [200, 404, 200]


def test_health_reports_shards_and_connections(port):
    with Conn.open(port) as conn:
        resp = conn.request(get("/health"))
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("application/json")
        health = json.loads(resp.body)
        assert health["status"] == "ok"
        assert health["shards"] == expected_shards(4)
        assert type(health["connections"]) is int
        # Only this connection is open, and /health does not count the one asking.
        assert health["connections"] == 0
        with ws_connect(port, "/r"), ws_connect(port, "/r"):
            health = json.loads(conn.request(get("/health")).body)
            assert health["connections"] == 2


@pytest.mark.parametrize(
    "request_bytes",
    [get("/health", "Connection: close"), get("/", version="1.0")],
    ids=["connection-close", "http-1.0"],
)
def test_connection_ends_when_the_client_asks(port, request_bytes):
    with Conn.open(port) as conn:
        resp = conn.request(request_bytes)
        assert resp.status == 200
        assert resp.headers["connection"].lower() == "close"
        assert conn.reads_eof()


BIG_HEAD = get("/", *(f"X-Filler-{i}: {'a' * 1000}" for i in range(100)))  # ~100 KiB

ERRORS = {
    "post": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    "delete": (b"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "garbage-request-line": (b"THIS IS NOT HTTP\r\n\r\n", 400),
    "binary-garbage": (b"\x01\x02 garbage\r\n\r\n", 400),
    "bad-ws-key": (upgrade_request("/", key="c2hvcnQ="), 400),  # base64 of 5 bytes, not 16
    "missing-ws-key": (upgrade_request("/", key=""), 400),
    "ws-version-8": (upgrade_request("/", version="8"), 426),
    "huge-head": (BIG_HEAD, 431),
}


@pytest.mark.parametrize("request_bytes, status", ERRORS.values(), ids=ERRORS.keys())
def test_error_answers_close_the_connection(port, request_bytes, status):
    with Conn.open(port) as conn:
        resp = conn.request(request_bytes)
        assert resp.status == status
        assert resp.headers["connection"].lower() == "close"
        if status == 405:
            allowed = {m.strip() for m in resp.headers["allow"].split(",")}
            assert "GET" in allowed
        if status == 426:
            assert resp.headers["sec-websocket-version"] == "13"
        assert conn.reads_eof(), "the server kept the connection open after an error"
    assert_server_survives(port)


def test_websocket_upgrade_on_unknown_path_is_404(port):
    with Conn.open(port) as conn:
        resp = conn.request(upgrade_request("/a/b"))
        assert resp.status == 404
