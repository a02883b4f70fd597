#!/usr/bin/env bash
# Every CPU number in docs/part01..part14 in one run: `bash benchmarks/cpu_articles.sh [OUT_DIR]`.
# SmolLM2-135M-Instruct (the embedded default), fp32, on whatever CPU runs it (the articles
# quote a 2-core machine). JSON results and the log land in OUT_DIR.
set -euo pipefail
out=${1:-benchmarks/results/cpu}
mkdir -p "$out"
run() { echo "+ ruvon $*"; ruvon "$@"; }
{
run info
run info --model benchmarks/models/qwen3-0.6b.json --load-format dummy
run generate "Write a short story about a robot learning to paint." --max-tokens 64 --temperature 0.8 --top-p 0.95 --seed 1
run generate "Write a short story about a robot learning to paint." --max-tokens 64 --temperature 0.8 --top-p 0.95 --seed 1
run bench latency --chat --output-len 256 --engine both --json "$out/latency_b1.json"
run bench latency --chat --output-len 256 --no-kv-cache --json "$out/latency_b1_nocache.json"
run bench latency --chat --batch-size 16 --output-len 128 --engine both --json "$out/latency_b16.json"
run bench latency --chat --batch-size 16 --output-len 128 --temperature 0.8 --top-p 0.95 --json "$out/latency_b16_sampled.json"
for policy in sequential static continuous; do
  run bench throughput --num-prompts 32 --length-scale 0.125 --scheduler $policy --json "$out/throughput_$policy.json"
done
for policy in static continuous; do
  run bench throughput --num-prompts 32 --length-scale 0.125 --scheduler $policy --max-num-seqs 8 --json "$out/throughput_${policy}_8.json"
done
run bench prefix-cache --num-prompts 16 --prefix-len 512 --suffix-len 32 --output-len 32 --json "$out/prefix_cache.json"
} 2>&1 | grep -v -e "it/s]" -e "s/it]" | tee "$out/log.txt"
