"""Interoperability with websocat, an independent (Rust) WebSocket client.

The test setup (tests/run-all.sh) installs websocat into target/tools with INSTALL_HINT's
command; WEBSOCAT overrides the path. A missing websocat fails the test on purpose: it must not
silently stop being checked.
"""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import threading
from pathlib import Path

import pytest

from chat import connect, recv, run
REPO = Path(__file__).resolve().parents[2]
WEBSOCAT = os.environ.get("WEBSOCAT", str(REPO / "target/tools/bin/websocat"))
INSTALL_HINT = "cargo install websocat --version 1.14.1 --locked --root target/tools"


def line_reader(stream) -> queue.Queue:
    """Lines of `stream`, decoded, via a queue so reads can time out; None marks EOF."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for raw in stream:
            lines.put(raw.decode(errors="replace").rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def read_lines_until(lines: queue.Queue, wanted: str, timeout: float = 5.0) -> list[str]:
    seen = []
    while wanted not in seen:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"websocat printed {seen} and then nothing within {timeout} s")
        if line is None:
            pytest.fail(f"websocat exited after printing {seen}")
        seen.append(line)
    return seen


def test_websocat_chats_with_a_python_client(server):
    if not os.access(WEBSOCAT, os.X_OK):
        pytest.fail(f"websocat not found at {WEBSOCAT}; install it with `{INSTALL_HINT}`")
    srv = server()
    sent = ["hello from websocat", "second line ✓"]

    async def scenario():
        # The python client joins first, so it is in the room before websocat talks.
        async with connect(srv.port, "wsc") as py:
            wsc = subprocess.Popen(
                [WEBSOCAT, "-t", f"ws://127.0.0.1:{srv.port}/wsc"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                out = line_reader(wsc.stdout)
                # One line of input is one text message (websocat keeps the "\n" in it);
                # stdin stays open so that websocat keeps listening.
                wsc.stdin.write("".join(f"{line}\n" for line in sent).encode())
                wsc.stdin.flush()
                assert [await recv(py), await recv(py)] == [f"{line}\n" for line in sent]
                await py.send("hi from python")
                # websocat hears everything in its room: its own lines and ours.
                printed = await asyncio.to_thread(read_lines_until, out, "hi from python")
                assert [line for line in printed if line in sent] == sent
                wsc.stdin.close()  # EOF: websocat closes the WebSocket and exits
                assert wsc.wait(timeout=5) == 0, wsc.stderr.read().decode()
            finally:
                if wsc.poll() is None:
                    wsc.kill()
                    wsc.wait(timeout=5)

    run(scenario(), timeout=30)
