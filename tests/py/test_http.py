"""Plain HTTP on the WebSocket port, checked byte by byte over raw sockets."""

from __future__ import annotations

import json
import struct
from html.parser import HTMLParser
from urllib.parse import quote

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
        # This very connection is open, so at least one is counted.
        assert health["connections"] >= 1


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


class PageParts(HTMLParser):
    """What a test reads from an HTML page: the text of elements by id, the href of links by
    id, every tag name, and all the text."""

    def __init__(self, html: str):
        super().__init__()
        self.ids: dict[str, str] = {}
        self.links: dict[str, str] = {}
        self.icons: list[tuple[str, str | None]] = []
        self.tags: set[str] = set()
        self.text = ""
        self._open: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "a" and "id" in attrs:
            self.links[attrs["id"]] = attrs.get("href", "")
        if tag == "link" and attrs.get("rel") == "icon":
            self.icons.append((attrs.get("href", ""), attrs.get("type")))
        if "id" in attrs and tag not in ("meta", "link"):
            self._open.append(attrs["id"])
            self.ids.setdefault(attrs["id"], "")
        elif tag not in ("meta", "link"):
            self._open.append("")

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        self.text += data
        for element in self._open:
            if element:
                self.ids[element] += data


BAD_ROOMS = {
    "dot": ("/bad.room", "bad.room", "/bad-room"),
    "space": ("/my%20room", "my room", "/my-room"),
    "65-characters": ("/" + "r" * 65, "r" * 65, "/" + "r" * 64),
}


@pytest.mark.parametrize("path, name, suggested", BAD_ROOMS.values(), ids=BAD_ROOMS.keys())
def test_a_bad_room_name_gets_a_page_with_the_rule_and_a_room_to_go_to(port, path, name, suggested):
    with Conn.open(port) as conn:
        resp = conn.request(get(path))
        # 404: a well-formed request for a page that does not exist (docs/operations.md).
        assert resp.status == 404
        assert resp.headers["content-type"] == "text/html; charset=utf-8"
        assert resp.headers.get("connection", "keep-alive").lower() != "close"
        page = PageParts(resp.body.decode())
        assert page.ids["name"] == name, "the name as the user typed it, percent-decoded"
        rule = " ".join(page.ids["rule"].split())
        assert "1–64 characters" in rule and "A-Z a-z" in rule and "0-9" in rule, rule
        assert "-" in rule and "_" in rule, rule
        assert page.links == {"suggestion": suggested, "lobby": "/"}
        assert "/style.css" in resp.body.decode(), "styled like the chat page"

        # The suggestion is a room: its plain GET is the chat page, on the same connection...
        resp = conn.request(get(suggested))
        assert resp.status == 200 and resp.headers["content-type"].startswith("text/html")
        assert b'id="composer"' in resp.body
    # ... and a WebSocket may join it.
    ws_connect(port, suggested).close()
    # A HEAD gets the same head without the body.
    with Conn.open(port) as conn:
        conn.send(get(path).replace(b"GET", b"HEAD", 1))
        head = conn.read_until(b"\r\n\r\n").decode()
        assert head.startswith("HTTP/1.1 404 ") and "text/html" in head
        assert conn.request(get("/health")).status == 200, "no body came after the HEAD's head"


def test_the_bad_room_page_escapes_a_hostile_path(port):
    hostile = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>&amp;"
    with Conn.open(port) as conn:
        resp = conn.request(get("/" + quote(hostile, safe="")))
    assert resp.status == 404
    body = resp.body.decode()
    page = PageParts(body)
    assert page.ids["name"] == hostile, "shown as text, exactly"
    assert "script" not in page.tags and "img" not in page.tags
    assert "<script" not in body and "<img" not in body
    assert page.links["suggestion"] == "/script-alert-1-script-img-src-x-onerror-alert-2-amp"
    assert page.links["lobby"] == "/"


def test_a_bad_room_name_with_nothing_usable_links_to_the_lobby(port):
    with Conn.open(port) as conn:
        resp = conn.request(get("/%F0%9F%98%80..."))
    assert resp.status == 404
    page = PageParts(resp.body.decode())
    assert page.ids["name"] == "😀..."
    assert page.links == {"lobby": "/"}


def test_missing_files_and_upgrades_to_bad_rooms_keep_their_plain_404(port):
    with Conn.open(port) as conn:
        for path in ["/nope.js", "/style.v2.css", "/a/b", "/missing/bad.room"]:
            resp = conn.request(get(path))
            assert resp.status == 404, path
            assert resp.headers["content-type"].startswith("text/plain"), path
    for path in ["/bad.room", "/my%20room", "/" + "r" * 65]:
        with Conn.open(port) as conn:
            resp = conn.request(upgrade_request(path))
            assert resp.status == 404, path
            assert resp.headers["content-type"].startswith("text/plain"), path


def test_the_favicon_is_served_and_may_be_cached(port):
    with Conn.open(port) as conn:
        ico = conn.request(get("/favicon.ico"))
        assert ico.status == 200
        assert ico.headers["content-type"] == "image/x-icon"
        # An ICO directory: reserved 0, type 1 (icon), at least one image.
        reserved, kind, count = struct.unpack("<HHH", ico.body[:6])
        assert (reserved, kind) == (0, 1) and count >= 1
        assert "max-age=" in ico.headers["cache-control"]

        svg = conn.request(get("/favicon.svg"))
        assert svg.status == 200
        assert svg.headers["content-type"] == "image/svg+xml"
        assert svg.body.startswith(b"<svg")
        assert "max-age=" in svg.headers["cache-control"]

        # The chat page and the bad-room page name the icon they have.
        for path in ["/", "/bad.room"]:
            page = PageParts(conn.request(get(path)).body.decode())
            assert page.icons == [("/favicon.svg", "image/svg+xml")], path
