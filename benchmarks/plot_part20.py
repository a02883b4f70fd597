"""Part 20's per-step timeline: GPU kernel time vs GPU idle time of one decode step.

    python benchmarks/plot_part20.py            # writes docs/img/part20-step-timeline.png

The numbers are not measured here. They are copied from the table "Where the
time goes" in benchmarks/gpu/NOTES.md: `benchmarks/gpu/profile_step.py`
(median of 50 synchronized engine steps; GPU kernel and copy time summed from
a torch.profiler trace of 10 more steps), on one NVIDIA H200, 2026-11-27,
dummy weights, bf16, --max-model-len 4096. Idle is step time minus kernel
time: time the GPU waited for the host (launches, scheduling, outputs).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (label, step ms, GPU kernel ms, GPU busy % as printed by profile_step.py from unrounded
# times) from benchmarks/gpu/NOTES.md, "Where the time goes". 2026-11-27: before the fused
# layer ops; 2026-11-28: with them, then with asynchronous scheduling. With async scheduling
# at b256 the profiler's kernel time (3.29 ms, traced over other steps) exceeds the loop's
# 3.04 ms per step: the GPU never waits, so it is drawn as 100% busy.
PROFILE = [
    ("qwen3-0.6b b1, eager", 40.9, 3.09, 8),
    ("qwen3-0.6b b1, graphs", 4.29, 3.24, 75),
    ("qwen3-0.6b b1, graphs + fused ops", 1.714, 1.260, 74),
    ("qwen3-0.6b b1, + async scheduling", 1.290, 1.275, 99),
    ("qwen3-0.6b b256, graphs", 10.31, 6.22, 60),
    ("qwen3-0.6b b256, graphs + fused ops", 5.388, 3.289, 61),
    ("qwen3-0.6b b256, + async scheduling", 3.040, 3.040, 100),
    ("llama-3.1-8b b1, graphs", 7.11, 6.12, 86),
]
OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "part20-step-timeline.png"


def main() -> None:
    labels = [label for label, _, _, _ in PROFILE][::-1]  # first case on top
    steps = [step for _, step, _, _ in PROFILE][::-1]
    kernels = [kernel for _, _, kernel, _ in PROFILE][::-1]
    busy = [percent for _, _, _, percent in PROFILE][::-1]
    idle = [step - kernel for step, kernel in zip(steps, kernels)]
    rows = range(len(labels))

    fig, (absolute, share) = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True,
                                          gridspec_kw={"width_ratios": [3, 2]})
    absolute.barh(rows, kernels, color="#2b6cb0", label="GPU running kernels")
    absolute.barh(rows, idle, left=kernels, color="#e2a03f", label="GPU idle (launch gaps, host work)")
    for row, step in zip(rows, steps):
        absolute.text(step + 0.4, row, f"{step:.2f} ms", va="center", fontsize=8)
    absolute.set_yticks(list(rows), labels)
    absolute.set_xlabel("ms per decode step")
    absolute.set_xlim(0, max(steps) * 1.18)
    absolute.legend(loc="lower right", fontsize=8)

    share.barh(rows, busy, color="#2b6cb0")
    share.barh(rows, [100 - b for b in busy], left=busy, color="#e2a03f")
    for row, b in zip(rows, busy):
        share.text(2, row, f"{b:.0f}% busy", va="center", color="white", fontsize=8)
    share.set_xlabel("share of the step (%)")
    share.set_xlim(0, 100)

    fig.suptitle("Where a decode step's time goes (NVIDIA H200, profile_step.py, 2026-11-27/28)", fontsize=10)
    fig.tight_layout()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUTPUT, dpi=120)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
