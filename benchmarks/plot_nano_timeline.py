"""The nano workload step by step: what each engine step computed and how long it took.

    python benchmarks/plot_nano_timeline.py BEFORE.json AFTER.json --out docs/img/nano-timeline-qwen3.png

Reads two `ruvon bench throughput --timeline` files (engine/step_trace.py) of the same
workload and draws, for each, every step's share of the wall clock (the time between
consecutive steps' tokens reaching the host) against the time since submission, coloured
by kind (steps that prefill prompt tokens vs pure decode steps), with the number of
running sequences on a second axis. It also prints where the time went: prefill steps,
decode steps, and the effective read bandwidth of decode steps (K/V + weights per second).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def step_durations(steps: list[dict]) -> list[float]:
    durations, previous = [], 0.0
    for step in steps:
        durations.append(step["finished_at"] - previous)
        previous = step["finished_at"]
    return durations


def summarize(label: str, timeline: dict) -> None:
    steps = timeline["steps"]
    durations = step_durations(steps)
    prefill = [(s, d) for s, d in zip(steps, durations) if s["num_prefill_tokens"] > 0]
    decode = [(s, d) for s, d in zip(steps, durations) if s["num_prefill_tokens"] == 0]
    decode_seconds = sum(d for _, d in decode)
    decode_bytes = sum(s["context_tokens"] * timeline["kv_bytes_per_token"] + timeline["weight_bytes"]
                       for s, _ in decode)
    slowest = max(zip(steps, durations), key=lambda sd: sd[1])
    print(f"{label}: {timeline['result']['seconds']:.2f} s, {len(steps)} steps | prefill steps {len(prefill)}: "
          f"{sum(d for _, d in prefill):.2f} s | decode steps {len(decode)}: {decode_seconds:.2f} s, "
          f"{decode_bytes / decode_seconds / 1e12:.2f} TB/s of K/V + weights | slowest step "
          f"{slowest[1] * 1e3:.0f} ms ({slowest[0]['num_prefill_tokens']} prefill tokens)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--labels", default="before|after", help="Two labels, separated by |.")
    parser.add_argument("--title", default="nano workload")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    labels = args.labels.split("|")

    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for ax, path, label in zip(axes, (args.before, args.after), labels):
        timeline = json.loads(Path(path).read_text())
        summarize(label, timeline)
        steps = timeline["steps"]
        durations = [d * 1e3 for d in step_durations(steps)]
        times = [s["finished_at"] for s in steps]
        is_prefill = [s["num_prefill_tokens"] > 0 for s in steps]
        for kind, colour, name in ((True, "tab:orange", "steps with prefill tokens"),
                                   (False, "tab:blue", "decode steps")):
            ax.scatter([t for t, p in zip(times, is_prefill) if p == kind],
                       [d for d, p in zip(durations, is_prefill) if p == kind], s=6, c=colour, label=name)
        ax.set_yscale("log")
        ax.set_ylabel("step time (ms, log)")
        ax.set_title(f"{label}: {timeline['result']['seconds']:.2f} s, "
                     f"{timeline['result']['output_tokens_per_second']:,.0f} output tok/s")
        seqs = ax.twinx()
        seqs.plot(times, [s["num_seqs"] for s in steps], c="gray", lw=1, label="running sequences")
        seqs.set_ylabel("running sequences")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds since the requests were submitted")
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
