"""Who is here, and unique nicknames (docs/protocol.md, "Who is here" and "Unique nicknames").

`who` is answered with every member of the room on every event loop (and, in a cluster, on
every node), named members first by name; a nickname is one member's per room while it is
connected, whatever its case, and a second one gets `nick_taken` and may pick another.
Run per threading model like the rest of the suite.
"""

from __future__ import annotations

import asyncio
import json
import resource

from chat import close_received, connect, envelope, expect, run, v1
from test_auth import Keys, start as start_auth
from test_cluster import start_nodes, wait_subscribed

WORKERS = 4


async def members_of(ws) -> dict:
    """Asks `who` and returns the `members` envelope (presence notices before it skipped)."""
    await ws.send(json.dumps({"type": "who"}))
    while True:
        env = await envelope(ws)
        if env["type"] == "members":
            return env
        assert env["type"] in ("join", "leave", "online"), env


def names(members: dict) -> list:
    return [(m["nick"], m["id"]) for m in members["members"]]


# ---- who --------------------------------------------------------------------------------------


def test_who_lists_every_member_across_loops_named_ones_first_by_name(server):
    srv = server(workers=WORKERS)

    async def go():
        # Consecutive connections go to consecutive shards (round-robin): four loops, four
        # members, one of them plain.
        async with v1(srv.port, "r", "bob") as bob, v1(srv.port, "r", "Ann") as ann, \
                connect(srv.port, "r") as plain, v1(srv.port, "r", "cy") as cy:
            ids = {}
            for nick, ws in (("bob", bob), ("Ann", ann), ("cy", cy)):
                ids[nick] = (await expect(ws, "welcome"))["id"]
            got = await members_of(cy)
            assert got["room"] == "r"
            assert got["total"] == 4 and got["truncated"] is False
            assert "complete" not in got, "one node, every loop answered"
            listed = names(got)
            assert listed[:3] == [("Ann", ids["Ann"]), ("bob", ids["bob"]), ("cy", ids["cy"])]
            assert listed[3][0] is None, "the plain member, last"
            assert all("user" not in m for m in got["members"]), "anonymous members"
            # Someone leaves: the next list (a second later) no longer has them.
            await bob.close()
            await asyncio.sleep(1.1)
            assert [n for n, _ in names(await members_of(ann))] == ["Ann", "cy", None]
            # Other rooms are not listed.
            async with v1(srv.port, "other", "dan") as dan:
                dan_id = (await expect(dan, "welcome"))["id"]
                assert names(await members_of(dan)) == [("dan", dan_id)]
            assert plain.protocol.state.name == "OPEN"

    run(go())


def test_who_needs_a_nickname_and_is_answered_once_a_second(server):
    srv = server(workers=2)

    async def go():
        async with v1(srv.port, "r") as ws:
            await ws.send(json.dumps({"type": "who"}))
            assert (await expect(ws, "error"))["code"] == "hello_required"
            await ws.send(json.dumps({"type": "hello", "nick": "ann"}))
            await expect(ws, "welcome")
            # Two at once: the first is answered, the second is too soon.
            await ws.send(json.dumps({"type": "who"}))
            await ws.send(json.dumps({"type": "who"}))
            kinds = [(await envelope(ws)) for _ in range(2)]
            by_type = {k["type"]: k for k in kinds}
            assert set(by_type) == {"members", "error"}, kinds
            assert by_type["error"]["code"] == "rate_limited"
            assert names(by_type["members"])[0][0] == "ann"
            # An unknown type is a bad envelope, as ever; the connection stays.
            await ws.send(json.dumps({"type": "WHO"}))
            assert (await expect(ws, "error"))["code"] == "bad_envelope"
            await asyncio.sleep(1.1)
            got = await members_of(ws)
            assert got["total"] == 1

    run(go())


def test_who_in_a_big_room_lists_a_thousand_and_counts_them_all(server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    srv = server(workers=2)
    plain = 1005

    async def go():
        clients = [await connect(srv.port, "big").__aenter__() for _ in range(plain)]
        try:
            async with v1(srv.port, "big", "zed") as zed:
                await expect(zed, "welcome")
                got = await members_of(zed)
                assert got["total"] == plain + 1
                assert got["truncated"] is True
                assert len(got["members"]) == 1000
                assert got["members"][0]["nick"] == "zed", "named members first"
                assert len({m["id"] for m in got["members"]}) == 1000
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    run(go(), timeout=60)


# ---- unique nicknames -------------------------------------------------------------------------


def test_a_taken_nickname_is_refused_whatever_its_case_and_another_may_be_chosen(server):
    srv = server(workers=WORKERS)

    async def go():
        async with v1(srv.port, "r", "ann") as ann:
            await expect(ann, "welcome")
            async with v1(srv.port, "r", "ANN") as other:
                err = await expect(other, "error")
                assert err["code"] == "nick_taken"
                # Still connected, not a member: it tries another name with hello.
                await other.send(json.dumps({"type": "hello", "nick": "Ann"}))
                assert (await expect(other, "error"))["code"] == "nick_taken"
                await other.send(json.dumps({"type": "hello", "nick": "ann2"}))
                welcome = await expect(other, "welcome")
                assert welcome["nick"] == "ann2" and welcome["online"] == 2
                # ann heard of ann2 only: the refused attempts were never members.
                join = await expect(ann, "join")
                assert join["nick"] == "ann2"
            # The same name in another room is another name.
            async with v1(srv.port, "elsewhere", "ann") as elsewhere:
                assert (await expect(elsewhere, "welcome"))["nick"] == "ann"
        # ann left: the name is free again, at once.
        async with v1(srv.port, "r", "Ann") as again:
            assert (await expect(again, "welcome"))["nick"] == "Ann"

    run(go())


def test_a_reclaim_token_takes_the_name_back_from_a_connection_not_yet_seen_gone(server):
    """A client whose connection dropped unnoticed (here: still open, as the server sees it)
    comes back with its welcome's reclaim token and gets its name at once; the old connection
    is closed 1000 as replaced, and the others see it leave and the new one join. The token
    works once, for that name and room, and a made-up one does not."""
    srv = server(workers=WORKERS)

    async def go():
        async with v1(srv.port, "r", "bob") as bob, v1(srv.port, "r", "ann") as old:
            await expect(bob, "welcome")
            first = await expect(old, "welcome")
            token = first["reclaim"]
            assert token.startswith(first["id"] + "."), token
            assert (await expect(bob, "join"))["id"] == first["id"]
            # Without it, or with a forged one, the name is taken.
            forged = token[:-1] + ("0" if token[-1] != "0" else "1")
            for query in ("", f"reclaim={forged}", "reclaim=nonsense"):
                async with v1(srv.port, "r", "ann", query=query) as ws:
                    assert (await expect(ws, "error"))["code"] == "nick_taken", query
            # With it: on another loop (round-robin), in another case, in the query.
            async with v1(srv.port, "r", "Ann", query=f"reclaim={token}") as new:
                welcome = await expect(new, "welcome")
                assert welcome["nick"] == "Ann" and welcome["id"] != first["id"]
                assert welcome["reclaim"] != token
                code, reason = await close_received(old)
                assert (code, reason) == (1000, "replaced by a new connection")
                seen = {}
                while len(seen) < 2:
                    env = await envelope(bob)
                    seen[env["type"]] = env
                assert seen["leave"]["id"] == first["id"]
                assert seen["join"]["id"] == welcome["id"] and seen["join"]["nick"] == "Ann"
                # Spent: the old token takes nothing from the new holder.
                async with v1(srv.port, "r", "ann", query=f"reclaim={token}") as late:
                    assert (await expect(late, "error"))["code"] == "nick_taken"
                # The new token works in a hello too.
                async with v1(srv.port, "r") as hello:
                    await hello.send(json.dumps(
                        {"type": "hello", "nick": "ann", "reclaim": welcome["reclaim"]}
                    ))
                    third = await expect(hello, "welcome")
                    assert third["nick"] == "ann"
                    assert (await close_received(new))[0] == 1000
                    # The query's token serves a later hello (as the terminal client sends).
                    async with v1(srv.port, "r", query=f"reclaim={third['reclaim']}") as fourth:
                        await fourth.send(json.dumps({"type": "hello", "nick": "ann"}))
                        assert (await expect(fourth, "welcome"))["nick"] == "ann"
                        assert (await close_received(hello))[0] == 1000

    run(go(), timeout=60)


def test_racing_joins_on_every_loop_give_a_name_to_one(server):
    srv = server(workers=WORKERS)

    async def one(i: int):
        ws = await v1(srv.port, "race", "same").__aenter__()
        env = await envelope(ws)
        return ws, env["type"], env

    async def go():
        for round_ in range(5):
            tries = await asyncio.gather(*(one(i) for i in range(8)))
            kinds = sorted(kind for _, kind, _ in tries)
            assert kinds == ["error"] * 7 + ["welcome"], (round_, [e for *_, e in tries])
            assert all(e["code"] == "nick_taken" for _, k, e in tries if k == "error")
            await asyncio.gather(*(ws.close() for ws, _, _ in tries))

    run(go(), timeout=60)


def test_a_tokens_name_wins_and_anonymous_members_cannot_take_it(server, tmp_path):
    keys = Keys("HS256", tmp_path)
    srv = start_auth(server, keys)

    async def go():
        async with v1(srv.port, "r", "ann") as anon:
            await expect(anon, "welcome")
            token = keys.mint("u-1", name="Ann")
            async with v1(srv.port, "r", query=f"token={token}") as signed:
                welcome = await expect(signed, "welcome")
                assert (welcome["nick"], welcome["user"]) == ("Ann", "u-1")
                # The same user in a second tab: her name again.
                async with v1(srv.port, "r", query=f"token={keys.mint('u-1', name='Ann')}") as tab:
                    assert (await expect(tab, "welcome"))["nick"] == "Ann"
                await anon.close()
                await asyncio.sleep(0.2)
                # The anonymous ann is gone; the signed-in Ann still holds the name.
                async with v1(srv.port, "r", "aNN") as squatter:
                    assert (await expect(squatter, "error"))["code"] == "nick_taken"

    run(go())


# ---- in a cluster -----------------------------------------------------------------------------


def test_who_lists_the_members_of_every_node(server, redis):
    a, b = start_nodes(server, redis, 2)

    async def go():
        async with v1(a.port, "c", "ann") as ann:
            await expect(ann, "welcome")
            wait_subscribed(redis, "c", 1)
            async with v1(b.port, "c", "bob") as bob:
                await expect(bob, "welcome")
                wait_subscribed(redis, "c", 2)
                got = await members_of(ann)
                assert got["complete"] is True
                assert [n for n, _ in names(got)] == ["ann", "bob"]
                assert got["members"][1]["id"].startswith("n2.")
                assert got["total"] == 2

    run(go(), timeout=30)
