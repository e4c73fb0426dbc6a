"""Signed connection tokens (docs/auth.md), minted by PyJWT, an implementation independent of
the server's: the four key types, the three ways a token travels, every documented refusal
with its status and counter, rooms and read-only enforced on every shard, names and user ids
in the envelopes others see, expiry while connected, start-up errors, and no token (nor the
secret) in any log line, even at trace level.

Keys are made in each test with `cryptography` and written as PEM files into its tmp dir."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import wire
from chat import NOTICES, V1, close_received, connect, expect, next_message, recv, run
from conftest import BIN, MODEL, expected_shards

WORKERS = 4


# ---- keys and tokens ------------------------------------------------------------------------


class Keys:
    """A signing key of one algorithm and the server flag that checks it."""

    def __init__(self, alg: str, folder):
        self.alg = alg
        if alg == "HS256":
            self.secret = base64.b64encode(os.urandom(32))  # 44 bytes of text
            path = folder / "secret.txt"
            path.write_bytes(self.secret + b"\n")
            self.signing = self.secret
            self.flag = ["--token-secret-file", str(path)]
            self.public_pem = None
            return
        private = {
            "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "EdDSA": lambda: ed25519.Ed25519PrivateKey.generate(),
        }[alg]()
        self.signing = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        path = folder / f"{alg}.pub.pem"
        path.write_bytes(self.public_pem)
        self.flag = ["--token-public-key", str(path)]
        self.secret = None

    def mint(self, sub: str | None = "u-1", **claims) -> str:
        now = int(time.time())
        body = {"iat": now, "exp": now + 600, **claims}
        if sub is not None:
            body["sub"] = sub
        return jwt.encode(body, self.signing, algorithm=self.alg)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict, claims: dict, secret: bytes | None) -> str:
    """A token built by hand (what PyJWT refuses to make): HS256 over `secret`, or unsigned."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    message = f"{head}.{body}".encode()
    if secret is None:
        return f"{head}.{body}."
    return f"{head}.{body}.{b64url(hmac.new(secret, message, hashlib.sha256).digest())}"


def start(server, keys: Keys, mode: str = "optional", *extra: str):
    return server("--auth", mode, *keys.flag, *extra, workers=WORKERS)


# ---- helpers ----------------------------------------------------------------------------------


def upgrade(port: int, path: str, *headers: str, protocol: str | None = None) -> wire.Response:
    """A raw upgrade; the server's answer (the connection is closed after it)."""
    extra = list(headers)
    if protocol:
        extra.append(f"Sec-WebSocket-Protocol: {protocol}")
    with wire.Conn.open(port) as conn:
        return conn.request(wire.upgrade_request(path, None, "13", *extra))


def token_metrics(srv) -> dict[str, float]:
    prefix = 'shardcast_tokens_total{result="'
    return {k[len(prefix):-2]: v for k, v in srv.metrics().items() if k.startswith(prefix)}


async def skip_notices(ws) -> dict:
    """The next envelope that is not a presence notice (join, leave, online)."""
    while True:
        env = json.loads(await recv(ws))
        if env["type"] not in NOTICES:
            return env


def hello(token: str | None = None, nick: str | None = None) -> str:
    env = {"type": "hello"}
    if token is not None:
        env["token"] = token
    if nick is not None:
        env["nick"] = nick
    return json.dumps(env)


# ---- accepted tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256", "EdDSA"])
def test_each_key_type_admits_its_tokens_by_query_header_and_hello(server, tmp_path, alg):
    keys = Keys(alg, tmp_path)
    srv = start(server, keys, "required")
    room = f"r{uuid.uuid4().hex[:8]}"

    async def main():
        # Three members, each with its token another way (and, round-robin, on other shards).
        ann_token = keys.mint("u-ann", name="Ann")
        async with connect(srv.port, f"{room}?token={ann_token}", subprotocols=V1) as ann:
            w = await expect(ann, "welcome")
            assert (w["nick"], w["user"]) == ("Ann", "u-ann")
            headers = {"Authorization": f"Bearer {keys.mint('u-bob', name='Bob')}"}
            async with connect(srv.port, f"{room}?nick=ignored", subprotocols=V1,
                               additional_headers=headers) as bob:  # fmt: skip
                wb = await expect(bob, "welcome")
                assert (wb["nick"], wb["user"]) == ("Bob", "u-bob"), "the name wins over ?nick="
                j = await expect(ann, "join")
                assert j == {"type": "join", "id": wb["id"], "nick": "Bob", "user": "u-bob",
                             "online": 2}  # fmt: skip
                async with connect(srv.port, room, subprotocols=V1) as cy:
                    # A token without a name: the hello names the member.
                    await cy.send(hello(keys.mint("u-cy"), nick="Cy"))
                    wc = await expect(cy, "welcome")
                    assert (wc["nick"], wc["user"]) == ("Cy", "u-cy")
                    for ws in (ann, bob):
                        assert (await expect(ws, "join"))["user"] == "u-cy"
                    await cy.send(json.dumps({"type": "message", "text": "hi from cy"}))
                    for ws in (ann, bob, cy):
                        m = await next_message(ws)
                        assert (m["nick"], m["user"], m["text"]) == ("Cy", "u-cy", "hi from cy")
                l = await expect(ann, "leave")
                assert (l["nick"], l["user"]) == ("Cy", "u-cy")

    run(main())
    assert token_metrics(srv)["ok"] == 3


def test_anonymous_members_are_as_before_with_optional_tokens(server, tmp_path):
    keys = Keys("HS256", tmp_path)
    srv = start(server, keys, "optional")

    async def main():
        async with connect(srv.port, "anon?nick=ann", subprotocols=V1) as ann:
            w = await expect(ann, "welcome")
            assert "user" not in w
            async with connect(srv.port, "anon") as plain:
                j = await expect(ann, "join")
                assert j == {"type": "join", "id": j["id"], "nick": None, "online": 2}
                await plain.send("plain text")
                assert await recv(plain) == "plain text"
                m = await next_message(ann)
                assert "user" not in m and m["nick"] is None
            # A plain client with a token: byte-exact for plain members, `user` for v1 ones.
            async with connect(srv.port, f"anon?token={keys.mint('u-p', name='P')}") as p:
                assert "user" not in await expect(ann, "leave")
                assert (await expect(ann, "join"))["user"] == "u-p"
                await p.send("signed plain")
                assert await recv(p) == "signed plain"
                m = await next_message(ann)
                assert (m["nick"], m["user"], m["text"]) == (None, "u-p", "signed plain")

    run(main())


def test_tokens_are_ignored_with_auth_off(server):
    srv = server(workers=2)

    async def main():
        async with connect(srv.port, "off?nick=ann&token=not.even.a-token", subprotocols=V1) as a:
            w = await expect(a, "welcome")
            assert "user" not in w and w["nick"] == "ann"

    run(main())
    assert token_metrics(srv) == {k: 0 for k in token_metrics(srv)}


# ---- refused tokens -----------------------------------------------------------------------------


def refusal_cases(keys: Keys) -> list[tuple[str, str, str | None, int, str]]:
    """(case, path, Authorization header or None, status, shardcast_tokens_total result)."""
    now = int(time.time())
    other = base64.b64encode(os.urandom(32))
    claims = {"sub": "u-1", "exp": now + 600}
    big = keys.mint(pad="x" * 4200)
    q = lambda token: f"/room?token={token}"  # noqa: E731
    return [
        ("no token (plain)", "/room", None, 401, "missing"),
        ("over 4 KiB", q(big), None, 401, "too_large"),
        ("not a JWT", q("not-a-token"), None, 401, "malformed"),
        ("two parts", "/room", "Bearer abc.def", 401, "malformed"),
        ("header not JSON", q(f"{b64url(b'nope')}.{b64url(b'{}')}.c2ln"), None, 401, "malformed"),
        ("alg none", q(hand_made({"alg": "none", "typ": "JWT"}, claims, None)), None, 401,
         "algorithm"),
        ("RS256 header, HMAC signature", q(hand_made({"alg": "RS256"}, claims, keys.secret)),
         None, 401, "algorithm"),
        ("another secret", q(jwt.encode(claims, other, algorithm="HS256")), None, 401,
         "signature"),
        ("tampered payload", q(tamper(keys.mint())), None, 401, "signature"),
        ("expired", q(keys.mint(exp=now - 60)), None, 401, "expired"),
        ("expired, by header", "/room", f"Bearer {keys.mint(exp=now - 3600)}", 401, "expired"),
        ("not yet valid", q(keys.mint(nbf=now + 600)), None, 401, "not_yet_valid"),
        ("issued in the future", q(keys.mint(iat=now + 600)), None, 401, "not_yet_valid"),
        ("no sub", q(keys.mint(sub=None, name="Ann")), None, 401, "claims"),
        ("name not a nickname", q(keys.mint(name="Ann Smith")), None, 401, "claims"),
        ("rooms not a list", q(keys.mint(rooms="room")), None, 401, "claims"),
        ("room not allowed", q(keys.mint(rooms=["other"])), None, 403, "room"),
    ]  # fmt: skip


def tamper(token: str) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "someone-else"
    return f"{head}.{b64url(json.dumps(claims).encode())}.{sig}"


def test_bad_tokens_get_their_documented_status_and_are_counted(server, tmp_path):
    keys = Keys("HS256", tmp_path)
    srv = start(server, keys, "required")
    expected: dict[str, int] = {}
    for case, path, auth, status, result in refusal_cases(keys):
        for protocol in (None, "shardcast.v1"):
            headers = [f"Authorization: {auth}"] if auth else []
            resp = upgrade(srv.port, path, *headers, protocol=protocol)
            if case.startswith("no token") and protocol:
                # A v1 client may still bring its token in its hello.
                assert resp.status == 101, (case, resp)
                continue
            assert resp.status == status, (case, protocol, resp)
            body = resp.body.decode()
            assert body.count("\n") == 1 and body.startswith(f"{status} "), (case, body)
            if status == 401:
                assert resp.headers.get("www-authenticate") == "Bearer", (case, resp.headers)
            assert resp.headers.get("connection") == "close"
            expected[result] = expected.get(result, 0) + 1
    def tallied():
        m = token_metrics(srv)
        return m if all(m[k] == v for k, v in expected.items()) else None

    try:
        counted = wire.wait_for(tallied, 5, "the refusals counted")
    except AssertionError:
        raise AssertionError(f"expected {expected}, counted {token_metrics(srv)}") from None
    assert counted["ok"] == 0
    handshakes = srv.metrics()
    assert handshakes['shardcast_handshakes_total{result="unauthorized"}'] == sum(
        v for k, v in expected.items() if k != "room")
    assert handshakes['shardcast_handshakes_total{result="ok"}'] == 1  # the v1 upgrade
    # The server took none of it badly.
    async def still_works():
        token = keys.mint("u-ok")
        async with connect(srv.port, f"after?token={token}") as a:
            await a.send("fine")
            assert await recv(a) == "fine"

    run(still_works())


def test_key_confusion_and_foreign_keys_are_refused(server, tmp_path):
    """Against an RS256 public key: an HS256 token whose HMAC key is that public key (the
    classic confusion), `none`, another algorithm's token and another RSA key's token."""
    keys = Keys("RS256", tmp_path)
    srv = start(server, keys, "required")
    claims = {"sub": "u-1", "exp": int(time.time()) + 600}
    confused = hand_made({"alg": "HS256", "typ": "JWT"}, claims, keys.public_pem)
    unsigned = hand_made({"alg": "none"}, claims, None)
    es256 = Keys("ES256", tmp_path).mint()
    (tmp_path / "other").mkdir()
    stranger = Keys("RS256", tmp_path / "other").mint()
    for token, result in [(confused, "algorithm"), (unsigned, "algorithm"), (es256, "algorithm"),
                          (stranger, "signature")]:  # fmt: skip
        resp = upgrade(srv.port, "/room", f"Authorization: Bearer {token}")
        assert resp.status == 401, (result, resp)
    wire.wait_for(lambda: token_metrics(srv)["algorithm"] == 3, 5, "three algorithm refusals")
    assert token_metrics(srv)["signature"] == 1
    resp = upgrade(srv.port, "/room", f"Authorization: Bearer {keys.mint()}")
    assert resp.status == 101, resp


def test_a_token_in_hello_is_checked_and_refusals_close_with_1008(server, tmp_path):
    keys = Keys("EdDSA", tmp_path)
    srv = start(server, keys, "required")
    now = int(time.time())

    async def refused(token: str | None, code: str, reason: str, nick: str | None = "ann"):
        async with connect(srv.port, "hello-room", subprotocols=V1) as ws:
            await ws.send(hello(token, nick))
            err = await expect(ws, "error")
            assert err["code"] == code and err["text"], err
            assert await close_received(ws) == (1008, reason)
            return err["text"]

    async def main():
        assert await refused(None, "unauthorized", "unauthorized") == "a token is required"
        assert await refused(keys.mint(exp=now - 60), "unauthorized", "unauthorized") == \
            "token expired"
        assert await refused("x.y.z", "unauthorized", "unauthorized") == "malformed token"
        await refused(keys.mint(rooms=["elsewhere"]), "forbidden", "room not allowed")
        # A token without a name and no nick: told to name itself, and it may.
        async with connect(srv.port, "hello-room?nick=kept", subprotocols=V1) as ws:
            await ws.send(hello(keys.mint("u-9", rooms=["hello-room"])))
            w = await expect(ws, "welcome")
            assert (w["nick"], w["user"]) == ("kept", "u-9"), "the ?nick= waited for the hello"
        async with connect(srv.port, "hello-room", subprotocols=V1) as ws:
            await ws.send(hello(keys.mint("u-8")))
            assert (await expect(ws, "error"))["code"] == "bad_nick"
            await ws.send(hello(nick="late"))
            w = await expect(ws, "welcome")
            assert (w["nick"], w["user"]) == ("late", "u-8")

    run(main(), timeout=40)
    m = token_metrics(srv)
    assert (m["missing"], m["expired"], m["malformed"], m["room"], m["ok"]) == (1, 1, 1, 1, 2)
    closes = srv.metrics()
    assert closes['shardcast_closes_total{reason="unauthorized"}'] == 3
    assert closes['shardcast_closes_total{reason="room_forbidden"}'] == 1


# ---- rooms and read-only on every shard --------------------------------------------------------


def test_rooms_and_read_only_hold_on_every_shard(server, tmp_path):
    keys = Keys("ES256", tmp_path)
    srv = start(server, keys, "optional")
    shards = expected_shards(WORKERS)
    room = "stage"

    async def main():
        # Round-robin hand-off: 2 × shards connections of each kind reach every shard.
        n = 2 * shards
        for i in range(n):
            resp = upgrade(srv.port, f"/backstage?token={keys.mint(f'u{i}', rooms=[room])}")
            assert resp.status == 403, resp
        speaker = keys.mint("speaker", name="Speaker", rooms=[room])
        async with connect(srv.port, f"{room}?token={speaker}", subprotocols=V1) as spk:
            await expect(spk, "welcome")
            listeners = []
            for i in range(n):
                token = keys.mint(f"l{i}", name=f"L{i}", rooms=[room], publish=False)
                ws = await connect(srv.port, f"{room}?token={token}", subprotocols=V1)
                listeners.append(ws)
                assert (await expect(ws, "welcome"))["user"] == f"l{i}"
            plains = []
            for i in range(n):
                token = keys.mint(f"p{i}", publish=False)
                plains.append(await connect(srv.port, f"{room}?token={token}"))
            try:
                for ws in listeners:
                    await ws.send(json.dumps({"type": "message", "text": "may I?"}))
                    err = await skip_notices(ws)
                    assert (err["type"], err["code"]) == ("error", "forbidden"), err
                for ws in plains:
                    await ws.send("may I?")
                    assert await close_received(ws) == (1008, "read-only")
                await spk.send(json.dumps({"type": "message", "text": "only me"}))
                for ws in [spk, *listeners]:
                    m = await next_message(ws)
                    assert (m["text"], m["user"], m["nick"]) == ("only me", "speaker", "Speaker")
            finally:
                for ws in [*listeners, *plains]:
                    await ws.close()

    run(main(), timeout=60)
    m = srv.metrics()
    assert m['shardcast_tokens_total{result="room"}'] == 2 * shards
    assert m['shardcast_closes_total{reason="read_only"}'] == 2 * shards


# ---- expiry -------------------------------------------------------------------------------------


def test_a_member_is_closed_when_its_token_expires(server, tmp_path):
    keys = Keys("HS256", tmp_path)
    srv = start(server, keys, "optional")

    async def main():
        soon = keys.mint("u-brief", name="Brief", exp=int(time.time()) + 1)
        forever = keys.mint("u-long", name="Long")
        async with connect(srv.port, f"exp?token={forever}", subprotocols=V1) as stay:
            await expect(stay, "welcome")
            async with connect(srv.port, f"exp?token={soon}", subprotocols=V1) as brief:
                await expect(brief, "welcome")
                assert (await expect(stay, "join"))["user"] == "u-brief"
                # exp + the 5 s leeway: within about 6 s; bounded generously.
                assert await close_received(brief, timeout=20) == (1008, "token expired")
            left = await expect(stay, "leave", timeout=5)
            assert left["user"] == "u-brief"

    run(main(), timeout=40)
    m = srv.metrics()
    assert m['shardcast_closes_total{reason="token_expired"}'] == 1
    assert m['shardcast_timer_closes_total{timer="token"}'] == 1


# ---- start-up ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, says",
    [
        (["--auth", "required"], "--token-secret-file or --token-public-key"),
        (["--token-secret-file", "{secret}"], "needs --auth optional|required"),
        (["--auth", "optional", "--token-secret-file", "{missing}"], "cannot read the token key"),
        (["--auth", "optional", "--token-secret-file", "{short}"], "at least 32"),
        (["--auth", "optional", "--token-public-key", "{private}"], "private key"),
        (["--auth", "optional", "--token-public-key", "{secret}"], "not PEM"),
    ],
)
def test_a_bad_key_is_a_clear_startup_error(tmp_path, args, says):
    files = {
        "secret": tmp_path / "secret.txt",
        "short": tmp_path / "short.txt",
        "missing": tmp_path / "missing.pem",
        "private": tmp_path / "private.pem",
    }
    files["secret"].write_bytes(b"k" * 40)
    files["short"].write_bytes(b"k" * 16 + b"\n")
    files["private"].write_bytes(Keys("EdDSA", tmp_path).signing)
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    out = subprocess.run(
        [str(BIN), "--listen", "127.0.0.1:0", "--model", MODEL, "--no-pin", *args],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
    )  # fmt: skip
    assert out.returncode != 0
    assert b"listening on" not in out.stdout
    assert says in out.stderr.decode(), out.stderr


# ---- logs ----------------------------------------------------------------------------------------


def test_tokens_and_the_secret_never_reach_the_log(server, tmp_path):
    """Every way a token travels, accepted and refused, with the most verbose JSON log."""
    keys = Keys("HS256", tmp_path)
    srv = start(server, keys, "optional", "--log-format", "json", "--log-level", "trace")
    tokens = [keys.mint(f"user-{i}", name=f"N{i}") for i in range(3)]

    async def main():
        async with connect(srv.port, f"logs?token={tokens[0]}", subprotocols=V1) as a, \
                connect(srv.port, "logs", subprotocols=V1,
                        additional_headers={"Authorization": f"Bearer {tokens[1]}"}) as b, \
                connect(srv.port, "logs", subprotocols=V1) as c:  # fmt: skip
            await expect(a, "welcome")
            await expect(b, "welcome")
            await c.send(hello(tokens[2]))
            await expect(c, "welcome")
            await c.send(json.dumps({"type": "message", "text": "logged?"}))
            for ws in (a, b, c):
                await next_message(ws)

    run(main())
    refused = []
    for _, path, auth, _, _ in refusal_cases(keys):
        headers = [f"Authorization: {auth}"] if auth else []
        upgrade(srv.port, path, *headers)
        refused.append(path.partition("token=")[2] or (auth or "").removeprefix("Bearer "))
    srv.expected_exit = True
    srv.process.send_signal(signal.SIGTERM)
    assert srv.process.wait(timeout=10) == 0
    log = srv.log()
    lines = log.splitlines()
    assert lines and all(line.startswith("{") for line in lines)
    assert any('"level":"DEBUG"' in line for line in lines), "debug lines were written"
    secrets = [*tokens, *(t for t in refused if t), keys.secret.decode()]
    for secret in secrets:
        # The signature part too: a token cut into pieces must not show either.
        for piece in {secret, secret.rsplit(".", 1)[-1]}:
            if len(piece) >= 16:
                assert piece not in log, f"a token or the secret is in the log: {piece[:24]}…"
    # The access lines name the user, never the token.
    records = [json.loads(line) for line in lines]
    users = {r["fields"].get("user") for r in records if r["target"] == "shardcast::access"}
    assert {"user-0", "user-1", "user-2"} <= users


# ---- across nodes ----------------------------------------------------------------------------


def test_names_and_user_ids_reach_other_nodes(server, redis, tmp_path):
    """Two nodes over Redis, one key: a member with a token on one node is seen with its
    name and user id on the other (join, message, leave), an anonymous one without."""
    from test_cluster import expect as next_of, start_nodes, wait_subscribed, welcome_until_online

    keys = Keys("EdDSA", tmp_path)
    a, b = start_nodes(server, redis, 2, "--auth", "optional", *keys.flag)

    async def main():
        obs = await connect(b.port, "x?nick=obs", subprotocols=V1)
        await next_of(obs, "welcome")
        token = keys.mint("u-far", name="Far")
        far = await connect(a.port, f"x?token={token}", subprotocols=V1)
        wf = await welcome_until_online(far, 2)
        assert (wf["nick"], wf["user"]) == ("Far", "u-far")
        j = await next_of(obs, "join")
        assert j == {"type": "join", "id": wf["id"], "nick": "Far", "user": "u-far", "online": 2}
        wait_subscribed(redis, "x", 2)
        await far.send(json.dumps({"type": "message", "text": "from afar"}))
        m = await next_of(obs, "message")
        assert (m["id"], m["nick"], m["user"], m["text"]) == (wf["id"], "Far", "u-far",
                                                               "from afar")  # fmt: skip
        await obs.send(json.dumps({"type": "message", "text": "anonymous back"}))
        m = await next_of(far, "message")
        while m["text"] != "anonymous back":
            m = await next_of(far, "message")
        assert m["nick"] == "obs" and "user" not in m
        await far.close()
        left = await next_of(obs, "leave")
        assert (left["id"], left["user"]) == (wf["id"], "u-far")
        await obs.close()

    run(main(), timeout=30)
