#!/usr/bin/env bash
# Fidelity benchmark: minerva's llama.cpp backend against llama.cpp's own llama-bench on the same
# model, threads and batch (pp512 and tg128). Prints both tools' figures, the ratios, both
# llama.cpp revisions and the CPU features each was compiled with. Goal: minerva within 2% of
# llama-bench on both, as the mean of interleaved pairs.
#
#   scripts/bench-fidelity.sh [THREADS] [REPETITIONS] [PAIRS]
#
# Two matched builds, chosen by MINERVA_BUILD:
#   native    (default) minerva built for this CPU (-C target-cpu=native, which makes
#             llama-cpp-sys-2 build llama.cpp with GGML_NATIVE) in target/native, against
#             llama-bench built with llama.cpp's own defaults (GGML_NATIVE=ON): what a user who
#             checks minerva against their own llama-bench compares. On CPUs with AMX both leave
#             out the AMX kernels, which crash there (scripts/native-env.sh).
#   portable  minerva's portable build (x86-64-v3, .cargo/config.toml) in target/, against
#             llama-bench built for the same AVX2 feature set.
# llama-bench comes from the full llama.cpp tree inside the PyPI sdist of llama-cpp-python
# (scripts/build-llama-tools.sh: about 10 minutes on 2 cores the first time; cached).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
REPS="${2:-5}"
PAIRS="${3:-5}"
SDIST="llama-cpp-python==0.3.36"
WORK="target/fidelity"
MODEL="models/SmolLM2-135M-Instruct.Q4_1.gguf"
case "${MINERVA_BUILD:-native}" in
    native)
        BENCH="$(LLAMA_TOOLS_BUILD=default scripts/build-llama-tools.sh llama-bench)"
        . scripts/native-env.sh
        MINERVA="$CARGO_TARGET_DIR/release/minerva"
        ;;
    portable)
        BENCH="$(LLAMA_TOOLS_BUILD=avx2 scripts/build-llama-tools.sh llama-bench)"
        MINERVA=target/release/minerva
        ;;
    *) echo "bench-fidelity: MINERVA_BUILD is native or portable" >&2; exit 2 ;;
esac
BENCH_DIR="$(dirname "$(dirname "$BENCH")")"

cargo build --release --locked --bin minerva >/dev/null 2>&1 || cargo build --release --locked --bin minerva
[ "${FIDELITY_BUILD_ONLY:-0}" = 1 ] && { echo "built $BENCH and $MINERVA"; exit 0; }
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
    "$MINERVA" -q run pipelines/fidelity.yaml --set threads="$THREADS" --set runs="$REPS" \
        --out "$WORK/pairs" --run-id "pair-$1" >/dev/null
}
echo "== $PAIRS interleaved pairs: llama-bench ($SDIST's llama.cpp, $BENCH_DIR) and minerva (llama-cpp-sys-2's, $MINERVA), threads $THREADS, batch 2048, ubatch 512, $REPS repetitions each"
for i in $(seq 1 "$PAIRS"); do
    if [ $((i % 2)) -eq 1 ]; then run_bench "$i"; run_minerva "$i"; else run_minerva "$i"; run_bench "$i"; fi
done
# The CPU features each llama.cpp was compiled with: llama-bench's from its CMake cache (with
# GGML_NATIVE, what -march=native enables on this CPU), minerva's from its manifest.
if grep -q '^GGML_NATIVE:BOOL=ON' "$BENCH_DIR/CMakeCache.txt"; then
    bench_cpu="GGML_NATIVE=ON (-march=native $(sed -n 's/^CMAKE_C_FLAGS:STRING=//p' "$BENCH_DIR/CMakeCache.txt")):$(c++ -march=native $(sed -n 's/^CMAKE_C_FLAGS:STRING=//p' "$BENCH_DIR/CMakeCache.txt") -dM -E -x c++ /dev/null \
        | sed -n 's/^#define __\(AVX[A-Z0-9_]*\|FMA\|F16C\|BMI2\|AMX_[A-Z0-9]*\)__ 1$/\1/p' | sort | tr '\n' ' ')"
else
    bench_cpu="GGML_NATIVE=OFF: $(grep -o '^GGML_\(AVX[A-Z0-9_]*\|FMA\|F16C\|BMI2\):BOOL=ON' "$BENCH_DIR/CMakeCache.txt" | sed 's/^GGML_//; s/:BOOL=ON//' | tr '\n' ' ')"
fi
python3 - "$WORK/pairs" "$PAIRS" "$bench_cpu" <<'PY'
import csv, json, statistics, sys
work, pairs, bench_cpu = sys.argv[1], int(sys.argv[2]), sys.argv[3]
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
        print(f"llama-bench CPU features: {bench_cpu}")
        print(f"minerva build: {man['backends'].get('llama_cpp', '?')}")
        b = man.get("build") or {}
        print(f"minerva CPU features: target-cpu {b.get('target_cpu', '?')}: {' '.join(b.get('cpu_features', []))}")
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
