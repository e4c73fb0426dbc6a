"""The server API in a cluster (docs/api.md, "In a cluster"), with a real redis-server of the
test's own (tests/py/conftest.py): a publish taken by one node reaches members on every
node, room counts and presence cover every node, and a disconnect of another node's session
is forwarded to that node.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed

import wire
from chat import recv, run, v1
from test_api import KEY, Api, call
from test_cluster import start_nodes, wait_subscribed, welcome_until_online


def start_api_nodes(server, redis, tmp_path, count: int) -> list:
    key_file = tmp_path / "api.key"
    key_file.write_text(KEY)
    return start_nodes(server, redis, count, "--api-key-file", str(key_file))


def test_publish_reaches_every_node_and_rooms_count_them(server, redis, tmp_path):
    n1, n2 = start_api_nodes(server, redis, tmp_path, 2)
    api1 = Api(n1.port)

    async def scenario():
        async with v1(n1.port, "all", "ann") as ann, v1(n2.port, "all", "bob") as bob:
            wa = await welcome_until_online(ann, 2, timeout=10)
            wb = await welcome_until_online(bob, 2, timeout=10)
            wait_subscribed(redis, "all", 2)
            answer = await call(api1, "POST", "/api/publish", {"room": "all", "data": "hello nodes"})
            assert answer["ok"] is True
            for ws in (ann, bob):
                while True:
                    env = json.loads(await recv(ws, 10))
                    if env["type"] == "message":
                        break
                assert (env["text"], env["from"], env["id"]) == ("hello nodes", "server", "server")
                assert env["offset"] == 1
            # Redis numbers the room's messages: the answer is the message's place, one epoch
            # on every node.
            assert answer["offset"] == 1
            assert answer["epoch"] == wa["epoch"] == wb["epoch"]
            rooms = await call(api1, "GET", "/api/rooms")
            assert rooms == {"rooms": [{"room": "all", "online": 2}]}

    run(scenario(), timeout=40)


def test_presence_lists_the_members_of_every_node(server, redis, tmp_path):
    nodes = start_api_nodes(server, redis, tmp_path, 3)
    api1 = Api(nodes[0].port)

    async def scenario():
        async with v1(nodes[0].port, "p", "ann") as ann, v1(nodes[1].port, "p", "bob") as bob, \
                v1(nodes[2].port, "p", "cy") as cy:
            welcomes = [json.loads(await recv(ws, 10)) for ws in (ann, bob, cy)]
            presence = await call(api1, "GET", "/api/rooms/p/presence")
            assert presence["complete"] is True, presence
            listed = sorted((m["id"], m["nick"]) for m in presence["members"])
            assert listed == sorted((w["id"], w["nick"]) for w in welcomes)
            assert [m["id"].split(".")[0] for m in presence["members"]] == ["n1", "n2", "n3"]
            assert presence["online"] == 3
            empty = await call(api1, "GET", "/api/rooms/nobody/presence")
            assert empty == {"room": "nobody", "online": 0, "members": [], "complete": True}

    run(scenario(), timeout=40)


def test_a_disconnect_of_another_nodes_session_is_forwarded(server, redis, tmp_path):
    n1, n2 = start_api_nodes(server, redis, tmp_path, 2)
    api1 = Api(n1.port)

    async def scenario():
        async with v1(n2.port, "kick", "cy") as cy:
            welcome = json.loads(await recv(cy, 10))
            assert welcome["type"] == "welcome" and welcome["id"].startswith("n2."), welcome
            answer = await call(api1, "POST", "/api/disconnect",
                                {"session": welcome["id"], "code": 4009, "reason": "moved"})
            assert answer == {"disconnected": 0, "forwarded": "n2"}
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await recv(cy, 10)
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4009, "moved")

    run(scenario(), timeout=40)
    # In a cluster a session id carries its node.
    r = api1.call("POST", "/api/disconnect", {"session": "0.1"})
    assert r.status_code == 400, r.text
    own = api1.ok("POST", "/api/disconnect", {"session": "n1.0.999"})
    assert own == {"disconnected": 0}
    wire.wait_for(lambda: n2.metrics().get('shardcast_closes_total{reason="disconnected"}') == 1,
                  10, "n2 counted the close")
