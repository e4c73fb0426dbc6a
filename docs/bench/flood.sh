#!/bin/bash
# A flooding client's effect on the others (issue 12): fanout 1,000 subscribers × 4 publishers
# × 64 B at 800 msg/s on a server with --max-publish-rate 300 (each publisher sends 200/s),
# without and with K flooders sending R msg/s each; interleaved rounds.
#   BIN=target/release/shardcast LOAD=target/release/shardcast-load \
#     bash docs/bench/flood.sh OUT_DIR [ROUNDS] [K] [R]
set -u
out=${1:-/tmp/ab-flood}; rounds=${2:-3}; flooders=${3:-4}; flood_rate=${4:-5000}
mkdir -p "$out"; port=18319
for r in $(seq 1 "$rounds"); do
  for k in 0 "$flooders"; do
    "$BIN" --listen 127.0.0.1:$port --no-pin --log-level warn --workers 2 \
      --max-publish-rate 300 > /dev/null 2>&1 &
    pid=$!; sleep 0.5
    $LOAD fanout --url ws://127.0.0.1:$port/bench --subscribers 1000 --publishers 4 \
      --rate 800 --size 64 --duration 10 --flooders "$k" --flood-rate "$flood_rate" \
      --server-pid $pid --json --quiet > "$out/flooders$k-$r.json" 2>/dev/null
    kill $pid; wait $pid 2>/dev/null
  done
done
python3 - "$out" <<'PY'
import glob, json, statistics as st, sys
out = sys.argv[1]
for name in sorted({p.split("/")[-1].rsplit("-", 1)[0] for p in glob.glob(f"{out}/*.json")}):
    runs = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{name}-*.json"))]
    p50 = [r["latency_ms"]["p50"] for r in runs]
    p99 = [r["latency_ms"]["p99"] for r in runs]
    floods = [r.get("flood") or {} for r in runs]
    cpu = [r["server"]["cpu_secs"] for r in runs]
    print(f"{name:10} p50 {st.median(p50):6.2f}  p99 median {st.median(p99):6.2f} "
          f"({min(p99):.2f}-{max(p99):.2f})  loss {sum(r['loss'] for r in runs)}  "
          f"server CPU-s {st.median(cpu):.2f}  flood sent {[f.get('sent', 0) for f in floods]} "
          f"flooders closed {[f.get('server_close_codes', {}) for f in floods]}")
PY
