#!/bin/bash
# Kept as run for docs/benchmarks.md ("The v1 protocol and presence on the plain hot path"):
# the "before" binary is commit 9537151 built into /tmp/old-target (git worktree + CARGO_TARGET_DIR).
# A/B: before (9537151) and after (v1 + cluster) on the plain fanout and idle scenarios.
LOAD=/work/main/target/release/shardcast-load
for run in 1 2 3; do
  for v in before after; do
    bin=/work/main/target/release/shardcast; [ $v = before ] && bin=/tmp/old-target/release/shardcast
    $bin --listen 127.0.0.1:18301 --workers 2 --no-pin --log-level warn > /dev/null 2>&1 &
    pid=$!; sleep 0.4
    $LOAD fanout --url ws://127.0.0.1:18301/bench --subscribers 1000 --publishers 4 --rate 800 --size 64 --duration 5 --server-pid $pid --json --quiet > /tmp/ab-$v-fanout-$run.json
    kill $pid; wait $pid 2>/dev/null
    $bin --listen 127.0.0.1:18301 --workers 2 --no-pin --log-level warn > /dev/null 2>&1 &
    pid=$!; sleep 0.4
    $LOAD idle --url ws://127.0.0.1:18301/idle --connections 10000 --hold 2 --server-pid $pid --json --quiet > /tmp/ab-$v-idle-$run.json
    kill $pid; wait $pid 2>/dev/null
  done
done
