#!/usr/bin/env bash
# Runs every shardcast test, installing what the tests need first:
#   format and lint → Rust unit and integration tests → Python `websockets` and websocat tests
#   → the chat page in a real Chromium (playwright-core) → the Autobahn TestSuite (fuzzingclient, cases 1.*–10.*) against the release build.
# Works on a fresh Debian machine with only the Rust toolchain (as root, or with sudo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
step() { printf '\n=== %s\n' "$*"; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  [ "$apt_updated" = 1 ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

step "system packages"
command -v python3 >/dev/null || apt_install python3
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
command -v cc >/dev/null || apt_install build-essential
# The terminal client's interactive test drives it in a real terminal.
command -v tmux >/dev/null || apt_install tmux
# The server API's tests drive it with curl too (tests/py/test_api.py).
command -v curl >/dev/null || apt_install curl
# The socket-buffer test reads the server's sockets with `ss` (tests/py/test_socket_buffer.py).
command -v ss >/dev/null || apt_install iproute2
# The cluster tests start their own Redis servers (tests/py/test_cluster.py).
{ command -v redis-server && command -v redis-cli; } >/dev/null || apt_install redis-server

step "python venv (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r tests/py/requirements.txt

step "websocat (an independent client, built from crates.io)"
websocat=$root/target/tools/bin/websocat
[ -x "$websocat" ] || cargo install -q websocat --version 1.14.1 --locked --root "$root/target/tools"

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "release build (the Python, load-generator and Autobahn tests drive it)"
cargo build --release --workspace
export SHARDCAST_BIN=$root/target/release/shardcast

# The three threading models must behave the same: every integration suite runs per model.
models=(sharded shared single)

step "rust tests (unit, load generator, integration with the sharded model)"
SHARDCAST_MODEL=sharded cargo test --workspace
for model in "${models[@]:1}"; do
  step "rust integration tests, $model model"
  SHARDCAST_MODEL=$model cargo test --test it
done

for model in "${models[@]}"; do
  step "python tests (websockets, websocat), $model model"
  SHARDCAST_MODEL=$model WEBSOCAT=$websocat .venv/bin/python -m pytest tests/py -q --durations=12
done

for model in "${models[@]}"; do
  step "browser test (Debian chromium driven by playwright-core), $model model"
  SHARDCAST_MODEL=$model bash tests/browser/run.sh
done

for model in "${models[@]}"; do
  step "autobahn testsuite, $model model"
  SHARDCAST_MODEL=$model bash tests/autobahn/against-shardcast.sh "$SHARDCAST_BIN" \
    "$root/target/autobahn-report/$model"
done

echo
echo "all tests passed"
