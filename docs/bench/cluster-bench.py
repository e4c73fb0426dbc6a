#!/usr/bin/env python3
"""Cross-node fan-out over Redis beside a single node, on one machine (docs/benchmarks.md).

Starts redis-server and shardcast nodes on loopback, runs `shardcast-load fanout` in three
setups, interleaved `--runs` times so that machine noise hits all alike, and prints a
Markdown table of medians:

  single  one node, --workers 2: 1,000 subscribers, 4 publishers
  split   two nodes, --workers 1 each, joined by Redis: subscribers and publishers spread
          over both (half the deliveries cross nodes)
  cross   the same two nodes, publishers all on node A and subscribers all on node B: every
          subscriber delivery crosses Redis

CPU is read from /proc/PID/stat before and after each run (nodes summed, Redis apart).

  python3 docs/bench/cluster-bench.py --rate 800 --runs 3
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
SERVER = REPO / "target/release/shardcast"
LOAD = REPO / "target/release/shardcast-load"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_node(*args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [str(SERVER), "--listen", "127.0.0.1:0", "--no-pin", "--log-level", "warn", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    line = proc.stdout.readline().decode()
    return proc, int(line.rsplit(":", 1)[1])


def fanout(urls: list[str], publisher_url: str | None, args) -> dict:
    cmd = [str(LOAD), "fanout", "--subscribers", "1000", "--publishers", "4",
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
    parser.add_argument("--rate", type=float, default=800)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    url = f"redis://127.0.0.1:{redis_port}"
    single, single_port = start_node("--workers", "2")
    a, a_port = start_node("--workers", "1", "--redis", url, "--node-id", "a")
    b, b_port = start_node("--workers", "1", "--redis", url, "--node-id", "b")
    procs = [redis, single, a, b]
    time.sleep(3)  # the nodes exchange heartbeats
    setups = {
        "single": ([single], [f"ws://127.0.0.1:{single_port}/bench"], None),
        "split": ([a, b], [f"ws://127.0.0.1:{a_port}/bench", f"ws://127.0.0.1:{b_port}/bench"], None),
        "cross": ([a, b], [f"ws://127.0.0.1:{b_port}/bench"], f"ws://127.0.0.1:{a_port}/bench"),
    }
    results: dict[str, list[dict]] = {name: [] for name in setups}
    try:
        for run in range(args.runs):
            for name, (nodes, urls, publisher_url) in setups.items():
                before = [cpu(p.pid) for p in nodes], cpu(redis.pid), time.monotonic()
                report = fanout(urls, publisher_url, args)
                after = [cpu(p.pid) for p in nodes], cpu(redis.pid), time.monotonic()
                node_cpu = sum(after[0]) - sum(before[0])
                report["node_cpu_s"] = node_cpu
                report["redis_cpu_pct"] = 100 * (after[1] - before[1]) / (after[2] - before[2])
                report["node_cpu_pct"] = 100 * node_cpu / (after[2] - before[2])
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
    print(f"| setup | p50 ms | p99 ms | deliveries/s | loss | node CPU % | Redis CPU % |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        print(
            f"| {name} | {med(rows, lambda r: r['latency_ms']['p50']):.2f} "
            f"| {med(rows, lambda r: r['latency_ms']['p99']):.2f} "
            f"| {med(rows, lambda r: r['deliveries_per_sec']):,.0f} "
            f"| {sum(r['loss'] for r in rows)} "
            f"| {med(rows, lambda r: r['node_cpu_pct']):.0f} "
            f"| {med(rows, lambda r: r['redis_cpu_pct']):.1f} |"
        )


if __name__ == "__main__":
    main()
