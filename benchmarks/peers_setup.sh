#!/usr/bin/env bash
# Copy the peer harness to benchmarks/.peers (git ignores it), build the peers' virtual environments,
# and give chute one built the same way: the same python3 as the peers, only `chute[redis]` (editable,
# so it runs this checkout), byte-compiled. The project's own .venv is Python 3.12+ with every dev
# extra; the peers run on python3 with nothing but their package, and the harness times the
# producer's start (docs/benchmarks.md: `import redis` alone differs by ~90 ms between the two).
#     benchmarks/peers_setup.sh [path to the harness, default ../shared/bench/peers]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
src=${1:-$root/../shared/bench/peers}
mkdir -p "$here/.peers"
cp -rn "$src"/. "$here/.peers/"
chmod -R u+w "$here/.peers"
(cd "$here/.peers" && ./setup.sh)
venv="$here/.peers/.venvs/chute"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -e "$root[redis]"
fi
"$venv/bin/python" -m compileall -q "$root/src" >/dev/null
echo "chute for the harness: CHUTE_VENV=$venv ($("$venv/bin/python" -V))"
