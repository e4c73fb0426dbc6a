#!/usr/bin/env bash
# Run Autobahn TestSuite fuzzingclient cases 1.*-10.* against a WebSocket echo
# server and fail unless every case is OK, NON-STRICT or INFORMATIONAL.
#   usage: run.sh ws://127.0.0.1:9001/ OUTDIR
# The URL is used verbatim (path included) for every case's connection; the
# server must echo text/binary messages of up to 16 MiB (cases 9.*).
# 12.* and 13.* (permessage-deflate) are not run.
# Env: AUTOBAHN_TIMEOUT (s, default 1200), AUTOBAHN_AGENT (default shardcast),
#      AUTOBAHN_EXPECT_CASES (default 301), plus setup.sh's AUTOBAHN_* vars.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 ws://HOST:PORT/PATH OUTDIR" >&2; exit 2; }
url=$1
mkdir -p "$2"
out=$(cd "$2" && pwd)   # wstest resolves outdir relative to its cwd
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export AUTOBAHN_VENV=${AUTOBAHN_VENV:-$(cd "$here/../.." && pwd)/target/autobahn-venv}
limit=${AUTOBAHN_TIMEOUT:-1200}
groups=(1 2 3 4 5 6 7 9 10)   # there is no group 8 in the suite
log=$out/runner.log

# Stale reports must not be mistaken for this run's.
rm -f "$out"/index.json "$out"/index.html "$out"/*_case_*.json "$out"/*_case_*.html "$out"/summary.md

# setup.sh is a no-op once installed; keep its noise in a log.
if ! bash "$here/setup.sh" >"$out/setup.log" 2>&1; then
  tail -n 40 "$out/setup.log" >&2; echo "autobahn: setup.sh failed" >&2; exit 1
fi
tail -n 1 "$out/setup.log"
runner=$(cat "$AUTOBAHN_VENV/runner")

if [ "$runner" = wstest ]; then
  cases=$(printf '"%s.*",' "${groups[@]}")
  cat >"$out/fuzzingclient.json" <<EOF
{
  "outdir": "$out",
  "servers": [{"agent": "${AUTOBAHN_AGENT:-shardcast}", "url": "$url"}],
  "cases": [${cases%,}],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
EOF
  cmd=("$AUTOBAHN_VENV/bin/wstest" -m fuzzingclient -s "$out/fuzzingclient.json")
else
  cmd=("$AUTOBAHN_VENV/bin/kosoku" -m fuzzingclient -o "$out" -x '12.*' -x '13.*')
  for g in "${groups[@]}"; do cmd+=(-i "$g.*"); done
  cmd+=("$url")
fi

echo "autobahn: running cases ${groups[*]} against $url (limit ${limit}s, log $log)"
start=$(date +%s)
rc=0
(cd "$out" && PYTHONWARNINGS=ignore timeout -k 30 "$limit" "${cmd[@]}") >"$log" 2>&1 || rc=$?
echo "autobahn: runner exited $rc after $(( $(date +%s) - start ))s"
# wstest exits 0 whatever the verdicts (kosoku exits 1 on a failed case): the
# report decides, except when the run was killed by the time limit.
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  grep -v "^Cases = " "$log" | tail -n 30 >&2; echo "autobahn: FAIL: timed out after ${limit}s" >&2; exit 1
fi
if ! python3 "$here/check_report.py" "$out/index.json" \
    --expect "${AUTOBAHN_EXPECT_CASES:-301}" --summary "$out/summary.md"; then
  echo "--- tail of $log:" >&2; grep -v "^Cases = " "$log" | tail -n 30 >&2; exit 1
fi
echo "autobahn: PASS (summary: $out/summary.md)"
