#!/usr/bin/env bash
# Part 4/6/17's serving numbers in one run: `bash benchmarks/cpu_serve.sh [OUT_DIR]`.
# For each queue policy: start `ruvon serve` on the embedded default model, wait for /health,
# drive it with 16 concurrent users of 32 prompt / 128 output tokens (`ruvon bench serve`),
# scrape /metrics once, stop it. Then the same 16 x 128 workload offline through LLM.generate
# (`ruvon bench latency --batch-size 16`), the baseline the HTTP layer is compared with.
# Run it with nothing else on the machine: client, server and model share its cores.
set -euo pipefail
out=${1:-benchmarks/results/cpu}
port=${PORT:-8011}
mkdir -p "$out"
for policy in continuous static sequential; do
  ruvon serve --scheduler "$policy" --port "$port" --max-num-seqs 16 > "$out/serve_$policy.log" 2>&1 &
  server=$!
  for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 1; done
  ruvon bench serve --base-url "http://127.0.0.1:$port" --dataset fixed --num-prompts 16 --input-len 32 \
    --output-len 128 --max-concurrency 16 --json "$out/serve_$policy.json" --plot "$out/serve_$policy.png"
  curl -sf "http://127.0.0.1:$port/metrics" > "$out/metrics_$policy.txt"
  kill -TERM "$server"; wait "$server" || true
done
ruvon bench latency --batch-size 16 --input-len 32 --output-len 128 --json "$out/offline_16x128.json"
