#!/usr/bin/env python3
"""Kernel memory pinned by stalled readers, with and without `--socket-send-buffer`
(docs/benchmarks.md, "Socket send buffers").

Starts the server, connects `--readers` members that complete the handshake and then never
read (receive buffer 4 KiB), and broadcasts 1 KiB messages to their room in steps. After each
step it reads the kernel's TCP memory (`mem` in /proc/net/sockstat, pages, both ends of every
loopback connection) and the server's RSS, until the readers are cut off as slow consumers
(`--max-buffered`) or `--max-mib` per reader was sent. Prints the peak, per reader.

  python3 docs/bench/stalled-readers.py --send-buffer default --send-buffer 65536
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER = Path(os.environ.get("SHARDCAST_BIN", REPO / "target/release/shardcast"))
PAGE = os.sysconf("SC_PAGE_SIZE")


def tcp_mem_bytes() -> int:
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1]) * PAGE
    raise RuntimeError("no TCP line in /proc/net/sockstat")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def handshake(port: int, path: str, rcvbuf: int | None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the handshake")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    return sock


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    header = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big") if n >= 126 else bytes([0x81, 0x80 | n])
    return header + mask + body


def run(send_buffer: str, readers: int, max_mib: int) -> dict:
    args = [str(SERVER), "--listen", "127.0.0.1:0", "--no-pin", "--log-level", "warn",
            "--workers", "2"]
    if send_buffer != "default":
        args += ["--socket-send-buffer", send_buffer]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline().decode()
        port = int(line.rsplit(":", 1)[1])
        base_mem = tcp_mem_bytes()
        base_rss = rss_bytes(proc.pid)
        stalled = [handshake(port, "/stalled", 4096) for _ in range(readers)]
        sender = handshake(port, "/stalled", None)
        sender.settimeout(0.05)
        frame = masked_text(b"x" * 1024)
        peak_mem, peak_rss, sent_kib = 0, 0, 0
        while sent_kib < max_mib * 1024:
            for _ in range(128):
                sender.sendall(frame)
            sent_kib += 128
            # The sender reads its own copies so that it is never the stalled one.
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                try:
                    if not sender.recv(1 << 20):
                        break
                except socket.timeout:
                    break
            time.sleep(0.05)
            peak_mem = max(peak_mem, tcp_mem_bytes() - base_mem)
            peak_rss = max(peak_rss, rss_bytes(proc.pid) - base_rss)
            if slow_consumer_closes(port) > 0:
                break
        del stalled
        return {"send_buffer": send_buffer, "readers": readers, "sent_kib": sent_kib,
                "kernel_per_reader": peak_mem / readers, "rss_per_reader": peak_rss / readers}
    finally:
        proc.kill()
        proc.wait()


def slow_consumer_closes(port: int) -> int:
    """The server's count of readers cut off as slow consumers (/metrics)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = b""
        while chunk := sock.recv(65536):
            body += chunk
    for line in body.decode().splitlines():
        if line.startswith("shardcast_slow_consumer_closes_total "):
            return int(float(line.split()[1]))
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--send-buffer", action="append", help="'default' or bytes; repeatable")
    ap.add_argument("--readers", type=int, default=200)
    ap.add_argument("--max-mib", type=int, default=6, help="stop after this much per reader")
    opts = ap.parse_args()
    print("| --socket-send-buffer | sent per reader | kernel TCP memory per reader (peak) | server RSS per reader (peak) |")
    print("|---|--:|--:|--:|")
    for sb in opts.send_buffer or ["default", "65536"]:
        r = run(sb, opts.readers, opts.max_mib)
        print(f"| {sb} | {r['sent_kib'] / 1024:.1f} MiB | {r['kernel_per_reader'] / 1024:,.0f} KiB "
              f"| {r['rss_per_reader'] / 1024:,.0f} KiB |", flush=True)


if __name__ == "__main__":
    main()
