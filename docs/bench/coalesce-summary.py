#!/usr/bin/env python3
"""Summarises docs/bench/coalesce-sweep.sh's JSON: per subscriber count and rate, the median
p50 and p99 of each variant over the rounds, and each variant's top rates (Markdown)."""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

VARIANTS = ["adaptive", "zero", "fixed"]
LABEL = {"adaptive": "adaptive (new default)", "zero": "`--coalesce-us 0`",
         "fixed": "fixed 10 ms (old default)"}


def main(out: Path) -> None:
    # steps[subs][variant][rate] = [(p50, p99, passed), ...]; tops[subs][variant] = [rate...]
    steps = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    tops = defaultdict(lambda: defaultdict(list))
    for path in sorted(out.glob("*-s*-*.json")):
        variant, subs, _run = path.stem.split("-")
        subs = int(subs[1:])
        data = json.loads(path.read_text())
        tops[subs][variant].append(data.get("best_rate") or 0)
        for step in data["steps"]:
            lat = step["report"]["latency_ms"]
            steps[subs][variant][step["rate"]].append((lat["p50"], lat["p99"], step["passed"]))
    for subs in sorted(steps):
        print(f"\n{subs} subscribers × 4 publishers × 64 B, `--workers 2` (p50 / p99 ms, medians)\n")
        print("| msg/s | " + " | ".join(LABEL[v] for v in VARIANTS) + " |")
        print("|--:|" + "--:|" * len(VARIANTS))
        rates = sorted({r for v in steps[subs].values() for r in v})
        for rate in rates:
            cells = []
            for v in VARIANTS:
                got = steps[subs][v].get(rate)
                if not got:
                    cells.append("—")
                    continue
                p50 = statistics.median(g[0] for g in got)
                p99 = statistics.median(g[1] for g in got)
                fails = sum(1 for g in got if not g[2])
                cells.append(f"{p50:.2f} / {p99:.2f}" + (f" ({fails} failed)" if fails else ""))
            print(f"| {rate:,.0f} | " + " | ".join(cells) + " |")
        print("| top rate | " + " | ".join(
            " · ".join(f"{r:,.0f}" for r in tops[subs][v]) or "—" for v in VARIANTS) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/coalesce-sweep"))
