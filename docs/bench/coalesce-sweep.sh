#!/bin/bash
# Adaptive coalescing against --coalesce-us 0 and the fixed window, side by side
# (docs/benchmarks.md, "Adaptive coalescing"): a sweep from 50 msg/s doubling up to the top rate,
# at 200 and 1,000 subscribers, 4 publishers, 64 B, server --workers 2 --no-pin; each variant's
# server alone with the load generator on this 2-core machine, interleaved per round.
#   SHARDCAST=target/release/shardcast LOAD=target/release/shardcast-load \
#     bash docs/bench/coalesce-sweep.sh OUT_DIR [ROUNDS]
# Then: python3 docs/bench/coalesce-summary.py OUT_DIR
set -u
out=${1:-/tmp/coalesce-sweep}; rounds=${2:-1}; mkdir -p "$out"
port=18330
declare -A extra=([adaptive]="" [zero]="--coalesce-us 0" [fixed]="--coalesce-rule fixed")
for run in $(seq 1 "$rounds"); do
  for subs in 200 1000; do
    for v in adaptive zero fixed; do
      # shellcheck disable=SC2086
      $SHARDCAST --listen 127.0.0.1:$port --no-pin --log-level warn --workers 2 ${extra[$v]} \
        > /dev/null 2>&1 &
      pid=$!; sleep 0.5
      $LOAD sweep --url ws://127.0.0.1:$port/bench --subscribers "$subs" --publishers 4 --size 64 \
        --start-rate 50 --factor 2 --max-rate 25600 --max-failures 1 --duration 5 \
        --server-pid $pid --json --quiet > "$out/$v-s$subs-$run.json" 2>/dev/null
      kill $pid; wait $pid 2>/dev/null
    done
  done
done
