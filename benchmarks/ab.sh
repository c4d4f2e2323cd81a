#!/usr/bin/env bash
# Two versions of chute, interleaved: benchmarks/throughput.py on SQLite and Redis, ROUNDS rounds, A then B
# in each. Each version is a checkout with a venv of its own (python3 -m venv V; V/bin/pip install
# 'CHECKOUT[redis,amqp,postgres]'), so neither reads the other's code.
#   benchmarks/ab.sh OLD_CHECKOUT OLD_VENV NEW_CHECKOUT NEW_VENV [ROUNDS]  > ab.txt
set -eu
old_dir=$1 old_venv=$2 new_dir=$3 new_venv=$4 rounds=${5:-3}
for i in $(seq 1 "$rounds"); do
  for broker in sqlite redis; do
    for side in old new; do
      if [ "$side" = old ]; then dir=$old_dir py=$old_venv/bin/python; else dir=$new_dir py=$new_venv/bin/python; fi
      prefix="ab$i$side$$"
      url=(); [ "$broker" = redis ] && url=(--url "redis://127.0.0.1:6379/0?prefix=$prefix")
      echo "### pair $i $broker $side"
      (cd "$dir" && "$py" benchmarks/throughput.py "${url[@]}" -r 1 --idle 3 2>&1 | tail -9)
      [ "$broker" = redis ] && redis-cli --scan --pattern "$prefix:*" | xargs -r -n 500 redis-cli del >/dev/null
    done
  done
done
