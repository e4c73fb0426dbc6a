"""Starting the server as an operator does (issue 13, "Start-up and errors"): `--listen` as
people write it, a busy port explained once with what to do, and a start-up line in human
units with no debug formatting.
"""

from __future__ import annotations

import socket
import subprocess

from conftest import BIN, MODEL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_briefly(*args: str, timeout: float = 10.0) -> tuple[int | None, str, str]:
    """Starts the server with `args`; once it says `listening on` (or exits), stops it.
    Returns (exit code if it exited by itself, stdout, stderr)."""
    proc = subprocess.Popen([str(BIN), "--model", MODEL, "--log-level", "info", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline().decode()  # "listening on …", or "" when it exited
    exited = None if first else proc.wait(timeout=timeout)
    if exited is None:
        proc.terminate()
    out, err = proc.communicate(timeout=timeout)
    return exited, first + out.decode(), err.decode()


def test_listen_takes_a_bare_port_and_a_host_name():
    port = free_port()
    code, out, _ = run_briefly("--listen", str(port))
    assert code is None, out
    assert out.startswith(f"listening on 127.0.0.1:{port}\n"), out
    port = free_port()
    code, out, _ = run_briefly("--listen", f"localhost:{port}")
    assert code is None, out
    assert out.startswith("listening on ") and out.split("\n")[0].endswith(f":{port}"), out


def test_a_bad_listen_value_says_what_to_write():
    code, _, err = run_briefly("--listen", "nohost")
    assert code == 2, err
    assert "no port in \"nohost\"" in err and "PORT, IP:PORT or HOST:PORT" in err, err


def test_a_busy_port_is_explained_once_with_what_to_do():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run_briefly("--listen", f"127.0.0.1:{port}")
    assert code == 1 and out == "", (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == (
        f"shardcast: cannot start: cannot listen on 127.0.0.1:{port}: the address is already "
        "in use (another server listens there): stop it, or choose another address with --listen"
    ), err
    assert err.count("in use") == 1, err


def test_the_start_up_line_is_in_human_units():
    port = free_port()
    code, out, err = run_briefly("--listen", str(port), "--idle-timeout", "90",
                                 "--max-message", "65536")
    assert code is None, err
    start = [line for line in err.splitlines() if "shardcast listening on" in line]
    assert len(start) == 1, err
    line = start[0]
    for human in ("max message 64 KiB", "max buffered 1 MiB", "ping 30s", "pong 10s",
                  "idle 1m30s", "history 100 messages for 5m"):
        assert human in line, (human, line)
    for debug in ("Some(", "None", "Sharded", "Shared", "Single", "thread(s)"):
        assert debug not in line, (debug, line)
    threads = {"sharded": "shards", "shared": "threads", "single": "1 thread"}[MODEL]
    assert f"{MODEL} model, " in line and threads in line, line
    # Nothing else at info level before it: no debug-style lines.
    before = err.split("shardcast listening on")[0]
    assert "RLIMIT_NOFILE" not in before and "ignored" not in before, before


def test_a_bad_redis_url_is_refused_before_any_cluster_claim():
    code, out, err = run_briefly("--redis", "notaurl", "--node-id", "a", "--listen", "0")
    assert code == 1 and out == "", (code, out, err)
    assert "invalid --redis URL notaurl" in err, err
    assert "cluster member" not in err, err
