#!/usr/bin/env bash
# llama.cpp in process vs llama.cpp's llama-server over the OpenAI API, same model and threads:
# builds llama-server (scripts/build-llama-tools.sh), starts it on 127.0.0.1 with --metrics, runs
# pipelines/llama-server.yaml against it and prints both legs side by side; then runs
# pipelines/llama-server-workloads.yaml (a ShareGPT dataset workload, shared-prefix traffic and
# an SLO search) and prints its load steps, the search's result and the server's own metrics.
#
#   scripts/bench-llama-server.sh [THREADS] [RUNS] [WORKLOAD_REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
RUNS="${2:-10}"
WREQ="${3:-64}"
PORT="${PORT:-8089}"
MODEL="models/SmolLM2-135M-Instruct.Q4_1.gguf"
WORK="target/llama-server"

SERVER="$(scripts/build-llama-tools.sh llama-server)"
scripts/fetch-test-model.sh >/dev/null
# MINERVA_BIN: an optimized minerva already built (e.g. by `cargo bench`), else a release build.
MINERVA="${MINERVA_BIN:-target/release/minerva}"
if [ -z "${MINERVA_BIN:-}" ]; then
    cargo build --release --locked >/dev/null 2>&1 || cargo build --release --locked
fi
mkdir -p "$WORK"
# Four slots so the concurrency-4 leg is served in parallel; context for 4 × (prompt + 128).
"$SERVER" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -c 8192 -np 4 -fa off \
    --metrics --host 127.0.0.1 --port "$PORT" > "$WORK/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
    if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$WORK/server.log" >&2; exit 1; fi
    sleep 0.5
done
rm -rf "$WORK/out"
"$MINERVA" -q run pipelines/llama-server.yaml --set threads="$THREADS" --set runs="$RUNS" \
    --set base_url="http://127.0.0.1:$PORT/v1" --out "$WORK/out" --run-id run
run="$WORK/out/llama-server/run"
python3 - "$run" <<'PY'
import csv, json, sys
run = sys.argv[1]
rows = list(csv.DictReader(open(f"{run}/summary.csv")))
def get(job, metric):
    for r in rows:
        if r["job_id"] == job and r["metric"] == metric:
            return float(r["mean"]), float(r["p50"]), float(r["p99"])
def label(job):
    stage, backend, _model, scenario = job.split("/")[:4]
    load = ""
    if "load=" in job:
        l = json.loads(job.split("load=", 1)[1])
        load = f"concurrency {l['concurrency']}" if "concurrency" in l else "sequential"
    return f"{scenario:6} {backend:9} {load}"
jobs = sorted({r["job_id"] for r in rows}, key=lambda j: (j.split("/")[3], j))
print(f"{'scenario / backend / load':36} {'tg tok/s':>9} {'TTFT p50 ms':>12} {'TPOT ms':>8} {'E2E ms':>8}")
for j in jobs:
    tg, ttft, tpot, e2e = (get(j, m) for m in ("tg_tps", "ttft_ms", "tpot_ms", "e2e_ms"))
    f = lambda x, i=0: f"{x[i]:.2f}" if x else "-"
    print(f"{label(j):36} {f(tg):>9} {f(ttft, 1):>12} {f(tpot):>8} {f(e2e):>8}")
for line in open(f"{run}/samples.jsonl"):
    s = json.loads(line)
    l = s.get("load")
    if l:
        print(f"{s['scenario']:6} {l['pattern']:>14}: {l['requests']} requests, {l['failed']} failed, {l['achieved_rps']:.2f} req/s, "
              f"{l['output_tps']:.1f} tok/s, client CPU {l['client_cpu_cores']:.2f} cores, client-bound {l['client_bound']}, tokens by {l['tokens_from']}")
print(f"report: {run}/report.md")
PY

echo
echo "== workloads: pipelines/llama-server-workloads.yaml"
rm -rf "$WORK/out-workloads"
"$MINERVA" -q run pipelines/llama-server-workloads.yaml --set requests="$WREQ" \
    --set base_url="http://127.0.0.1:$PORT/v1" --out "$WORK/out-workloads" --run-id run
run="$WORK/out-workloads/llama-server-workloads/run"
python3 - "$run" <<'PY'
import json, sys
run = sys.argv[1]
for line in open(f"{run}/samples.jsonl"):
    s = json.loads(line)
    l = s.get("load")
    if not l or s.get("warmup"):
        continue
    slo = l.get("slo_check")
    verdict = "" if slo is None else (" SLO met;" if slo["met"] else " SLO missed: " + "; ".join(slo["why"]) + ";")
    m = l.get("server") or {}
    server = ("server: running max {:.0f}, waiting max {:.0f}, generated {:.0f}".format(
        (m.get("running") or {}).get("max", float("nan")), (m.get("waiting") or {}).get("max", float("nan")),
        m.get("generated_tokens") or float("nan")) if m.get("exposed") else "server metrics: not exposed")
    print(f"{s['scenario']:9} {l['pattern']:>34}: {l['requests']} requests, {l['failed']} failed, {l['achieved_rps']:.2f} req/s, "
          f"{l['output_tps']:.1f} tok/s, client CPU {l['client_cpu_cores']:.2f} cores;{verdict} {server}")
    if l.get("search"):
        r = l["search"]
        print(f"  search: highest {r['find_max']} within the SLO ({r['slo']}): {r['best']}; tried {r['tried']}; {r['stopped']}")
print(f"report: {run}/report.md")
PY
