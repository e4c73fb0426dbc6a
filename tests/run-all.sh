#!/usr/bin/env bash
# Runs every shardcast test, installing what the tests need first:
#   format and lint → Rust unit and integration tests → Python `websockets` and websocat tests
#   → the Autobahn TestSuite (fuzzingclient, cases 1.*–10.*) against the release build.
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

step "python venv (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r tests/py/requirements.txt

step "websocat (an independent client, built from crates.io)"
websocat=$root/target/tools/bin/websocat
[ -x "$websocat" ] || cargo install -q websocat --version 1.14.1 --locked --root "$root/target/tools"

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "rust tests"
cargo test --workspace

step "release build"
cargo build --release --workspace

step "python tests (websockets, websocat)"
SHARDCAST_BIN=$root/target/release/shardcast WEBSOCAT=$websocat \
  .venv/bin/python -m pytest tests/py -q

step "autobahn testsuite"
bash tests/autobahn/against-shardcast.sh "$root/target/release/shardcast" "$root/target/autobahn-report"

echo
echo "all tests passed"
