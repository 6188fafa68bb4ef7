#!/usr/bin/env bash
# What `minerva compare` says on the real model (SmolLM2-135M Q4_1 on llama.cpp,
# pipelines/ab-threads.yaml): a real change (threads 1 against threads 2) and, EXPERIMENTS times,
# no change at all (two runs with identical settings, back to back). Prints each comparison's
# headline and the tg128 row, and how many of the identical pairs had any `slower` verdict.
#
#   scripts/bench-compare.sh [EXPERIMENTS] [RUNS]     # defaults: 10 experiments, 10 repetitions
#
# Needs a built minerva (target/release or target/debug; llama.cpp is compiled optimized in
# both) and the test model under models/ (scripts/fetch-test-model.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
EXPERIMENTS="${1:-10}"
RUNS="${2:-10}"
BIN="${MINERVA:-}"
if [ -z "$BIN" ]; then
    for b in target/release/minerva target/debug/minerva; do
        [ -x "$b" ] && BIN="$b" && break
    done
fi
# KEEP=DIR keeps the runs there (to compare them again); else a temporary directory.
OUT="${KEEP:-$(mktemp -d)}"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$OUT"' EXIT
run() { "$BIN" -q run pipelines/ab-threads.yaml --out "$OUT" --set "runs=$RUNS" --set "threads=$1" --run-id "$2" >/dev/null; }
row() { grep -E '^\| .*(tg_tps|pp_tps) ' || true; }

echo "== threads 2 (base) against threads 1 (new)"
run 2 t2
run 1 t1
text="$("$BIN" compare "$OUT/ab-threads/t2" "$OUT/ab-threads/t1" --metric tg_tps --metric pp_tps)"
echo "$text" | head -1
echo "$text" | row

echo "== identical settings (threads 2), $EXPERIMENTS experiments"
with_slower=0
for i in $(seq 1 "$EXPERIMENTS"); do
    run 2 "a$i"
    run 2 "b$i"
    text="$("$BIN" compare "$OUT/ab-threads/a$i" "$OUT/ab-threads/b$i")"
    echo "$i: $(echo "$text" | head -1 | sed 's/^## minerva compare: //')"
    echo "$text" | row
    if echo "$text" | grep -q '| \*\*slower\*\* |'; then with_slower=$((with_slower + 1)); fi
done
echo "identical settings: $with_slower of $EXPERIMENTS experiments had any slower verdict"
