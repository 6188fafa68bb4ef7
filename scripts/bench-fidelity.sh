#!/usr/bin/env bash
# Fidelity benchmark: minerva's llama.cpp backend against llama.cpp's own llama-bench on the same
# model, threads and batch (pp512 and tg128). Prints both tools' figures, the ratios and both
# llama.cpp revisions. Goal: minerva within 2% of llama-bench on both.
#
#   scripts/bench-fidelity.sh [THREADS] [REPETITIONS] [PAIRS]
#
# llama-bench comes from the full llama.cpp tree inside the PyPI sdist of llama-cpp-python
# (scripts/build-llama-tools.sh: about 10 minutes on 2 cores the first time; cached).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
REPS="${2:-5}"
PAIRS="${3:-3}"
SDIST="llama-cpp-python==0.3.36"
WORK="target/fidelity"
MODEL="models/SmolLM2-135M-Instruct.Q4_1.gguf"

# llama-bench from the llama-cpp-python sdist's llama.cpp, AVX2 build (see build-llama-tools.sh).
BENCH="$(scripts/build-llama-tools.sh llama-bench)"

cargo build --release --locked >/dev/null 2>&1 || cargo build --release --locked
# A VM's speed drifts by several percent within minutes, so one run of each tool compares two
# moments as much as two tools. Run PAIRS interleaved pairs, alternating which tool goes first,
# and report each pair's ratio and their mean.
rm -rf "$WORK/pairs"
mkdir -p "$WORK/pairs"
run_bench() {
    # -fa 0: minerva's default (llama-bench's own default is auto).
    "$BENCH" -m "$MODEL" -p 512 -n 128 -t "$THREADS" -b 2048 -ub 512 -fa 0 -r "$REPS" -o json > "$WORK/pairs/llama-bench-$1.json"
}
run_minerva() {
    target/release/minerva -q run pipelines/fidelity.yaml --set threads="$THREADS" --set runs="$REPS" \
        --out "$WORK/pairs" --run-id "pair-$1" >/dev/null
}
echo "== $PAIRS interleaved pairs: llama-bench ($SDIST's llama.cpp) and minerva (llama-cpp-sys-2's), threads $THREADS, batch 2048, ubatch 512, $REPS repetitions each"
for i in $(seq 1 "$PAIRS"); do
    if [ $((i % 2)) -eq 1 ]; then run_bench "$i"; run_minerva "$i"; else run_minerva "$i"; run_bench "$i"; fi
done
python3 - "$WORK/pairs" "$PAIRS" <<'PY'
import csv, json, statistics, sys
work, pairs = sys.argv[1], int(sys.argv[2])
def minerva(run, scenario, metric):
    for r in csv.DictReader(open(f"{run}/summary.csv")):
        if r["scenario"] == scenario and r["metric"] == metric:
            return float(r["mean"]), float(r["std"] or 0)
def bench(lb, n_prompt, n_gen):
    for t in lb:
        if t["n_prompt"] == n_prompt and t["n_gen"] == n_gen:
            return t["avg_ts"], t["stddev_ts"]
tests = [("pp512", (512, 0), "pp_tps"), ("tg128", (0, 128), "tg_tps")]
ratios = {name: [] for name, _, _ in tests}
first = True
print(f"{'pair':5} {'test':6} {'llama-bench t/s':>18} {'minerva t/s':>18} {'ratio':>7}")
for i in range(1, pairs + 1):
    lb = json.load(open(f"{work}/llama-bench-{i}.json"))
    run = f"{work}/fidelity/pair-{i}"
    if first:
        man = json.load(open(f"{run}/manifest.json"))
        print(f"llama-bench build: {lb[0].get('build_commit')} (build {lb[0].get('build_number')}), {lb[0].get('cpu_info')}")
        print(f"minerva build: {man['backends'].get('llama_cpp', '?')[:160]}")
        first = False
    for name, (np_, ng), metric in tests:
        b, m = bench(lb, np_, ng), minerva(run, name, metric)
        if not b or not m:
            print(f"{i:<5} {name:6} missing figures"); continue
        ratios[name].append(m[0] / b[0])
        print(f"{i:<5} {name:6} {b[0]:10.2f} ± {b[1]:5.2f} {m[0]:10.2f} ± {m[1]:5.2f} {m[0]/b[0]:7.3f}")
for name, r in ratios.items():
    if r:
        spread = f", min {min(r):.3f}, max {max(r):.3f}" if len(r) > 1 else ""
        print(f"{name}: mean ratio minerva/llama-bench {statistics.mean(r):.3f} over {len(r)} pair(s){spread}")
PY
