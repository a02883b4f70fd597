"""Presenting a serving benchmark: a rich table, a JSON file and a latency plot."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from rich.table import Table

from ruvonvllm.bench.serve_client import BenchmarkResult, Summary


def result_table(result: BenchmarkResult) -> Table:
    table = Table(title=f"Serving benchmark: {result.model} at {result.base_url}", show_header=True)
    table.add_column("metric")
    for column in ("mean", "p50", "p90", "p99"):
        table.add_column(column, justify="right")
    for name, summary in (("TTFT (ms)", result.ttft_ms), ("ITL (ms)", result.itl_ms),
                          ("TPOT (ms)", result.tpot_ms), ("E2E latency (ms)", result.e2e_ms)):
        table.add_row(name, *(f"{getattr(summary, f.name):.1f}" for f in dataclasses.fields(Summary)))
    rate = "inf" if math.isinf(result.request_rate) else f"{result.request_rate:g}/s"
    table.add_section()
    for name, value in (
        ("requests (completed/sent)", f"{result.num_completed}/{result.num_requests}"),
        ("arrival rate / max concurrency", f"{rate} / {result.max_concurrency or 'none'}"),
        ("duration (s)", f"{result.duration_s:.2f}"),
        ("prompt / output tokens", f"{result.total_prompt_tokens} / {result.total_output_tokens}"),
        ("request throughput (req/s)", f"{result.request_throughput:.2f}"),
        ("output token throughput (tok/s)", f"{result.output_token_throughput:.1f}"),
        ("total token throughput (tok/s)", f"{result.total_token_throughput:.1f}"),
    ):
        table.add_row(name, value, "", "", "")
    return table


def result_dict(result: BenchmarkResult, include_requests: bool = False) -> dict:
    data = dataclasses.asdict(result)
    if not include_requests:
        data.pop("requests")
    if math.isinf(result.request_rate):
        data["request_rate"] = "inf"  # JSON has no infinity
    return data


def write_json(result: BenchmarkResult, path: str | Path) -> None:
    Path(path).write_text(json.dumps(result_dict(result, include_requests=True), indent=2, default=str) + "\n")


def write_plot(result: BenchmarkResult, path: str | Path) -> None:
    """Three panels: TTFT and e2e latency of each request against its send time, and the ITL distribution."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in result.requests if r.ok]
    starts = [r.start for r in done]
    fig, (ax_ttft, ax_e2e, ax_itl) = plt.subplots(1, 3, figsize=(15, 4.5))
    ax_ttft.scatter(starts, [1000 * (r.ttft or 0) for r in done], s=10)
    ax_ttft.set(title="Time to first token", xlabel="request sent at (s)", ylabel="ms")
    ax_e2e.scatter(starts, [1000 * (r.latency or 0) for r in done], s=10, color="tab:orange")
    ax_e2e.set(title="End-to-end latency", xlabel="request sent at (s)", ylabel="ms")
    itls = sorted(1000 * gap for r in done for gap in r.itls)
    if itls:
        ax_itl.plot(itls, [i / len(itls) for i in range(1, len(itls) + 1)], color="tab:green")
    for q, value in (("p50", result.itl_ms.p50), ("p99", result.itl_ms.p99)):
        if not math.isnan(value):
            ax_itl.axvline(value, linestyle="--", color="gray")
            ax_itl.annotate(q, (value, 0.05), rotation=90)
    ax_itl.set(title="Inter-token latency (CDF)", xlabel="ms", ylabel="fraction of gaps")
    fig.suptitle(f"{result.model}: {result.num_completed} requests, "
                 f"{result.output_token_throughput:.1f} output tok/s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
