#!/usr/bin/env bash
# The HTTP layer's cost (Part 4), measured as interleaved rounds so that this machine's
# drift hits both sides alike: `bash benchmarks/cpu_serve_overhead.sh [ROUNDS] [OUT_DIR]`.
# One `ruvon serve` (continuous batching, --max-num-seqs 16) is started first and stays up, as
# a server does; it idles while the offline side runs. Each round: the 16 x (32 prompt, 128
# output) workload offline through LLM.generate in a fresh process (`ruvon bench latency
# --batch-size 16`, which warms up first), then through the server, driven by `ruvon bench
# serve --max-concurrency 16` (which sends one warm-up request first).
set -euo pipefail
rounds=${1:-3}
out=${2:-benchmarks/results/cpu/serve_overhead}
port=${PORT:-8016}
# CLIENT_NICE=19 runs the load generator at the lowest CPU priority: on a 2-core machine it
# otherwise takes time from the model's threads, which a real client on another host would not.
client_nice=${CLIENT_NICE:-0}
mkdir -p "$out"
ruvon serve --port "$port" --max-num-seqs 16 > "$out/serve.log" 2>&1 &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server" || true' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 1; done
for r in $(seq "$rounds"); do
  ruvon bench latency --batch-size 16 --input-len 32 --output-len 128 --json "$out/off_$r.json" > /dev/null
  nice -n "$client_nice" ruvon bench serve --base-url "http://127.0.0.1:$port" --dataset fixed --num-prompts 16 --input-len 32 \
    --output-len 128 --max-concurrency 16 --json "$out/on_$r.json" > /dev/null
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
offline = [json.load(open(f"{out}/off_{r}.json"))[0]["tokens_per_second"] for r in range(1, rounds + 1)]
served = [json.load(open(f"{out}/on_{r}.json"))["output_token_throughput"] for r in range(1, rounds + 1)]
ratios = [b / a for a, b in zip(offline, served)]
for r, (a, b) in enumerate(zip(offline, served), start=1):
    print(f"round {r}: offline {a:.1f} tok/s, served {b:.1f} tok/s, served/offline {b / a:.2f}")
print(f"median: offline {statistics.median(offline):.1f}, served {statistics.median(served):.1f}, "
      f"ratio of medians {statistics.median(served) / statistics.median(offline):.2f}, "
      f"median of round ratios {statistics.median(ratios):.2f}")
PY
