#!/bin/bash
# ms from spawn to the "tracer: attached" line for $1 (binary) with args ${@:2}, N runs
# (default 3), `--pods-from none -o json` appended. A copy of /work/notes/exp/attach.sh that
# stops each run by its own pid (SIGTERM) rather than by name, and polls stderr every 2 ms.
# Phases of one start: RUST_LOG=tracer::session=debug BINARY watch ... --duration 1ms
B=$1; shift
N=${N:-3}
for i in $(seq 1 "$N"); do
  f=$(mktemp)
  s=$(date +%s%N)
  "$B" "$@" --pods-from none -o json 2>"$f" >/dev/null &
  P=$!
  for _ in $(seq 1 3000); do
    if grep -q "tracer: attached" "$f"; then echo $(( ($(date +%s%N)-s)/1000000 )); break; fi
    kill -0 $P 2>/dev/null || { cat "$f" >&2; break; }
    sleep 0.002
  done
  kill -TERM $P 2>/dev/null; wait $P 2>/dev/null
  rm -f "$f"; sleep 0.5
done
