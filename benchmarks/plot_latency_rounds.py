"""Batch-1 decode latency, round by round, from the stored GPU results (Part 20's picture).

    python benchmarks/plot_latency_rounds.py --out docs/img/latency-rounds-qwen3.png

Each bar is one `ruvon bench latency` result kept in benchmarks/results/ (the file
and the path inside it are listed in ROUNDS), so the plot redraws from the
same JSON the tables quote. Where a result splits its time (first step vs
steady decode), the bar shows the first step's share of every token on top.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# (label, file under benchmarks/results, keys down to the result row); all qwen3-0.6b, batch 1, H200.
ROUNDS = [
    ("graphs\n(11-27)", "gpu-h200-2026-11-27.json", ["lat-qwen-b1", 0]),
    ("fused\nlayer ops", "gpu-h200-2026-11-28.json", ["calls", "call1_commit_33a0f11_fused_ops", "lat-qwen-b1", 0]),
    ("async\nscheduling", "gpu-h200-2026-11-28.json", ["calls", "call3_commit_async_scheduling", "lat-qwen-b1", 0]),
    ("skinny\nmatmul", "gpu-h200-2026-11-28-s3/call3-7756bca-results.json", ["lat-qwen-b1", 0]),
    ("PDL, fewer\nkernels", "gpu-h200-2026-11-28-s4/call1-results.json", ["lat-qwen-b1", 0]),
    ("prefill\ngraphs", "gpu-h200-2026-11-28-s4/call5-results.json", ["lat-qwen-b1", 0]),
]
TARGET_MS = 1.0       # issue 4: 1,000 tok/s
VLLM_MS = 1.54        # shared/BENCHMARKS.md, vLLM 0.26 on an H200


def load(file: str, keys: list) -> dict:
    row = json.loads((RESULTS / file).read_text())
    for key in keys:
        row = row[key]
    if row["engine"] != "ruvon" or row["batch_size"] != 1:
        raise ValueError(f"{file} {keys}: not a batch-1 RuvonVLLM latency result")
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/img/latency-rounds-qwen3.png")
    args = parser.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [load(file, keys) for _, file, keys in ROUNDS]
    labels = [label for label, _, _ in ROUNDS]
    totals = [row["ms_per_step"] for row in rows]
    # The first step's share of each token: (whole run - steady steps) / tokens.
    first_share = [(row["ms_per_step"] - row["decode_ms_per_step"] * (row["output_len"] - 1) / row["output_len"])
                   if row.get("decode_ms_per_step") else 0.0 for row in rows]
    steady = [total - share for total, share in zip(totals, first_share)]

    fig, ax = plt.subplots(figsize=(8, 4.2))
    x = range(len(rows))
    ax.bar(x, steady, color="#4C72B0", label="decode steps")
    ax.bar(x, first_share, bottom=steady, color="#DD8452", label="first step (prefill), per token")
    for i, total in enumerate(totals):
        ax.text(i, total + 0.12, f"{total:.2f} ms\n{1000 / total:,.0f} tok/s", ha="center", fontsize=8,
                bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
    ax.axhline(TARGET_MS, color="green", linestyle="--", linewidth=1, label="target: 1,000 tok/s")
    ax.axhline(VLLM_MS, color="gray", linestyle=":", linewidth=1, label="vLLM 0.26: 650 tok/s")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("ms per output token")
    ax.set_ylim(0, max(totals) * 1.25)
    ax.set_title("qwen3-0.6b, batch 1, 128 prompt + 256 new tokens, H200 (`ruvon bench latency`)", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
