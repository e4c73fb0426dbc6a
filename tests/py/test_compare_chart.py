"""`shardcast-load compare` draws what decides between models (issue 13, item 12).

The default comparison is a sweep per model x workers. Its SVG chart is checked by structure
only (no figure is asserted): a title naming the scenario and the machine's cores; three
panels (latency, deliveries per server CPU-second, loss) against the offered rate, each with
one series per configuration and that configuration's knee; axis labels in one format; a
legend naming every configuration. And `--server-bin` defaults to the `shardcast` beside
`shardcast-load`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import BIN, MODEL, REPO
from wire import wait_for

LOAD = Path(os.environ.get("SHARDCAST_LOAD", REPO / "target/release/shardcast-load"))
SVG = "{http://www.w3.org/2000/svg}"
# Each run below is a few seconds; the bound only stops a hung run.
RUN_TIMEOUT = 120
# "quantity (unit)", the quantity in lower case: the one format of every axis label.
AXIS_LABEL = re.compile(r"^[a-z][a-z ]*[a-z] \([^()]+\)$")
# A tiny sweep: 3 steps of well under a second each, far below any server's limit; the
# p99 limit is generous so that a loaded machine still finds a knee.
TINY_SWEEP = [
    "sweep", "--subscribers", "5", "--publishers", "1", "--size", "64",
    "--start-rate", "40", "--factor", "2", "--max-rate", "160", "--p99-limit-ms", "5000",
    "--duration", "0.5", "--warmup", "0.2", "--drain", "3", "--settle", "0.1",
]  # fmt: skip


def other_model() -> str:
    return "single" if MODEL != "single" else "sharded"


def run_load(args: list[str], load: Path = LOAD) -> subprocess.CompletedProcess:
    assert load.is_file(), f"{load} not found: run `cargo build --release --workspace`"
    return subprocess.run(
        [str(load), *args], capture_output=True, text=True, timeout=RUN_TIMEOUT
    )


def texts(element: ET.Element, cls: str) -> list[str]:
    return [
        "".join(t.itertext())
        for t in element.iter(f"{SVG}text")
        if cls in (t.get("class") or "").split()
    ]


def groups(element: ET.Element, cls: str) -> list[ET.Element]:
    return [g for g in element.iter(f"{SVG}g") if g.get("class") == cls]


def test_compare_sweeps_every_configuration_into_one_chart(tmp_path):
    models = [MODEL, other_model()]
    labels = [f"{m}, 1 worker" for m in models]
    chart, report = tmp_path / "compare.svg", tmp_path / "compare.json"
    done = run_load([
        "compare", "--server-bin", str(BIN), "--models", ",".join(models), "--workers", "1",
        "--plot", str(chart), f"--json={report}", "--quiet", *TINY_SWEEP,
    ])  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The text table has every step of every configuration.
    assert "== every step" in done.stdout, done.stdout
    for model in models:
        assert re.search(rf"^\s*{model}\s+1\s+40\s", done.stdout, re.M), done.stdout

    # The JSON carries the series: every step's figures per configuration, and the knee.
    runs = json.loads(report.read_text())["runs"]
    assert [r["model"] for r in runs] == models
    for run in runs:
        sweep = run["report"]
        assert sweep["scenario"] == "sweep"
        assert [s["rate"] for s in sweep["steps"]][:1] == [40.0]
        for step in sweep["steps"]:
            assert {"p50", "p99"} <= step["report"]["latency_ms"].keys()
            assert step["report"]["server"]["deliveries_per_cpu_sec"] >= 0
        # Five subscribers at 40 msg/s lose nothing and stay far inside 5 s.
        assert sweep["best_rate"] is not None, sweep["steps"][0]["verdict"]

    svg = ET.parse(chart).getroot()
    assert svg.tag == f"{SVG}svg"
    (title,) = texts(svg, "title")
    cores = len(os.sched_getaffinity(0))
    for part in ["sweep", "5 subscribers", "1 publisher", "64 B messages", "0.5 s per step",
                 f"{cores} core"]:  # fmt: skip
        assert part in title, (part, title)

    panels = {p.get("data-panel"): p for p in groups(svg, "panel")}
    assert set(panels) == {"latency", "efficiency", "loss"}
    y_labels = {
        "latency": "latency (ms)",
        "efficiency": "server efficiency (deliveries per CPU-second)",
        "loss": "loss (% of expected deliveries)",
    }
    for key, panel in panels.items():
        assert [t for t in texts(panel, "axis-label") if t] == [
            "offered rate (msg/s)",
            y_labels[key],
        ], key
        for label in texts(panel, "axis-label"):
            assert AXIS_LABEL.match(label), label
        series = groups(panel, "series")
        assert [s.get("data-config") for s in series] == labels, key
        for s in series:
            # Every drawn line has points. (A panel may lack a line: a short step can pass
            # without a clock tick of server CPU, and then there is no efficiency figure.)
            assert all(line.get("points") for line in s.findall(f"{SVG}polyline")), key
        if key == "latency":
            for s in series:
                classes = sorted(line.get("class") for line in s.findall(f"{SVG}polyline"))
                assert classes == ["p50", "p99"]
        # Every configuration's knee, where the panel has its figure (see above).
        knees = {k.get("data-config"): float(k.get("data-rate")) for k in groups(panel, "knee")}
        best = {label: run["report"]["best_rate"] for label, run in zip(labels, runs)}
        if key == "efficiency":
            assert knees.items() <= best.items(), key
        else:
            assert knees == best, key
        # Ticks are numbers in the chart's one format (digits, optional decimals, k or M).
        for tick in texts(panel, "tick"):
            assert re.fullmatch(r"\d+(\.\d+)?[kM]?", tick), (key, tick)

    legend = [g.get("data-config") for g in groups(svg, "legend-entry")]
    assert legend == labels
    for entry in groups(svg, "legend-entry"):
        assert entry.get("data-config") in texts(entry, "legend-label")


def test_the_server_beside_the_load_generator_is_the_default(tmp_path):
    # A copy of shardcast-load alone in a directory: no server beside it, a clear refusal.
    alone = tmp_path / "shardcast-load"
    shutil.copy2(LOAD, alone)
    small = [
        "compare", "--models", MODEL, "--workers", "1", "--quiet",
        "fanout", "--subscribers", "2", "--rate", "20", "--duration", "0.3", "--warmup", "0",
    ]  # fmt: skip
    refused = run_load(small, load=alone)
    assert refused.returncode != 0
    assert "--server-bin" in refused.stderr and str(tmp_path / "shardcast") in refused.stderr, (
        refused.stderr
    )
    # With the server beside it, that one is started.
    (tmp_path / "shardcast").symlink_to(BIN)
    done = run_load([*small[:1], "--json", *small[1:]], load=alone)
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(done.stdout)["runs"]
    assert run["model"] == MODEL and run["error"] is None
    assert run["report"]["loss"] == 0


def children_of(pid: int) -> list[int]:
    """The processes `pid` started (any of its threads), from /proc; none once it is gone."""
    try:
        return [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except FileNotFoundError:
        return []


def gone(pid: int) -> bool:
    """The process has exited: reaped, or a zombie waiting for init to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def test_a_killed_load_generator_leaves_no_server_behind(tmp_path):
    """SIGKILL to `shardcast-load` alone (no cleanup runs): the server it started for a
    comparison still stops (the kernel's parent-death signal), within its drain timeout."""
    import signal

    load = subprocess.Popen(
        [str(LOAD), "compare", "--server-bin", str(BIN), "--models", MODEL, "--workers", "1",
         "--quiet", "fanout", "--subscribers", "2", "--rate", "20", "--duration", "120",
         "--warmup", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        (server,) = wait_for(lambda: children_of(load.pid), 20, "compare starting a server")
        load.send_signal(signal.SIGKILL)
        load.wait(timeout=10)
        try:
            wait_for(lambda: gone(server), 20, "the server stopping after the load generator")
        except AssertionError:
            os.kill(server, signal.SIGKILL)
            raise
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(timeout=5)
