#!/usr/bin/env python3
"""Summarises an A/B directory written by docs/bench/ab-loop.sh or ab-order.sh: medians over
its rounds (the kinds a directory has)."""
import json, statistics as st, sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ab-loop")
load = lambda name: json.loads((out / name).read_text())
rounds = sorted({int(p.stem.rsplit("-", 1)[1]) for p in out.glob("before-fanout-*.json")})
kinds = [k for k in ("fanout", "fanout1", "shared", "chat") if (out / f"before-{k}-1.json").exists()]
for kind in kinds:
    for v in ("before", "after"):
        runs = [load(f"{v}-{kind}-{r}.json") for r in rounds]
        per_cpu = [r["server"]["deliveries_per_cpu_sec"] for r in runs]
        p50 = [r["latency_ms"]["p50"] for r in runs]
        p99 = [r["latency_ms"]["p99"] for r in runs]
        loss = sum(r["loss"] for r in runs)
        print(f"{kind:7} {v:6} per-CPU-s median {st.median(per_cpu):>11,.0f} "
              f"({min(per_cpu):,.0f}-{max(per_cpu):,.0f})  p50 {st.median(p50):7.2f}  "
              f"p99 {st.median(p99):7.2f} ({min(p99):.2f}-{max(p99):.2f})  loss {loss}")
for v in ("before", "after"):
    rss = [load(f"{v}-idle-{r}.json")["server"]["rss_per_connection"] for r in rounds]
    print(f"idle    {v:6} bytes/connection median {st.median(rss):.0f} ({min(rss):.0f}-{max(rss):.0f})")
for w in (1, 2):
    for v in ("before", "after"):
        s = load(f"{v}-sweep-w{w}.json")
        best = s["best_rate"]
        steps = {x["rate"]: x for x in s["steps"]}
        p99 = steps[best]["report"]["latency_ms"]["p99"] if best in steps else None
        tried = ", ".join(f"{r:.0f}{'' if x['passed'] else ' (fail)'}" for r, x in steps.items())
        there = f"{p99:.1f} ms" if p99 is not None else "-"
        print(f"sweep w{w} {v:6} top rate {best}  p99 there {there}  [{tried}]")
