#!/usr/bin/env bash
# Runs the chat page's end-to-end tests (chat.test.mjs; cluster.test.mjs, with redis-server) in a
# real headless Chromium, installing what they need first: Debian's chromium, nodejs, npm,
# openssl and redis-server (as root, or with sudo) and playwright-core (npm ci, from
# package-lock.json, into tests/browser/node_modules).
#
#   SHARDCAST_BIN=/path/to/shardcast bash tests/browser/run.sh   # default: target/release/shardcast
#
# SHARDCAST_MODEL and SHARDCAST_STATIC_DIR are passed on to the test (see chat.test.mjs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
dir=$root/tests/browser

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  [ "$apt_updated" = 1 ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

[ -x /usr/bin/chromium ] || apt_install chromium
command -v node >/dev/null || apt_install nodejs
command -v npm >/dev/null || apt_install npm
command -v openssl >/dev/null || apt_install openssl  # the https test's certificate
command -v redis-server >/dev/null || apt_install redis-server  # cluster.test.mjs

# npm ci when node_modules is missing or older than package.json or the lock file (npm writes
# its own copy of the lock to node_modules/.package-lock.json on every install).
if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
  [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ] ||
  [ "$dir/package.json" -nt "$dir/node_modules/.package-lock.json" ]; then
  (cd "$dir" && npm ci --quiet --no-audit --no-fund)
fi

export SHARDCAST_BIN=${SHARDCAST_BIN:-$root/target/release/shardcast}
[ -x "$SHARDCAST_BIN" ] || { echo "no server binary at $SHARDCAST_BIN (cargo build --release)" >&2; exit 1; }
node --test "$dir/chat.test.mjs" "$dir/cluster.test.mjs"
