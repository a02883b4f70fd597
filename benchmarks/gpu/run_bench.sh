#!/usr/bin/env bash
# Part 20's measurements in one GPU-machine call, most important first, within one deadline:
# GPU tests, decode latency (batch 1 and 8, CUDA graphs on and off, HF beside at batch 1),
# per-step profiles (kernel vs host time), and the nano throughput workload.
#
#   bash benchmarks/gpu/run_bench.sh            # from the repository root, on the GPU machine
#
#   ONLY="tests lat-qwen-b1" bash benchmarks/gpu/run_bench.sh   # a subset, by step name
#
# max_model_len is 4096 everywhere, as in the vLLM baseline of shared/BENCHMARKS.md.
# Logs go to $OUT/log.txt, every JSON result into $OUT/results.json.
set -u
source benchmarks/gpu/setup.sh
OUT=${OUT:-/tmp/ruvon-bench}
DEADLINE=${DEADLINE:-560}        # seconds from now; steps that cannot start in time are skipped
mkdir -p "$OUT" /tmp/res
START=$SECONDS
R="python3 -m ruvonvllm.commands.main"
# The HF peer reads a dummy shape from the directory of its config.json: one directory per shape.
for shape in qwen3-0.6b llama-3.1-8b; do
  mkdir -p /tmp/shapes/$shape && cp benchmarks/models/$shape.json /tmp/shapes/$shape/config.json
done
Q=/tmp/shapes/qwen3-0.6b/config.json
L=/tmp/shapes/llama-3.1-8b/config.json
DUMMY="--load-format dummy --max-model-len 4096"

step() {  # step NAME TIMEOUT COMMAND...   (ONLY="name name ..." runs just those)
  local name=$1 limit=$2; shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local left=$((DEADLINE - (SECONDS - START)))
  if [ "$left" -lt 30 ]; then echo "=== $name: skipped (deadline)" | tee -a "$OUT/log.txt"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name ($((SECONDS - START)) s): $*" | tee -a "$OUT/log.txt"
  timeout "$limit" "$@" >> "$OUT/log.txt" 2>&1
  echo "    exit $? after $((SECONDS - START)) s" | tee -a "$OUT/log.txt"
}

# Same-call A/B against an earlier commit, when its package was unpacked into .old and carried:
#   rm -rf .old && mkdir .old && git archive COMMIT ruvonvllm | tar -x -C .old   (here; .old git-ignored)
AB="env ROUNDS=2 bash benchmarks/gpu/ab_commit.sh"
if [ -d .old ]; then
  step ab-qwen-b1 150 $AB $R bench latency --model $Q $DUMMY --engine ruvon --batch-size 1 --output-len 256 --json /tmp/res/ab-lat-qwen-b1.json
  step ab-llama-nano 300 $AB $R bench throughput --model $L $DUMMY --engine ruvon --json /tmp/res/ab-tput-llama.json
  step ab-qwen-nano 200 $AB $R bench throughput --model $Q $DUMMY --engine ruvon --json /tmp/res/ab-tput-qwen.json
fi
step prof-llama-b256-nopdl 120 env RUVON_DISABLE_PDL=1 python3 benchmarks/gpu/profile_step.py --model $L --batch-size 256 --prompt-len 700
step tests 200 python3 -m pytest -q -x tests/test_fused_ops.py tests/test_skinny_matmul.py tests/test_fused_sampler.py tests/test_async_scheduling.py tests/test_cuda_graphs.py tests/test_triton_attention.py \
  tests/test_gpu.py -k "not smollm2"
step gemv-sweep-qwen 240 python3 benchmarks/gpu/gemv_sweep.py --shapes "qwen3 qkv,qwen3 o,qwen3 gate_up,qwen3 down,qwen3 head" --json /tmp/res/gemv-sweep-qwen.json
step gemv-sweep-llama 150 python3 benchmarks/gpu/gemv_sweep.py --rows 1,8 --shapes "llama qkv,llama o,llama gate_up,llama down" --json /tmp/res/gemv-sweep-llama.json
step timeline-qwen 120 $R bench throughput --model $Q $DUMMY --engine ruvon --json /tmp/res/tput-qwen.json --timeline $OUT/timeline-qwen.json
step timeline-llama 150 $R bench throughput --model $L $DUMMY --engine ruvon --json /tmp/res/tput-llama.json --timeline $OUT/timeline-llama.json
step prof-qwen-b256-ctx700 90 python3 benchmarks/gpu/profile_step.py --model $Q --batch-size 256 --prompt-len 700
step sampler-microbench 60 python3 benchmarks/gpu/sampler_microbench.py
step nano-start-qwen 150 python3 benchmarks/gpu/profile_nano_start.py --model $Q
step nano-start-llama 200 python3 benchmarks/gpu/profile_nano_start.py --model $L
step tests-smollm2 120 python3 -m pytest -q tests/test_gpu.py -k smollm2
step lat-qwen-b1 120 $R bench latency --model $Q $DUMMY --engine both --batch-size 1 --output-len 256 --json /tmp/res/lat-qwen-b1.json
step lat-qwen-b1-nopdl 60 env RUVON_DISABLE_PDL=1 $R bench latency --model $Q $DUMMY --engine ruvon --batch-size 1 --output-len 256 --json /tmp/res/lat-qwen-b1-nopdl.json
step prof-qwen-b1-nopdl 60 env RUVON_DISABLE_PDL=1 python3 benchmarks/gpu/profile_step.py --model $Q --batch-size 1
step lat-llama-b1-nopdl 60 env RUVON_DISABLE_PDL=1 $R bench latency --model $L $DUMMY --engine ruvon --batch-size 1 --output-len 256 --json /tmp/res/lat-llama-b1-nopdl.json
step lat-start-qwen 60 python3 benchmarks/gpu/profile_latency_start.py --model $Q
step lat-start-qwen-miss 60 python3 benchmarks/gpu/profile_latency_start.py --model $Q --no-prefix-hit
step tput-llama-nopdl 120 env RUVON_DISABLE_PDL=1 $R bench throughput --model $L $DUMMY --engine ruvon --json /tmp/res/tput-llama-nopdl.json
step lat-qwen-b1-unfused 60 env RUVON_DISABLE_FUSED_OPS=1 $R bench latency --model $Q $DUMMY --engine ruvon --batch-size 1 --output-len 256 --json /tmp/res/lat-qwen-b1-unfused.json
step lat-qwen-b1-eager 60 $R bench latency --model $Q $DUMMY --engine ruvon --batch-size 1 --output-len 256 --enforce-eager --json /tmp/res/lat-qwen-b1-eager.json
step lat-qwen-b8 60 $R bench latency --model $Q $DUMMY --engine ruvon --batch-size 8 --output-len 256 --json /tmp/res/lat-qwen-b8.json
step lat-qwen-b8-eager 60 $R bench latency --model $Q $DUMMY --engine ruvon --batch-size 8 --output-len 256 --enforce-eager --json /tmp/res/lat-qwen-b8-eager.json
step prof-qwen-b1 60 python3 benchmarks/gpu/profile_step.py --model $Q --batch-size 1
step prof-qwen-b1-eager 60 python3 benchmarks/gpu/profile_step.py --model $Q --batch-size 1 --enforce-eager
step tput-qwen 120 $R bench throughput --model $Q $DUMMY --engine ruvon --json /tmp/res/tput-qwen.json
step tput-qwen-sync 120 $R bench throughput --model $Q $DUMMY --engine ruvon --no-async-scheduling --json /tmp/res/tput-qwen-sync.json
step prof-qwen-b256-sync 90 python3 benchmarks/gpu/profile_step.py --model $Q --batch-size 256 --no-async-scheduling
step tput-llama 240 $R bench throughput --model $L $DUMMY --engine ruvon --json /tmp/res/tput-llama.json
step lat-llama-b1 60 $R bench latency --model $L $DUMMY --engine ruvon --batch-size 1 --output-len 256 --json /tmp/res/lat-llama-b1.json
step lat-llama-b1-eager 60 $R bench latency --model $L $DUMMY --engine ruvon --batch-size 1 --output-len 256 --enforce-eager --json /tmp/res/lat-llama-b1-eager.json
step lat-llama-b8 60 $R bench latency --model $L $DUMMY --engine ruvon --batch-size 8 --output-len 256 --json /tmp/res/lat-llama-b8.json
step prof-llama-b1 60 python3 benchmarks/gpu/profile_step.py --model $L --batch-size 1
step prof-qwen-b8 60 python3 benchmarks/gpu/profile_step.py --model $Q --batch-size 8
step prof-qwen-b256 90 python3 benchmarks/gpu/profile_step.py --model $Q --batch-size 256
step tput-both-64 240 $R bench throughput --model $Q $DUMMY --engine both --num-prompts 64 --json /tmp/res/tput-both-64.json
step tput-both 480 $R bench throughput --model $Q $DUMMY --engine both --json /tmp/res/tput-both.json --timeline $OUT/timeline-qwen-both.json
step lat-llama-b1-both 150 $R bench latency --model $L $DUMMY --engine both --batch-size 1 --output-len 256 --json /tmp/res/lat-llama-b1-both.json
step tput-qwen-eager 150 $R bench throughput --model $Q $DUMMY --engine ruvon --enforce-eager --json /tmp/res/tput-qwen-eager.json

python3 - "$OUT" <<'EOF'
import glob, json, os, sys
results = {os.path.basename(p)[:-5]: json.load(open(p)) for p in sorted(glob.glob("/tmp/res/*.json"))}
json.dump(results, open(os.path.join(sys.argv[1], "results.json"), "w"), indent=1)
for name, rows in results.items():
    if name.startswith("gemv-sweep"):
        continue
    for r in rows:
        if "ms_per_step" in r:
            print(f"{name:20s} {r['engine']:5s} {r['ms_per_step']:8.3f} ms/step {r['tokens_per_second']:9.1f} tok/s "
                  f"roofline {r['roofline_ms_per_step']:.3f} ms ({r['roofline_fraction']:.1%}) bw {r['bandwidth_gbs']:.0f} GB/s"
                  + (f" | first step {r['first_step_ms']:.2f} ms, decode {r['decode_ms_per_step']:.3f} ms/step"
                     if r.get("decode_ms_per_step") else ""))
        else:
            print(f"{name:20s} {r['engine']:5s} {r['output_tokens']} tokens in {r['seconds']:.2f} s = "
                  f"{r['output_tokens_per_second']:.1f} tok/s")
EOF
grep -E "^(start-up|[a-z0-9.-]+\.json batch|  +[0-9]+\.[0-9]+  )|passed|failed|Error|error" "$OUT/log.txt" | head -80
