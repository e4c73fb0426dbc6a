#!/bin/bash
# Kept as run for docs/benchmarks.md ("One event loop for every model"): the commit before the
# change (c0dcada) against after, interleaved, each server alone with the load generator on
# this 2-core machine (server --no-pin, the same shardcast-load for both).
#   BEFORE=/path/to/old/shardcast AFTER=/path/to/new/shardcast LOAD=/path/to/shardcast-load \
#     bash docs/bench/ab-loop.sh OUT_DIR
set -u
out=${1:-/tmp/ab-loop}; mkdir -p "$out"
port=18311
start() { # bin, extra args...
  local bin=$1; shift
  "$bin" --listen 127.0.0.1:$port --no-pin --log-level warn "$@" > /dev/null 2>&1 &
  pid=$!; sleep 0.5
}
stop() { kill $pid; wait $pid 2>/dev/null; }
for run in 1 2 3; do
  for v in before after; do
    bin=$AFTER; [ $v = before ] && bin=$BEFORE
    start "$bin" --workers 2
    $LOAD fanout --url ws://127.0.0.1:$port/bench --subscribers 1000 --publishers 4 --rate 800 \
      --size 64 --duration 5 --server-pid $pid --json --quiet > "$out/$v-fanout-$run.json"
    stop
    start "$bin" --workers 2 --model shared
    $LOAD fanout --url ws://127.0.0.1:$port/bench --subscribers 1000 --publishers 4 --rate 800 \
      --size 64 --duration 5 --server-pid $pid --json --quiet > "$out/$v-shared-$run.json"
    stop
    start "$bin" --workers 2
    $LOAD idle --url ws://127.0.0.1:$port/idle --connections 10000 --hold 2 --server-pid $pid \
      --json --quiet > "$out/$v-idle-$run.json"
    stop
  done
done
for w in 1 2; do
  for v in before after; do
    bin=$AFTER; [ $v = before ] && bin=$BEFORE
    start "$bin" --workers $w
    $LOAD sweep --url ws://127.0.0.1:$port/bench --subscribers 1000 --publishers 4 --size 64 \
      --start-rate 800 --step 800 --max-rate 4800 --p99-limit-ms 50 --duration 5 \
      --server-pid $pid --json --quiet > "$out/$v-sweep-w$w.json"
    stop
  done
done
