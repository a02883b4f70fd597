"""Plots for the CPU articles from benchmarks/cpu_articles.sh's JSON files.

    python benchmarks/plot_cpu_articles.py benchmarks/results/cpu docs/img
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(directory: Path, name: str) -> list[dict]:
    return json.loads((directory / f"{name}.json").read_text())


def bar(ax, labels, values, title, ylabel):
    bars = ax.bar(labels, values, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"][: len(values)])
    ax.bar_label(bars, fmt="%.1f")
    ax.set_title(title)
    ax.set_ylabel(ylabel)


def main(results: Path, images: Path) -> None:
    images.mkdir(parents=True, exist_ok=True)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    b1 = {r["engine"]: r for r in load(results, "latency_b1")}
    nocache = load(results, "latency_b1_nocache")[0]
    bar(axes[0], ["ruvon\nKV cache", "ruvon\nno KV cache", "HF\ngenerate"],
        [b1["ruvon"]["tokens_per_second"], nocache["tokens_per_second"], b1["hf"]["tokens_per_second"]],
        "batch 1, 256 tokens (Parts 1, 3)", "output tokens / s")
    b16 = {r["engine"]: r for r in load(results, "latency_b16")}
    sampled = load(results, "latency_b16_sampled")[0]
    bar(axes[1], ["ruvon\ngreedy", "ruvon\ntop-p 0.95", "HF static\nbatch"],
        [b16["ruvon"]["tokens_per_second"], sampled["tokens_per_second"], b16["hf"]["tokens_per_second"]],
        "16 concurrent requests, 128 tokens each", "output tokens / s")
    fig.suptitle("SmolLM2-135M fp32 on 2 CPU cores")
    fig.tight_layout()
    fig.savefig(images / "cpu_latency.png", dpi=110)

    fig, ax = plt.subplots(figsize=(8, 4))
    names = ["sequential", "static", "continuous", "static_8", "continuous_8"]
    labels = ["sequential", "static", "continuous", "static\nmax 8 seqs", "continuous\nmax 8 seqs"]
    values = [load(results, f"throughput_{n}")[0]["output_tokens_per_second"] for n in names]
    bar(ax, labels, values, "Scaled nano workload (32 requests) on 2 CPU cores", "output tokens / s")
    fig.tight_layout()
    fig.savefig(images / "cpu_scheduler_policies.png", dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
