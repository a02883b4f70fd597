#!/usr/bin/env bash
# Part 4's stall measurement, before and after: `bash benchmarks/cpu_stall.sh BASE_REF [OUT_DIR]`.
# Starts `ruvon serve` on the embedded default model from BASE_REF (see cpu_checkout_env.sh),
# runs `ruvon bench stall` against it (5 MB prompts of every kind and a 50 MB body), stops it,
# and does the same with the current checkout's server, then once per kind of big request (which
# one costs what). The client is the current checkout's.
set -euo pipefail
base=${1:?usage: bash benchmarks/cpu_stall.sh BASE_REF [OUT_DIR]}
out=${2:-benchmarks/results/cpu/stall}
port=${PORT:-8017}
mkdir -p "$out"
. benchmarks/cpu_checkout_env.sh "$base"
for side in base head; do
  bin=$([ "$side" = base ] && echo "$REF_BIN" || dirname "$(command -v ruvon)")
  "$bin/ruvon" serve --port "$port" > "$out/serve_$side.log" 2>&1 &
  server=$!
  for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 1; done
  ruvon bench stall --base-url "http://127.0.0.1:$port" --prompt-mb 5 --oversized-mb 50 --quiet-s 3 \
    --loaded-s 8 --json "$out/stall_$side.json" | tee "$out/stall_$side.txt"
  if [ "$side" = head ]; then
    for kind in tokenize completion chat completion-ids oversized; do
      ruvon bench stall --base-url "http://127.0.0.1:$port" --prompt-mb 5 --oversized-mb 50 --quiet-s 0 \
        --loaded-s 6 --kind "$kind" --json "$out/stall_head_$kind.json" > "$out/stall_head_$kind.txt"
    done
    # A prompt short enough to be tokenized (under the character bound), too long to be served.
    ruvon bench stall --base-url "http://127.0.0.1:$port" --prompt-mb 0.6 --quiet-s 0 --loaded-s 6 \
      --kind completion --json "$out/stall_head_tokenized.json" > "$out/stall_head_tokenized.txt"
  fi
  kill -TERM "$server"; wait "$server" || true
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def row(name, path):
    data = json.load(open(path))
    loaded, quiet = data["loaded"], data["quiet"]
    quiet_gap = f"{max(quiet['token_gap_ms']):.0f}" if quiet["token_gap_ms"] else "-"
    print(f"| {name} | {quiet_gap} | "
          f"{max(loaded['token_gap_ms']):,.0f} | {max(loaded['health_ms']):.1f} | {max(data['big_request_s']):.2f} |")
print("| server, big requests | worst token gap, quiet (ms) | worst token gap, big requests (ms) | "
      "worst /health (ms) | slowest big request (s) |")
print("|---|---|---|---|---|")
row("before, all kinds", f"{out}/stall_base.json")
row("after, all kinds", f"{out}/stall_head.json")
for kind in ("tokenize", "completion", "chat", "completion-ids", "oversized"):
    row(f"after, {kind} only", f"{out}/stall_head_{kind}.json")
row("after, 0.6 MB completion (tokenized)", f"{out}/stall_head_tokenized.json")
PY
