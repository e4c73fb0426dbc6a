#!/usr/bin/env python3
"""Cross-node fan-out over Redis beside a single node, on one machine (docs/benchmarks.md).

Starts redis-server and shardcast nodes on loopback, runs `shardcast-load fanout` in five
setups, interleaved `--runs` times so that machine noise hits all alike, and prints a
Markdown table of medians:

  single        one node, --workers 2: 1,000 subscribers (--subscribers), 4 publishers
  split, h0     two nodes, --workers 1 each, --history-size 0 (no cluster-wide order: each node
                delivers at once), joined by their own Redis: subscribers and publishers spread
                over both (half the deliveries cross nodes)
  split         the same with history on (the default): rooms have one order across nodes
  cross, h0     the history-off pair, publishers all on node A and subscribers all on node B:
                every subscriber delivery crosses Redis
  cross         the same on the history-on pair

Each pair of nodes has a redis-server of its own, so each setup's Redis CPU is its own. CPU
is read from /proc/PID/stat before and after each run (nodes summed, Redis apart).

  python3 docs/bench/cluster-bench.py --rate 800 --runs 3

The binaries are target/release/shardcast and shardcast-load, or $SHARDCAST_BIN and
$SHARDCAST_LOAD (as for the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER = Path(os.environ.get("SHARDCAST_BIN", REPO / "target/release/shardcast"))
LOAD = Path(os.environ.get("SHARDCAST_LOAD", REPO / "target/release/shardcast-load"))
TICK = os.sysconf("SC_CLK_TCK")
ROOM = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def redis_cpu(redis: subprocess.Popen | None) -> float:
    return cpu(redis.pid) if redis else 0.0


def start_redis(procs: list[subprocess.Popen]) -> tuple[subprocess.Popen, str]:
    """A redis-server without persistence on a free port, once it answers PING."""
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    procs.append(redis)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return redis, f"redis://127.0.0.1:{port}"
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server on port {port} did not answer within 10 s")
        time.sleep(0.05)


def start_node(procs: list[subprocess.Popen], *args: str) -> tuple[subprocess.Popen, str]:
    """A node on a free port; returns it and the URL of the benchmark room on it."""
    proc = subprocess.Popen(
        [str(SERVER), "--listen", "127.0.0.1:0", "--no-pin", "--log-level", "warn", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    procs.append(proc)
    line = proc.stdout.readline().decode()
    return proc, f"ws://127.0.0.1:{int(line.rsplit(':', 1)[1])}/{ROOM}"


def fanout(urls: list[str], publisher_url: str | None, args) -> dict:
    cmd = [str(LOAD), "fanout", "--subscribers", str(args.subscribers), "--publishers", "4",
           "--rate", str(args.rate), "--size", "64", "--duration", str(args.duration),
           "--warmup", "1", "--threads", "1", "--json", "--quiet"]  # fmt: skip
    for url in urls:
        cmd += ["--url", url]
    if publisher_url:
        cmd += ["--publisher-url", publisher_url]
    out = subprocess.run(cmd, capture_output=True, timeout=300, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=800, help="messages/s over all publishers")
    parser.add_argument("--duration", type=float, default=5, help="measured seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="rounds of all setups (medians)")
    parser.add_argument("--subscribers", type=int, default=1000,
                        help="members of the room; a small room shows the Redis round trip, "
                        "which writing to 1,000 sockets hides")  # fmt: skip
    args = parser.parse_args()

    procs: list[subprocess.Popen] = []
    # name -> (nodes, Redis or None, subscriber URLs, publisher URL or None)
    setups: dict[str, tuple[list, subprocess.Popen | None, list[str], str | None]] = {}
    try:
        single, single_url = start_node(procs, "--workers", "2")
        setups["single node, 2 shards"] = ([single], None, [single_url], None)
        for history, label in ((["--history-size", "0"], "history off"), ([], "history on")):
            redis, redis_url = start_redis(procs)
            tag = "h0" if history else "h1"
            a, a_url = start_node(procs, "--workers", "1", "--redis", redis_url,
                                  "--node-id", f"{tag}a", *history)  # fmt: skip
            b, b_url = start_node(procs, "--workers", "1", "--redis", redis_url,
                                  "--node-id", f"{tag}b", *history)  # fmt: skip
            setups[f"two nodes, split, {label}"] = ([a, b], redis, [a_url, b_url], None)
            setups[f"two nodes, all cross-node, {label}"] = ([a, b], redis, [b_url], a_url)
        time.sleep(3)  # the nodes exchange heartbeats
        results: dict[str, list[dict]] = {name: [] for name in setups}
        for run in range(args.runs):
            for name, (nodes, redis, urls, publisher_url) in setups.items():
                before = [cpu(p.pid) for p in nodes], redis_cpu(redis), time.monotonic()
                report = fanout(urls, publisher_url, args)
                after = [cpu(p.pid) for p in nodes], redis_cpu(redis), time.monotonic()
                node_cpu = sum(after[0]) - sum(before[0])
                report["node_cpu_s"] = node_cpu
                report["node_cpu_pct"] = 100 * node_cpu / (after[2] - before[2])
                report["redis_cpu_pct"] = (
                    100 * (after[1] - before[1]) / (after[2] - before[2]) if redis else None
                )
                results[name].append(report)
                print(f"run {run + 1} {name}: p50 {report['latency_ms']['p50']:.2f} ms, "
                      f"p99 {report['latency_ms']['p99']:.2f} ms, "
                      f"{report['deliveries_per_sec']:.0f} deliveries/s, loss {report['loss']}",
                      flush=True)  # fmt: skip
    finally:
        for p in procs:
            p.kill()
            p.wait()

    med = lambda rows, f: statistics.median(f(r) for r in rows)  # noqa: E731
    print()
    print("| setup | p50 ms | p99 ms | deliveries/s | loss | node CPU % | Redis CPU % |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name, rows in results.items():
        redis_pct = (
            f"{med(rows, lambda r: r['redis_cpu_pct']):.1f}"
            if rows[0]["redis_cpu_pct"] is not None
            else "–"
        )
        print(
            f"| {name} | {med(rows, lambda r: r['latency_ms']['p50']):.2f} "
            f"| {med(rows, lambda r: r['latency_ms']['p99']):.2f} "
            f"| {med(rows, lambda r: r['deliveries_per_sec']):,.0f} "
            f"| {sum(r['loss'] for r in rows)} "
            f"| {med(rows, lambda r: r['node_cpu_pct']):.0f} "
            f"| {redis_pct} |"
        )


if __name__ == "__main__":
    main()
