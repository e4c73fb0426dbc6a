"""The server API (docs/api.md): publish, broadcast, rooms, presence, history and disconnect,
driven with `curl` and Python `requests`, with `websockets` clients as the room's members;
its refusals (401, 400, 404, 405, 413), which leave WebSocket traffic undisturbed; and where
it listens (`/api/` on the main port, or only on `--api-listen`).

Every test runs in the threading model under test (SHARDCAST_MODEL).
"""

from __future__ import annotations

import asyncio
import base64
import json
import select
import subprocess

import pytest
import requests
from websockets.exceptions import ConnectionClosed

import wire
from chat import assert_quiet, connect, expect, next_message, recv, run, v1
from conftest import BIN, MODEL, expected_shards

KEY = "s3cret-api-key"
WORKERS = 4
HTTP_TIMEOUT = 10.0


class Api:
    """The API at `base` (http://127.0.0.1:PORT), with the key unless told otherwise."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body=None, *, key: str | None = KEY,
             data: bytes | None = None, headers: dict | None = None) -> requests.Response:
        headers = dict(headers or {})
        if key is not None:
            headers["Authorization"] = f"apikey {key}"
        if body is not None:
            data = json.dumps(body).encode()
        return requests.request(method, self.base + path, data=data, headers=headers,
                                timeout=HTTP_TIMEOUT)

    def ok(self, method: str, path: str, body=None) -> dict:
        r = self.call(method, path, body)
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/json"
        return r.json()

    def curl(self, method: str, path: str, body=None, *, key: str | None = KEY) -> tuple[int, str]:
        """The same call through the `curl` command: (status, body)."""
        cmd = ["curl", "-sS", "-X", method, "--max-time", str(HTTP_TIMEOUT),
               "-w", "\n%{http_code}", self.base + path]
        if key is not None:
            cmd += ["-H", f"Authorization: apikey {key}"]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=HTTP_TIMEOUT + 5)
        assert out.returncode == 0, out.stderr
        text, _, status = out.stdout.rpartition("\n")
        return int(status), text


def start(server, tmp_path, *args: str, workers: int = WORKERS):
    """A server with the API key in a file."""
    key_file = tmp_path / "api.key"
    key_file.write_text(KEY + "\n")
    return server("--api-key-file", str(key_file), *args, workers=workers)


def api_port(srv) -> int:
    """The `api listening on` line that follows `listening on` with --api-listen (printed
    right after it: it may already be in the reader's buffer, so no select here)."""
    line = srv.process.stdout.readline().decode()
    prefix = "api listening on 127.0.0.1:"
    assert line.startswith(prefix), line
    return int(line[len(prefix):])


async def plain_members(port: int, room: str, count: int, stack) -> list:
    """`count` plain members of `room`, each known to be in it: it got its own message back
    (so the room's sequencer has it)."""
    members = []
    for i in range(count):
        ws = await stack.enter_async_context(connect(port, room))
        await ws.send(f"hello {i}")
        while await recv(ws) != f"hello {i}":
            pass
        members.append(ws)
    # Each member also saw the later members' hellos: take them now.
    for i, ws in enumerate(members):
        for j in range(i + 1, count):
            assert await recv(ws) == f"hello {j}"
    return members


async def v1_members(port: int, room: str, nicks: list[str], stack) -> list[tuple]:
    """v1 members of `room` (welcomed, so in it): (connection, welcome) each."""
    members = []
    for nick in nicks:
        ws = await stack.enter_async_context(v1(port, room, nick))
        members.append((ws, await expect(ws, "welcome")))
    return members


def shard_of(session_id: str) -> int:
    return int(session_id.split(".")[-2])


async def call(api: Api, *args, **kwargs) -> dict:
    """`api.ok` off the event loop, so that the members' connections keep reading."""
    return await asyncio.to_thread(api.ok, *args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Publish and broadcast


def test_publish_reaches_plain_and_v1_members_on_every_shard(server, tmp_path):
    srv = start(server, tmp_path)
    api = Api(srv.port)

    async def scenario():
        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            plain = await plain_members(srv.port, "news", WORKERS, stack)
            v1s = await v1_members(srv.port, "news", [f"m{i}" for i in range(WORKERS)], stack)
            shards = {shard_of(w["id"]) for _, w in v1s}
            assert len(shards) == expected_shards(WORKERS), shards

            # Text, through curl: plain members get the bytes, v1 members a server message.
            status, text = await asyncio.to_thread(
                api.curl, "POST", "/api/publish", {"room": "news", "data": "from the app <b>"})
            assert status == 200, text
            answer = json.loads(text)
            assert answer["ok"] is True
            epoch, offset = answer["epoch"], answer["offset"]
            assert offset == WORKERS + 1, answer  # after the members' hellos
            for ws in plain:
                assert await recv(ws) == "from the app <b>"
            for ws, welcome in v1s:
                m = await next_message(ws)
                assert m == {"type": "message", "id": "server", "nick": None, "from": "server",
                             "text": "from the app <b>", "ts": m["ts"], "offset": offset}, m
                assert welcome["epoch"] == epoch

            # Binary, through requests: the same frame for everyone.
            blob = bytes(range(256))
            answer = await call(api, "POST", "/api/publish",
                                {"room": "news", "b64data": base64.b64encode(blob).decode()})
            assert (answer["epoch"], answer["offset"]) == (epoch, offset + 1), answer
            for ws in plain + [ws for ws, _ in v1s]:
                assert await recv(ws) == blob
            for ws in plain:
                await assert_quiet(ws)

    run(scenario(), timeout=40)


def test_a_published_message_takes_its_place_in_the_rooms_order(server, tmp_path):
    srv = start(server, tmp_path)
    api = Api(srv.port)

    async def scenario():
        async with v1(srv.port, "order", "ann") as ann, connect(srv.port, "order") as plain:
            await expect(ann, "welcome")
            await plain.send("first")
            assert await recv(plain) == "first"
            first = await next_message(ann)
            answer = await call(api, "POST", "/api/publish", {"room": "order", "data": "second"})
            assert answer["offset"] == first["offset"] + 1
            await plain.send("third")
            assert [await recv(plain) for _ in range(2)] == ["second", "third"]
            got = [await next_message(ann) for _ in range(2)]
            assert [(m["offset"], m["text"], m.get("from")) for m in got] == [
                (first["offset"] + 1, "second", "server"), (first["offset"] + 2, "third", None)]

    run(scenario())


def test_broadcast_answers_per_room(server, tmp_path):
    srv = start(server, tmp_path)
    api = Api(srv.port)

    async def scenario():
        async with v1(srv.port, "b1", "ann") as ann, connect(srv.port, "b2") as bob:
            await expect(ann, "welcome")
            await bob.send("x")
            assert await recv(bob) == "x"
            answer = await call(api, "POST", "/api/broadcast",
                                {"rooms": ["b1", "b2", "b3"], "data": "to all"})
            results = {r["room"]: r for r in answer["results"]}
            assert list(results) == ["b1", "b2", "b3"]
            assert all(r["ok"] for r in results.values()), answer
            assert results["b1"]["offset"] == 1
            assert results["b2"]["offset"] == 2  # after bob's "x"
            assert results["b3"]["offset"] == 1  # nobody there: it is kept all the same
            m = await next_message(ann)
            assert (m["text"], m["from"], m["offset"]) == ("to all", "server", 1)
            assert await recv(bob) == "to all"

    run(scenario())


# ---------------------------------------------------------------------------------------------
# Rooms, presence, history


def test_rooms_and_presence_count_every_shard(server, tmp_path):
    srv = start(server, tmp_path)
    api = Api(srv.port)

    async def scenario():
        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            await plain_members(srv.port, "x", 2, stack)
            v1s = await v1_members(srv.port, "x", ["ann", "bob"], stack)
            await plain_members(srv.port, "y", 1, stack)

            status, text = await asyncio.to_thread(api.curl, "GET", "/api/rooms")
            assert status == 200, text
            assert json.loads(text) == {"rooms": [{"room": "x", "online": 4},
                                                  {"room": "y", "online": 1}]}

            presence = await call(api, "GET", "/api/rooms/x/presence")
            assert presence["room"] == "x" and presence["online"] == 4
            members = presence["members"]
            v1_listed = sorted((m["id"], m["nick"], m["dialect"]) for m in members
                               if m["dialect"] == "shardcast.v1")
            assert v1_listed == sorted((w["id"], w["nick"], "shardcast.v1") for _, w in v1s)
            plain_listed = [m for m in members if m["dialect"] == "plain"]
            assert len(plain_listed) == 2 and all(m["nick"] is None for m in plain_listed)
            assert all(m["user"] is None for m in members)
            assert len({m["id"] for m in members}) == 4

            # Bob leaves: the counts follow (his shard tells the others on its next turn).
            await v1s[1][0].close()
            await asyncio.to_thread(
                wire.wait_for,
                lambda: api.ok("GET", "/api/rooms/x/presence")["online"] == 3, 10, "bob gone")
            empty = await call(api, "GET", "/api/rooms/nobody/presence")
            assert empty == {"room": "nobody", "online": 0, "members": []}

    run(scenario(), timeout=40)


def test_history_returns_the_asked_slice(server, tmp_path):
    srv = start(server, tmp_path)
    api = Api(srv.port)
    offsets = [api.ok("POST", "/api/publish", {"room": "h", "data": f"m{i}"})["offset"]
               for i in range(1, 6)]
    assert offsets == [1, 2, 3, 4, 5]

    whole = api.ok("GET", "/api/rooms/h/history")
    epoch = whole["epoch"]
    assert whole["offset"] == 5 and whole["more"] is False and "recovered" not in whole
    assert [(m["offset"], m["data"], m["from"], m["id"]) for m in whole["messages"]] == [
        (i, f"m{i}", "server", "server") for i in range(1, 6)]

    last_two = api.ok("GET", "/api/rooms/h/history?limit=2")
    assert [m["offset"] for m in last_two["messages"]] == [4, 5]

    after_two = api.ok("GET", f"/api/rooms/h/history?since={epoch}:2&limit=2")
    assert after_two["recovered"] is True and after_two["more"] is True
    assert [m["offset"] for m in after_two["messages"]] == [3, 4]
    rest = api.ok("GET", f"/api/rooms/h/history?since={epoch}:4&limit=2")
    assert [m["offset"] for m in rest["messages"]] == [5] and rest["more"] is False

    other = epoch[:-1] + ("0" if epoch[-1] != "0" else "1")
    not_ours = api.ok("GET", f"/api/rooms/h/history?since={other}:2&limit=2")
    assert not_ours["recovered"] is False
    assert [m["offset"] for m in not_ours["messages"]] == [4, 5]

    blob = b"\x00\xffbin"
    api.ok("POST", "/api/publish", {"room": "h", "b64data": base64.b64encode(blob).decode()})
    last = api.ok("GET", "/api/rooms/h/history?limit=1")["messages"][0]
    assert base64.b64decode(last["b64data"]) == blob and "data" not in last

    assert api.ok("GET", "/api/rooms/never/history") == {
        "room": "never", "epoch": None, "offset": 0, "messages": [], "more": False}
    bad = api.call("GET", "/api/rooms/h/history?since=nope")
    assert bad.status_code == 400 and "since" in bad.json()["error"]


def test_history_off_answers_404(server, tmp_path):
    srv = start(server, tmp_path, "--history-size", "0")
    api = Api(srv.port)
    r = api.call("GET", "/api/rooms/h/history")
    assert r.status_code == 404 and "history is off" in r.json()["error"]
    assert api.ok("POST", "/api/publish", {"room": "h", "data": "x"}) == {"ok": True}


# ---------------------------------------------------------------------------------------------
# Disconnect


def test_disconnect_closes_that_session_only(server, tmp_path):
    srv = start(server, tmp_path)
    api = Api(srv.port)

    async def scenario():
        async with v1(srv.port, "d", "ann") as ann, v1(srv.port, "d", "bob") as bob, \
                connect(srv.port, "d") as plain:
            ann_id = (await expect(ann, "welcome"))["id"]
            await expect(bob, "welcome")
            await plain.send("p")
            assert await recv(plain) == "p"
            answer = await call(api, "POST", "/api/disconnect",
                                {"session": ann_id, "code": 4003, "reason": "bye now"})
            assert answer == {"disconnected": 1}
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await recv(ann)
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4003, "bye now")
            # The others stay, and hear that she left (presence notices come outside the
            # room's message order: only the leave is looked for).
            while True:
                env = json.loads(await recv(bob))
                assert env["type"] in ("join", "leave", "message"), env
                if env["type"] == "leave":
                    assert env["id"] == ann_id, env
                    break
            await bob.send(json.dumps({"type": "message", "text": "still here"}))
            while (await next_message(bob))["text"] != "still here":
                pass  # the plain member's "p", if the leave overtook it
            assert await recv(plain) == "bob: still here"

            again = await call(api, "POST", "/api/disconnect", {"session": ann_id})
            assert again == {"disconnected": 0}

    run(scenario())


def test_disconnect_uses_4000_by_default(server, tmp_path):
    srv = start(server, tmp_path)
    api = Api(srv.port)

    async def scenario():
        async with v1(srv.port, "d", "cy") as cy:
            cy_id = (await expect(cy, "welcome"))["id"]
            assert await call(api, "POST", "/api/disconnect", {"session": cy_id}) == {
                "disconnected": 1}
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await recv(cy)
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                4000, "disconnected by the server")

    run(scenario())


# ---------------------------------------------------------------------------------------------
# Refusals


def one_line_error(r: requests.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/json"
    assert r.text.count("\n") == 1 and r.text.endswith("\n")
    body = r.json()
    assert list(body) == ["error"] and body["error"]
    return body["error"]


def test_bad_requests_are_refused_and_websockets_go_on(server, tmp_path):
    srv = start(server, tmp_path)
    api = Api(srv.port)

    async def scenario():
        async with connect(srv.port, "live") as a, connect(srv.port, "live") as b:
            await a.send("before")
            assert await recv(b) == "before"

            def refusals():
                r = api.call("GET", "/api/rooms", key=None)
                one_line_error(r, 401)
                assert r.headers["WWW-Authenticate"] == "apikey"
                one_line_error(api.call("GET", "/api/rooms", key="wrong"), 401)
                one_line_error(api.call("GET", "/api/rooms", key=KEY + "x"), 401)
                assert api.curl("GET", "/api/rooms", key="nope")[0] == 401
                why = one_line_error(api.call("POST", "/api/publish", data=b"{not json"), 400)
                assert "JSON" in why
                one_line_error(api.call("POST", "/api/publish", {"room": "a b", "data": "x"}), 400)
                one_line_error(api.call("POST", "/api/publish", {"room": "r"}), 400)
                one_line_error(api.call("POST", "/api/disconnect", {"session": "1.2",
                                                                     "code": 1001}), 400)
                one_line_error(api.call("POST", "/api/publish",
                                        data=b'{"room":"r","data":"' + b"x" * 70000 + b'"}'), 413)
                one_line_error(api.call("GET", "/api/nothing"), 404)
                one_line_error(api.call("GET", "/api/rooms/x/members"), 404)
                r = api.call("GET", "/api/publish")
                one_line_error(r, 405)
                assert r.headers["Allow"] == "POST"
                r = api.call("POST", "/api/rooms")
                one_line_error(r, 405)
                assert r.headers["Allow"] == "GET, HEAD"
                assert api.curl("DELETE", "/api/rooms")[0] == 405
                # A body announced but never sent: the session waits, then gives up; nobody
                # else notices.
                raw = wire.open_socket(srv.port)
                raw.sendall(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey "
                            + KEY.encode() + b"\r\nContent-Length: 100\r\n\r\n{")
                raw.close()

            await asyncio.to_thread(refusals)
            await a.send("after")
            assert await recv(b) == "after"
            assert await recv(a) == "before" and await recv(a) == "after"
            await assert_quiet(b)

    run(scenario(), timeout=40)


def test_chunked_bodies_are_refused(server, tmp_path):
    srv = start(server, tmp_path)
    sock = wire.open_socket(srv.port)
    sock.sendall(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey " + KEY.encode()
                 + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    answer = wire.read_to_eof(sock, 5)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"Content-Length" in answer.split(b"\r\n\r\n", 1)[1]


# ---------------------------------------------------------------------------------------------
# Where it listens


def test_api_listen_serves_the_api_and_the_main_port_does_not(server, tmp_path):
    srv = start(server, tmp_path, "--api-listen", "127.0.0.1:0")
    api = Api(api_port(srv))
    main = Api(srv.port)

    async def scenario():
        async with connect(srv.port, "priv") as ws:
            await ws.send("x")
            assert await recv(ws) == "x"
            answer = await call(api, "POST", "/api/publish", {"room": "priv", "data": "hi"})
            assert answer["offset"] == 2
            assert await recv(ws) == "hi"
            rooms = await call(api, "GET", "/api/rooms")
            assert rooms == {"rooms": [{"room": "priv", "online": 1}]}

    run(scenario())
    assert main.call("GET", "/api/rooms").status_code == 404
    assert main.call("POST", "/api/publish", {"room": "priv", "data": "x"}).status_code == 404
    one_line_error(api.call("GET", "/api/rooms", key="wrong"), 401)
    one_line_error(api.call("GET", "/health"), 404)
    one_line_error(api.call("POST", "/api/publish",
                            data=b'{"room":"r","data":"' + b"x" * 70000 + b'"}'), 413)
    assert api.curl("GET", "/api/rooms")[0] == 200


def test_without_a_key_the_api_is_404(server):
    srv = server()
    r = Api(srv.port).call("GET", "/api/rooms")
    assert r.status_code == 404


def test_api_listen_without_a_key_does_not_start(tmp_path):
    out = subprocess.run([str(BIN), "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=10,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    assert "--api-listen needs a key" in out.stderr


def test_the_key_may_come_from_the_environment(tmp_path):
    import os

    env = dict(os.environ, SHARDCAST_API_KEY=KEY)
    proc = subprocess.Popen([str(BIN), "--listen", "127.0.0.1:0", "--no-pin", "--workers", "2",
                             "--model", MODEL],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready
        port = int(proc.stdout.readline().decode().rsplit(":", 1)[1])
        assert Api(port).ok("GET", "/api/rooms") == {"rooms": []}
    finally:
        proc.kill()
        proc.wait(timeout=5)


@pytest.mark.parametrize("where", ["main-port", "api-listen"])
def test_a_server_with_the_api_shuts_down_cleanly(server, tmp_path, where):
    import signal

    extra = ("--api-listen", "127.0.0.1:0") if where == "api-listen" else ()
    srv = start(server, tmp_path, *extra)
    api = Api(api_port(srv) if extra else srv.port)
    assert api.ok("GET", "/api/rooms") == {"rooms": []}
    srv.expected_exit = True
    srv.process.send_signal(signal.SIGTERM)
    assert srv.process.wait(timeout=10) == 0
