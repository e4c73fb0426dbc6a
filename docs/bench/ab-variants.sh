#!/bin/bash
# Fanout 1,000 × 4 × 64 B at 800 msg/s, 2 workers, for any number of server builds side by side,
# interleaved (each server alone with the load generator; --no-pin --log-level warn):
#   VARIANTS="before=/path/a after=/path/b" LOAD=/path/to/shardcast-load \
#     bash docs/bench/ab-variants.sh OUT_DIR [ROUNDS] [WORKERS] [RATE]
# Each run writes OUT_DIR/NAME-fanout-ROUND.json (the load generator's --json report).
set -u
out=${1:-/tmp/ab-variants}; rounds=${2:-5}; workers=${3:-2}; rate=${4:-800}
mkdir -p "$out"; port=18313
for r in $(seq 1 "$rounds"); do
  for v in $VARIANTS; do
    name=${v%%=*}; bin=${v#*=}
    "$bin" --listen 127.0.0.1:$port --no-pin --log-level warn --workers "$workers" \
      > /dev/null 2>&1 &
    pid=$!; sleep 0.5
    $LOAD fanout --url ws://127.0.0.1:$port/bench --subscribers 1000 --publishers 4 \
      --rate "$rate" --size 64 --duration 5 --server-pid $pid --json --quiet \
      > "$out/$name-fanout-$r.json" 2>/dev/null
    kill $pid; wait $pid 2>/dev/null
  done
done
for v in $VARIANTS; do
  name=${v%%=*}
  python3 - "$out" "$name" <<'PY'
import json, glob, statistics as st, sys
out, name = sys.argv[1:]
runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{name}-fanout-*.json"))]
pc = [r["server"]["deliveries_per_cpu_sec"] for r in runs]
p50 = [r["latency_ms"]["p50"] for r in runs]
p99 = [r["latency_ms"]["p99"] for r in runs]
print(f"{name:10} per-CPU-s median {st.median(pc):>11,.0f} ({min(pc):,.0f}-{max(pc):,.0f})  "
      f"p50 {st.median(p50):6.2f}  p99 {st.median(p99):6.2f} ({min(p99):.2f}-{max(p99):.2f})  "
      f"loss {sum(r['loss'] for r in runs)}")
PY
done
