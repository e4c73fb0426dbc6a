"""`shardcast-load resume` across two nodes over a real Redis (issue 14, docs/cluster.md).

Each test starts its own redis-server and two shardcast nodes (stopped by PID at teardown) and
runs the load generator's resume scenario with both nodes' URLs: subscribers and publishers
are spread over the nodes, and every reconnect goes to the other node, as behind a load
balancer. The JSON report is checked.

What holds whether the nodes number a room each on their own (a resume on the other node is
then `recovered: false`) or share Redis as the room's sequencer: reconnects happen and each
changes node, every reconnect is answered with `recovered` (or ended before its welcome), and
no subscriber gets an offset twice. Exact recovery across nodes needs the sequencer.
"""

from __future__ import annotations

import json
import subprocess

import pytest

import wire
from test_cluster import start_nodes, wait_subscribed
from test_load_generator import LOAD

ROOM = "resume"
# Generous: the run itself takes ~5 s (connect, 0.5 + 3 s of publishing, the drain).
TOOL_TIMEOUT = 45


def run_resume(server, redis) -> dict:
    """Two nodes, a plain member held on each (so both subscribe to the room's channel before
    any traffic), then 10 subscribers dropping every 0.5 s on average and 2 publishers at
    100 msg/s for 3.5 s. Returns the JSON report."""
    assert LOAD.is_file(), f"{LOAD} not found: run `cargo build --release --workspace`"
    # History far deeper than any gap of this run (~10 messages per drop): a resume that is
    # not recovered is never the history's fault.
    nodes = start_nodes(server, redis, 2, "--history-size", "1000")
    keepers = [wire.ws_connect(node.port, f"/{ROOM}") for node in nodes]
    try:
        wait_subscribed(redis, ROOM, 2)
        args = [str(LOAD), "resume", "--subscribers", "10", "--publishers", "2",
                "--rate", "100", "--duration", "3", "--warmup", "0.5", "--drop-every", "0.5",
                "--reconnect-after", "0.1", "--drain", "15", "--seed", "7",
                "--json", "--quiet"]  # fmt: skip
        for node in nodes:
            args += ["--url", node.url(ROOM)]
        tool = subprocess.run(args, capture_output=True, timeout=TOOL_TIMEOUT)
    finally:
        for conn in keepers:
            conn.close()
    # Exit 1 would mean a loss or duplicate although every resume was recovered, or no offsets.
    assert tool.returncode == 0, tool.stderr.decode(errors="replace")
    return json.loads(tool.stdout)


def summary(report: dict) -> str:
    return report["label"] + "\n" + json.dumps(report, indent=1)


def test_resume_across_nodes_lands_on_the_other_node_without_duplicates(server, redis):
    r = run_resume(server, redis)
    s = summary(r)
    assert r["connect_failures"] == 0, s
    assert r["drops"] > 0 and r["reconnects"] >= r["drops"], s
    # Two URLs: every reconnect went to the node the subscriber was not on.
    assert r["reconnects_to_another_node"] == r["reconnects"], s
    # Every resume was answered with `recovered` (true or false), unless it ended before its
    # welcome; with the drain complete, none is still joining.
    assert r["drained"], s
    assert r["unanswered"] == 0, s
    assert r["recovered"] + r["not_recovered"] + r["reconnects_unwelcomed"] == r["reconnects"], s
    assert r["duplicates"] == 0, s
    assert r["tail_missing"] == 0, s
    assert r["unparsable"] + r["messages_without_offset"] + r["welcomes_without_offset"] == 0, s


def test_resume_across_nodes_is_exact(server, redis):
    r = run_resume(server, redis)
    s = summary(r)
    assert r["reconnects_to_another_node"] == r["reconnects"] > 0, s
    # One epoch and one numbering on both nodes: every answered resume recovered exactly.
    assert r["drained"], s
    assert r["not_recovered"] + r["unanswered"] == 0, s
    assert r["recovered"] == r["reconnects"] - r["reconnects_unwelcomed"] > 0, s
    assert (r["lost"], r["duplicates"], r["tail_missing"]) == (0, 0, 0), s
    # By token too (which sees across nodes whatever their numbering): nothing missed or twice.
    assert (r["missed"], r["received_twice"]) == (0, 0), s
    # Every subscriber has every message from its first welcome to the room's last one.
    assert r["delivered"] == r["sent"] * r["subscribers"], s
