"""The server API and signed tokens together (docs/api.md, docs/auth.md): presence shows each
member's user id, and a disconnect by user closes every connection of that user — plain and
v1, on every shard, and with `--redis` on every node — and nobody else's.
"""

from __future__ import annotations

import asyncio
import json

from chat import V1, close_received, connect, recv, run
from test_api import KEY, Api, call
from test_auth import Keys
from test_cluster import expect as next_of
from test_cluster import start_nodes

WORKERS = 4


def start(server, tmp_path, *extra: str):
    key_file = tmp_path / "api.key"
    key_file.write_text(KEY + "\n")
    keys = Keys("HS256", tmp_path)
    srv = server("--api-key-file", str(key_file), "--auth", "optional", *keys.flag, *extra,
                 workers=WORKERS)
    return srv, keys


def test_presence_shows_users_and_a_disconnect_by_user_closes_all_of_theirs(server, tmp_path):
    srv, keys = start(server, tmp_path)
    api = Api(srv.port)

    async def scenario():
        token = keys.mint("u-9", name="Nine")
        # Four connections of u-9 (so on several shards), two v1 and two plain, and two
        # others: an anonymous v1 member and another user.
        nine_v1 = [await connect(srv.port, f"r?token={token}", subprotocols=V1) for _ in range(2)]
        nine_plain = [await connect(srv.port, f"r?token={token}") for _ in range(2)]
        anon = await connect(srv.port, "r?nick=anon", subprotocols=V1)
        other = await connect(srv.port, f"r?token={keys.mint('u-1', name='One')}",
                              subprotocols=V1)
        welcomes = [await next_of(ws, "welcome") for ws in (*nine_v1, anon, other)]
        assert [w.get("user") for w in welcomes] == ["u-9", "u-9", None, "u-1"]
        for i, ws in enumerate(nine_plain):
            await ws.send(f"plain {i}")
            while await recv(ws, 10) != f"plain {i}":
                pass  # it is in the room once its own message came back

        presence = await call(api, "GET", "/api/rooms/r/presence")
        users = sorted((m["user"] or "-") for m in presence["members"])
        assert users == ["-", "u-1", "u-9", "u-9", "u-9", "u-9"], presence
        assert presence["online"] == 6

        answer = await call(api, "POST", "/api/disconnect",
                            {"user": "u-9", "code": 4009, "reason": "banned"})
        assert answer == {"disconnected": 4}
        for ws in (*nine_v1, *nine_plain):
            assert await close_received(ws) == (4009, "banned")
        # The others stay members: one of them speaks, the other hears it.
        await anon.send(json.dumps({"type": "message", "text": "still here"}))
        while (await next_of(other, "message"))["text"] != "still here":
            pass
        again = await call(api, "POST", "/api/disconnect", {"user": "u-9"})
        assert again == {"disconnected": 0}
        for ws in (anon, other):
            await ws.close()

    run(scenario(), timeout=40)


def test_a_disconnect_by_user_reaches_every_node(server, redis, tmp_path):
    key_file = tmp_path / "api.key"
    key_file.write_text(KEY + "\n")
    keys = Keys("EdDSA", tmp_path)
    n1, n2 = start_nodes(server, redis, 2, "--api-key-file", str(key_file),
                         "--auth", "optional", *keys.flag)
    api1 = Api(n1.port)

    async def scenario():
        token = keys.mint("u-far", name="Far")
        near = await connect(n1.port, f"k?token={token}", subprotocols=V1)
        far = await connect(n2.port, f"k?token={token}", subprotocols=V1)
        stay = await connect(n2.port, "k?nick=stay", subprotocols=V1)
        for ws in (near, far, stay):
            await next_of(ws, "welcome")  # a member of its node's room
        answer = await call(api1, "POST", "/api/disconnect", {"user": "u-far", "code": 4010})
        assert answer == {"disconnected": 1, "forwarded": "all"}
        assert (await close_received(near))[0] == 4010
        assert (await close_received(far))[0] == 4010
        # The anonymous member on the other node is still connected and a member.
        await stay.send(json.dumps({"type": "message", "text": "alone"}))
        while (await next_of(stay, "message"))["text"] != "alone":
            pass
        await stay.close()

    run(scenario(), timeout=40)


def test_api_keys_and_tokens_never_reach_the_log(server, tmp_path):
    """The API's key (right and wrong ones) and members' tokens, with the most verbose JSON
    log, on the main port: none of them is in any line."""
    import signal

    srv, keys = start(server, tmp_path, "--log-format", "json", "--log-level", "trace")
    api = Api(srv.port)
    wrong_key = "not-the-key-" + "x" * 20

    async def scenario():
        token = keys.mint("u-log", name="Logged")
        member = await connect(srv.port, f"lg?token={token}", subprotocols=V1)
        await next_of(member, "welcome")
        await call(api, "POST", "/api/publish", {"room": "lg", "data": "from the api"})
        assert (await next_of(member, "message"))["text"] == "from the api"
        await call(api, "GET", "/api/rooms/lg/presence")
        refused = await asyncio.to_thread(api.call, "GET", "/api/rooms", key=wrong_key)
        assert refused.status_code == 401
        await call(api, "POST", "/api/disconnect", {"user": "u-log"})
        await close_received(member)
        return token

    token = run(scenario(), timeout=30)
    srv.expected_exit = True
    srv.process.send_signal(signal.SIGTERM)
    assert srv.process.wait(timeout=10) == 0
    log = srv.log()
    assert any('"level":"TRACE"' in line or '"level":"DEBUG"' in line for line in log.splitlines())
    for secret in (KEY, wrong_key, token, token.rsplit(".", 1)[-1]):
        assert secret not in log, f"a key or token is in the log: {secret[:12]}…"
