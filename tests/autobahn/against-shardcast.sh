#!/usr/bin/env bash
# Runs the Autobahn fuzzingclient against a shardcast binary.
#   usage: against-shardcast.sh PATH/TO/shardcast OUTDIR
# A room with a single member is an echo server, so every case connects to /autobahn.
# SHARDCAST_MODEL (sharded, shared, single) picks the threading model.
# Cases 9.* echo 16 MiB messages: the limits are raised above that for this run only.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 SHARDCAST_BIN OUTDIR" >&2; exit 2; }
bin=$1 out=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$out"

"$bin" --listen 127.0.0.1:0 --workers 2 --no-pin --log-level warn --model "${SHARDCAST_MODEL:-sharded}" \
  --max-message 20000000 --max-buffered 50000000 >"$out/server.out" 2>"$out/server.err" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q '^listening on ' "$out/server.out" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$out/server.out")
[ -n "$addr" ] || { echo "shardcast did not start" >&2; cat "$out/server.err" >&2; exit 1; }

bash "$here/run.sh" "ws://$addr/autobahn" "$out"
