"""Rate limits: --max-publish-rate (messages per connection: dropped, refused to v1 clients
with `rate_limited`, a flood closed with 1008 "rate limit") and --max-connection-rate-per-ip
(new connections per address: 429 with Retry-After at accept).

Timing: a token bucket of rate N and burst B admits at most N + B + N * t in t seconds, and
always the first N + B at once. The tests assert exactly that, with t measured around
everything the server could have received (so a slow, loaded machine only loosens the
bound), and a well-behaved client never sends more than N + B in all, so it can never be
limited whatever the timing.
"""

from __future__ import annotations

import asyncio
import json
import time

from websockets.exceptions import ConnectionClosed

from chat import NOTICES, assert_quiet, connect, envelope, expect, recv, run, v1
from wire import Conn, read_to_eof, wait_for

# Loopback source addresses: Linux routes all of 127.0.0.0/8 to lo, no setup needed.
IP_A, IP_B, IP_METRICS = "127.0.0.1", "127.0.0.2", "127.0.0.3"


def allowed(rate: int, burst: int, seconds: float) -> int:
    """The most messages (or connections) a bucket lets through in `seconds`."""
    return int(rate + burst + rate * seconds)


def text(i: int) -> str:
    return json.dumps({"type": "message", "text": f"m{i}"})


def test_a_v1_client_over_the_publish_rate_is_told_and_its_excess_not_delivered(server):
    rate, burst, sent = 2, 2, 40  # 40 at once: far under the flood bound (10 x 2 x 5 = 100)
    srv = server("--max-publish-rate", str(rate), "--publish-burst", str(burst))

    async def scenario(port):
        async with connect(port, "limited") as watcher, v1(port, "limited", "ann") as ann:
            await expect(ann, "welcome")
            start = time.monotonic()
            for i in range(sent):
                await ann.send(text(i))
            # Every message is answered: its echo if delivered, rate_limited if dropped.
            echoed, refused = [], 0
            while len(echoed) + refused < sent:
                env = await envelope(ann)
                if env["type"] == "message":
                    echoed.append(env["text"])
                elif env["type"] == "error":
                    assert env["code"] == "rate_limited", env
                    refused += 1
                else:
                    assert env["type"] in NOTICES, env
            elapsed = time.monotonic() - start
            print(f"{len(echoed)} delivered, {refused} refused in {elapsed:.3f} s")
            # The first rate + burst always pass; then the rate; nothing else.
            assert echoed[: rate + burst] == [f"m{i}" for i in range(rate + burst)]
            assert len(echoed) <= allowed(rate, burst, elapsed), elapsed
            assert refused > 0
            # Delivered in order, and the excess was never delivered to anyone.
            order = [int(t[1:]) for t in echoed]
            assert order == sorted(order)
            assert [await recv(watcher) for _ in echoed] == [f"ann: {t}" for t in echoed]
            await assert_quiet(watcher, 0.5)
            # A token comes back every 1/rate seconds: after a pause, ann is heard again.
            await asyncio.sleep(1.0 / rate + 0.1)
            await ann.send(json.dumps({"type": "message", "text": "again"}))
            assert (await expect(ann, "message"))["text"] == "again"
            assert await recv(watcher) == "ann: again"
            return refused

    refused = run(scenario(srv.port))
    m = wait_for(
        lambda: (m := srv.metrics())["shardcast_messages_received_total"] == sent + 1 and m,
        5,
        "every message counted",
    )
    assert m["shardcast_rate_limited_messages_total"] == refused
    assert m["shardcast_envelope_errors_total"] == refused
    assert m['shardcast_closes_total{reason="rate_limit"}'] == 0


def test_a_plain_client_over_the_publish_rate_loses_its_excess_silently(server):
    rate, burst, sent = 2, 2, 40
    srv = server("--max-publish-rate", str(rate), "--publish-burst", str(burst))

    async def scenario(port):
        async with connect(port, "plain") as watcher, connect(port, "plain") as flooder:
            start = time.monotonic()
            for i in range(sent):
                await flooder.send(f"f{i}")
            m = wait_for(
                lambda: (m := srv.metrics())["shardcast_messages_received_total"] == sent and m,
                10,
                "every message read",
            )
            elapsed = time.monotonic() - start
            dropped = int(m["shardcast_rate_limited_messages_total"])
            delivered = sent - dropped
            print(f"{delivered} delivered, {dropped} dropped in {elapsed:.3f} s")
            assert delivered <= allowed(rate, burst, elapsed), elapsed
            assert dropped > 0
            # The sender gets its delivered messages back and nothing else (no error for a
            # plain client); the watcher gets the same, in the same order.
            echoed = [await recv(flooder) for _ in range(delivered)]
            assert echoed[: rate + burst] == [f"f{i}" for i in range(rate + burst)]
            assert [await recv(watcher) for _ in range(delivered)] == echoed
            await assert_quiet(flooder, 0.5)
            await assert_quiet(watcher, 0.1)
            assert m["shardcast_envelope_errors_total"] == 0

    run(scenario(srv.port))


def test_a_flooder_is_closed_while_the_room_hears_everyone_else(server):
    rate, burst = 5, 0
    srv = server("--max-publish-rate", str(rate), "--publish-burst", str(burst))
    good_count = rate + burst  # all a quiet client may send at once: never limited

    async def scenario(port):
        async with (
            connect(port, "flood") as watcher,
            connect(port, "flood") as good,
            connect(port, "flood", max_queue=None) as flooder,
        ):
            start = time.monotonic()

            async def well_behaved():
                for i in range(good_count):
                    await good.send(f"good {i}")
                    await asyncio.sleep(0.05)

            async def limited_then_flooding():
                # Over the rate, but paced under ten times it (>= 25 ms apart: <= 40/s, and
                # a delay only slows it down): excess dropped, never closed.
                for i in range(40):
                    await flooder.send(f"flood {i}")
                    await asyncio.sleep(0.025)
                # Then as fast as it can, until the server closes it. Even at one batch a
                # second this is over 10 x rate, so the flood bucket (250) runs dry.
                for batch in range(1000):
                    try:
                        for i in range(100):
                            await flooder.send(f"flood {batch}.{i}")
                    except ConnectionClosed:
                        return
                    await asyncio.sleep(0.001)
                raise AssertionError("the flooder was never closed")

            async def drain_flooder():
                # Its own delivered messages come back; read them so that it sees the close.
                try:
                    while True:
                        await flooder.recv()
                except ConnectionClosed:
                    pass

            await asyncio.gather(well_behaved(), limited_then_flooding(), drain_flooder())
            await flooder.wait_closed()
            assert flooder.close_code == 1008, flooder.close_code
            assert flooder.close_reason == "rate limit"

            # The watcher and the well-behaved member itself got every one of its messages,
            # in order, among what little of the flood got through.
            elapsed = time.monotonic() - start
            for ws in (watcher, good):
                goods, floods = await hear(ws, good_count)
                assert goods == [f"good {i}" for i in range(good_count)]
                assert floods <= allowed(rate, burst, elapsed), (floods, elapsed)

    run(scenario(srv.port), timeout=30)
    m = wait_for(
        lambda: (m := srv.metrics())['shardcast_closes_total{reason="rate_limit"}'] == 1 and m,
        5,
        "the flood close counted",
    )
    assert m['shardcast_close_frames_sent_total{code="1008"}'] == 1
    assert m["shardcast_rate_limited_messages_total"] > 0
    run(assert_room_works(srv.port))


async def hear(ws, good_count: int) -> tuple[list[str], int]:
    """Receives until `good_count` "good" messages came: them, and how many others."""
    goods, others = [], 0
    while len(goods) < good_count:
        message = await recv(ws)
        if message.startswith("good "):
            goods.append(message)
        else:
            others += 1
    return goods, others


async def assert_room_works(port: int) -> None:
    async with connect(port, "after") as a, connect(port, "after") as b:
        await a.send("still here")
        assert await recv(a) == "still here"
        assert await recv(b) == "still here"


def test_connection_rate_per_ip_answers_429_then_admits_again(server):
    rate, burst, attempts, handshake = 2, 1, 8, 1.0
    srv = server(
        "--max-connection-rate-per-ip", str(rate),
        "--connection-rate-burst", str(burst),
        "--handshake-timeout", str(handshake),  # an admitted silent connection ends then
    )  # fmt: skip
    # Rapid connections that send nothing: a refused one gets its 429 at once and is closed;
    # an admitted one is closed without a word when its handshake time is up.
    start = time.monotonic()
    conns = [Conn.open(srv.port, source=IP_A) for _ in range(attempts)]
    # Another address has a bucket of its own.
    other = Conn.open(srv.port, source=IP_B)
    answers, accepted_by = [], []
    for conn in conns:
        with conn:
            answers.append(read_to_eof(conn.sock, 10))
        # When the server accepted it, at the latest: an admitted one was accepted at least
        # the handshake timeout before its end arrived (it arrived before it was read).
        accepted_by.append(time.monotonic() - start - (0 if answers[-1] else handshake))
    with other:
        assert read_to_eof(other.sock, 10) == b""
    admitted = [a == b"" for a in answers]
    spread = max(accepted_by)
    print(f"admitted {admitted}, accepted within {spread:.3f} s")
    # The first rate + burst always; then at most the rate; the (rate + burst + 1)th is
    # refused unless it came at least a token's time (1/rate) after the first.
    assert all(admitted[: rate + burst]), admitted
    assert sum(admitted) <= allowed(rate, burst, spread), (admitted, spread)
    assert not admitted[rate + burst] or accepted_by[rate + burst] >= 1.0 / rate, accepted_by
    refused = [a for a in answers if a]
    assert refused or spread >= (attempts - rate - burst) / rate, accepted_by
    retry_after = 1
    for answer in refused:
        head = answer.decode("latin-1").split("\r\n\r\n")[0].split("\r\n")
        assert head[0] == "HTTP/1.1 429 Too Many Requests", head[0]
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:])}
        assert headers["connection"].lower() == "close"
        retry_after = int(headers["retry-after"])
        assert retry_after >= 1

    # After waiting as told, the address is admitted again.
    time.sleep(retry_after + 0.1)

    async def welcome_back(port):
        async with connect(port, "back", local_addr=(IP_A, 0)) as a:
            await a.send("back")
            assert await recv(a) == "back"

    run(welcome_back(srv.port))
    m = srv.metrics(source=IP_METRICS)
    assert m["shardcast_connection_rate_refused_total"] == len(refused)
    assert m["shardcast_per_ip_refused_total"] == 0
    # IP_A, IP_B and IP_METRICS: three addresses, far from any pruning.
    assert m["shardcast_connection_rate_addresses"] == 3
