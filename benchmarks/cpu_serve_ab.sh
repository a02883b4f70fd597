#!/usr/bin/env bash
# Served throughput and TTFT of two commits, in interleaved rounds so this machine's drift hits
# both alike: `bash benchmarks/cpu_serve_ab.sh BASE_REF [ROUNDS] [OUT_DIR]`.
# Each round starts `ruvon serve --max-num-seqs 16` on the embedded default model from BASE_REF
# (cpu_checkout_env.sh) and from the current checkout, in alternating order, and measures each:
# 16 users of 32 prompt / 128 output tokens (output tok/s), then one user at a time sending
# 8 requests of 32 / 16 (TTFT p50). The client is the current checkout's `ruvon bench serve`.
set -euo pipefail
base=${1:?usage: bash benchmarks/cpu_serve_ab.sh BASE_REF [HEAD_REF] [ROUNDS] [OUT_DIR]}
head=${2:-HEAD}
rounds=${3:-3}
out=${4:-benchmarks/results/cpu/serve_ab}
port=${PORT:-8018}
mkdir -p "$out"
. benchmarks/cpu_checkout_env.sh "$head"
head_bin=$REF_BIN
. benchmarks/cpu_checkout_env.sh "$base"
base_bin=$REF_BIN
measure() {  # side round
  local bin=$([ "$1" = base ] && echo "$base_bin" || echo "$head_bin")
  "$bin/ruvon" serve --port "$port" --max-num-seqs 16 > "$out/serve_$1_$2.log" 2>&1 &
  local server=$!
  for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 1; done
  ruvon bench serve --base-url "http://127.0.0.1:$port" --dataset fixed --num-prompts 16 --input-len 32 \
    --output-len 128 --max-concurrency 16 --json "$out/c16_$1_$2.json" > /dev/null
  ruvon bench serve --base-url "http://127.0.0.1:$port" --dataset fixed --num-prompts 8 --input-len 32 \
    --output-len 16 --max-concurrency 1 --json "$out/b1_$1_$2.json" > /dev/null
  kill -TERM "$server"; wait "$server" || true
}
for r in $(seq "$rounds"); do
  if (( r % 2 )); then measure base "$r"; measure head "$r"; else measure head "$r"; measure base "$r"; fi
done
python3 - "$out" "$rounds" "$base" "$head" <<'PY'
import json, statistics, sys
out, rounds, base, head = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def read(kind, side, key):
    return [json.load(open(f"{out}/{kind}_{side}_{r}.json"))[key] for r in range(1, rounds + 1)]
def ttft(side):
    return [v["p50"] for v in read("b1", side, "ttft_ms")]
rows = {"16-user output tok/s": (read("c16", "base", "output_token_throughput"),
                                 read("c16", "head", "output_token_throughput")),
        "batch-1 TTFT p50 (ms)": (ttft("base"), ttft("head"))}
print(f"| metric | {base} (rounds) | {head} (rounds) | {head} / {base}, median |")
print("|---|---|---|---|")
for name, (a, b) in rows.items():
    print(f"| {name} | {' / '.join(f'{x:.1f}' for x in a)} | {' / '.join(f'{x:.1f}' for x in b)} | "
          f"{statistics.median(b) / statistics.median(a):.3f} |")
PY
