"""`--socket-send-buffer`: accepted sockets get that SO_SNDBUF (the kernel doubles it), so a
stalled reader pins at most that much kernel memory (docs/operations.md).

The server's side of each connection is read with `ss` (iproute2): `skmem:(...,tb<sndbuf>,...)`
and the Send-Q column.
"""

from __future__ import annotations

import re
import subprocess

from websockets.sync.client import connect as sync_connect

from wire import wait_for, ws_connect

ASKED = 32 * 1024


def server_side(port: int, client_port: int) -> tuple[int, int] | None:
    """(Send-Q, sndbuf) of the server's socket for the client at `client_port`, from `ss`."""
    out = subprocess.run(
        ["ss", "-tmnH", "state", "established", f"( sport = :{port} and dport = :{client_port} )"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout
    send_q = re.search(rf"^\s*\d+\s+(\d+)\s+127\.0\.0\.1:{port}\s", out, re.M)
    sndbuf = re.search(r"\btb(\d+)\b", out)
    if not (send_q and sndbuf):
        return None
    return int(send_q.group(1)), int(sndbuf.group(1))


def test_the_send_buffer_is_set_and_bounds_what_a_stalled_reader_pins(server):
    srv = server("--socket-send-buffer", str(ASKED))
    assert f"socket send buffer: {2 * ASKED} bytes per connection (asked {ASKED})" in srv.log()
    # A member that never reads, with a small receive window of its own.
    stalled = ws_connect(srv.port, "/buffers", rcvbuf=4096)
    client_port = stalled.sock.getsockname()[1]
    try:
        with sync_connect(f"ws://127.0.0.1:{srv.port}/buffers") as sender:
            # 400 KiB: well past the kernel's buffers, well under --max-buffered (1 MiB), so
            # the member stays connected and the rest waits in the server's queue.
            for _ in range(400):
                sender.send("x" * 1024)
            # The sender gets its own messages back: all of them have reached the room.
            for _ in range(400):
                sender.recv(timeout=10)

            def full():
                side = server_side(srv.port, client_port)
                return side if side and side[0] > 0 else None

            send_q, sndbuf = wait_for(full, 10, "the stalled reader's send queue to fill")
            assert sndbuf == 2 * ASKED
            assert send_q <= sndbuf, (send_q, sndbuf)
    finally:
        stalled.close()
