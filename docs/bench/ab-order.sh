#!/bin/bash
# Kept as run for docs/benchmarks.md ("One order per room"): the commit before the change
# against after, interleaved, each server alone with the load generator on this 2-core machine
# (server --no-pin --log-level warn, the same shardcast-load for both).
#   BEFORE=/path/to/old/shardcast AFTER=/path/to/new/shardcast LOAD=/path/to/shardcast-load \
#     bash docs/bench/ab-order.sh OUT_DIR [ROUNDS]
# Then: python3 docs/bench/ab-summary.py OUT_DIR
set -u
out=${1:-/tmp/ab-order}; rounds=${2:-5}; mkdir -p "$out"
port=18312
start() { # bin, extra args...
  local bin=$1; shift
  "$bin" --listen 127.0.0.1:$port --no-pin --log-level warn "$@" > /dev/null 2>&1 &
  pid=$!; sleep 0.5
}
stop() { kill $pid; wait $pid 2>/dev/null; }
fanout() { # label
  $LOAD fanout --url ws://127.0.0.1:$port/bench --subscribers 1000 --publishers 4 --rate 800 \
    --size 64 --duration 5 --server-pid $pid --json --quiet > "$out/$1.json" 2>/dev/null
}
chat() { # label
  $LOAD chat --url ws://127.0.0.1:$port/ --rooms 100 --members 20 --rate-per-member 1 \
    --size 64 --duration 5 --server-pid $pid --json --quiet > "$out/$1.json" 2>/dev/null
}
for run in $(seq 1 "$rounds"); do
  for v in before after; do
    bin=$AFTER; [ $v = before ] && bin=$BEFORE
    start "$bin" --workers 2; fanout "$v-fanout-$run"; stop
    start "$bin" --workers 1; fanout "$v-fanout1-$run"; stop
    start "$bin" --workers 2 --model shared; fanout "$v-shared-$run"; stop
    start "$bin" --workers 2; chat "$v-chat-$run"; stop
    start "$bin" --workers 2
    $LOAD idle --url ws://127.0.0.1:$port/idle --connections 10000 --hold 2 --server-pid $pid \
      --json --quiet > "$out/$v-idle-$run.json" 2>/dev/null
    stop
  done
done
for w in 1 2; do
  for v in before after; do
    bin=$AFTER; [ $v = before ] && bin=$BEFORE
    start "$bin" --workers $w
    $LOAD sweep --url ws://127.0.0.1:$port/bench --subscribers 1000 --publishers 4 --size 64 \
      --start-rate 1600 --step 1600 --max-rate 16000 --p99-limit-ms 50 --duration 5 \
      --server-pid $pid --json --quiet > "$out/$v-sweep-w$w.json" 2>/dev/null
    stop
  done
done
