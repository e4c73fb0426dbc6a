#!/usr/bin/env bash
# Idempotent installer for the Autobahn TestSuite runner used by run.sh.
#
# Preferred runner: the real `wstest` (PyPI autobahntestsuite 0.8.2, Python 2
# only) under pyenv's CPython 2.7.18, with every dependency pinned in
# requirements-py27.txt. Fallback, when no Python 2.7 is available: `kosoku`
# (PyPI), a Python 3 runner that drives the same Autobahn case files and
# writes the same index.json layout.
#
# Env: AUTOBAHN_VENV   venv path  (default: <repo>/target/autobahn-venv)
#      AUTOBAHN_PY2    python2.7  (default: /root/.pyenv/versions/2.7.18/bin/python)
#      AUTOBAHN_RUNNER auto|wstest|kosoku (default: auto)
# On success $AUTOBAHN_VENV/runner holds "wstest" or "kosoku".
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${AUTOBAHN_VENV:-$repo/target/autobahn-venv}
py2=${AUTOBAHN_PY2:-/root/.pyenv/versions/2.7.18/bin/python}
runner=${AUTOBAHN_RUNNER:-auto}
kosoku_version=0.1.0
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONWARNINGS=ignore

if [ "$runner" = auto ]; then
  if [ -x "$py2" ]; then runner=wstest; else runner=kosoku; echo "no Python 2.7 at $py2: using kosoku"; fi
fi

# The stamp ties the venv to the runner and its exact pins, so re-runs are
# no-ops and a changed lock file triggers a clean rebuild.
if [ "$runner" = wstest ]; then
  want="wstest $(sha256sum "$here/requirements-py27.txt" | cut -c1-16)"
else
  want="kosoku $kosoku_version"
fi
if [ "$(cat "$venv/.stamp" 2>/dev/null)" = "$want" ]; then
  echo "autobahn runner: $want (already installed in $venv)"
  exit 0
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
if [ "$runner" = wstest ]; then
  # wsaccel and zope.interface build C extensions from sdist on py2.7.
  if ! command -v gcc >/dev/null; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq gcc libc6-dev
  fi
  # Current virtualenv (>=20.22) cannot create py2 envs; 16.7.12 is a single
  # module that embeds pip 20.3.4 (the last pip for py2), so no global install.
  boot=$(mktemp -d)
  trap 'rm -rf "$boot"' EXIT
  "$py2" -m pip install -q --target "$boot" virtualenv==16.7.12
  PYTHONPATH=$boot "$py2" -m virtualenv -q --no-download "$venv"
  "$venv/bin/pip" install -q --no-warn-script-location -r "$here/requirements-py27.txt"
  "$venv/bin/pip" check
  "$venv/bin/wstest" -a >/dev/null 2>&1
  what="autobahntestsuite 0.8.2 under $("$venv/bin/python" -V 2>&1)"
else
  # kosoku needs Python >= 3.10 (abi3 wheel); prefer pyenv's 3.11.
  py3=${AUTOBAHN_PY3:-$(command -v python3.11 || command -v python3)}
  "$py3" -c 'import sys; assert sys.version_info >= (3, 10), sys.version'
  "$py3" -m venv "$venv"
  "$venv/bin/pip" install -q "kosoku==$kosoku_version"
  "$venv/bin/kosoku" -h >/dev/null
  what="kosoku $kosoku_version under $("$venv/bin/python" -V 2>&1)"
fi
echo "$runner" >"$venv/runner"
echo "$want" >"$venv/.stamp"
echo "autobahn runner: $runner ($what) installed in $venv"
