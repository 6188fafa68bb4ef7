#!/usr/bin/env bash
# llama.cpp in process vs llama.cpp's llama-server over the OpenAI API, same model and threads:
# builds llama-server (scripts/build-llama-tools.sh), starts it on 127.0.0.1, runs
# pipelines/llama-server.yaml against it, stops it, and prints both legs side by side.
#
#   scripts/bench-llama-server.sh [THREADS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
RUNS="${2:-10}"
PORT="${PORT:-8089}"
MODEL="models/SmolLM2-135M-Instruct.Q4_1.gguf"
WORK="target/llama-server"

SERVER="$(scripts/build-llama-tools.sh llama-server)"
scripts/fetch-test-model.sh >/dev/null
cargo build --release --locked >/dev/null 2>&1 || cargo build --release --locked
mkdir -p "$WORK"
# Four slots so the concurrency-4 leg is served in parallel; context for 4 × (prompt + 128).
"$SERVER" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -c 8192 -np 4 -fa off \
    --host 127.0.0.1 --port "$PORT" > "$WORK/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
    if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$WORK/server.log" >&2; exit 1; fi
    sleep 0.5
done
rm -rf "$WORK/out"
target/release/minerva -q run pipelines/llama-server.yaml --set threads="$THREADS" --set runs="$RUNS" \
    --set base_url="http://127.0.0.1:$PORT/v1" --out "$WORK/out" --run-id run
run="$WORK/out/llama-server/run"
echo "report: $run/report.md"
python3 - "$run" <<'PY'
import csv, json, sys
run = sys.argv[1]
rows = list(csv.DictReader(open(f"{run}/summary.csv")))
def get(job, metric):
    for r in rows:
        if r["job_id"] == job and r["metric"] == metric:
            return float(r["mean"]), float(r["p50"]), float(r["p99"])
jobs = sorted({r["job_id"] for r in rows})
print(f"{'job':90} {'tg tok/s':>9} {'TTFT ms p50':>12} {'TPOT ms':>8} {'E2E ms':>8}")
for j in jobs:
    tg, ttft, tpot, e2e = (get(j, m) for m in ("tg_tps", "ttft_ms", "tpot_ms", "e2e_ms"))
    f = lambda x, i=0: f"{x[i]:.2f}" if x else "-"
    print(f"{j[:90]:90} {f(tg):>9} {f(ttft, 1):>12} {f(tpot):>8} {f(e2e):>8}")
loads = [json.loads(l)["load"] for l in open(f"{run}/samples.jsonl") if '"load":{' in l]
for l in loads:
    print(f"load {l['pattern']:>14}: {l['requests']} requests, {l['failed']} failed, {l['achieved_rps']:.2f} req/s, "
          f"{l['output_tps']:.1f} tok/s, client CPU {l['client_cpu_cores']:.2f} cores, client-bound {l['client_bound']}, tokens by {l['tokens_from']}")
PY
