"""`ruvon bench serve` against a live server: counts add up, the report files appear; the nano workload
reproduces nano-vllm's published totals."""

from __future__ import annotations

import asyncio
import json
import math

from server_utils import SERVED_MODEL_NAME, shared_server
from typer.testing import CliRunner

from ruvonvllm.bench.serve_client import percentile, run_benchmark
from ruvonvllm.bench.serve_report import result_table, write_json, write_plot
from ruvonvllm.bench.workloads import fixed_workload, nano_workload

TINY_MAX_TOKEN_ID = 300  # below the tiny model's vocabulary


def test_nano_workload_matches_published_totals():
    workload = nano_workload()
    assert len(workload) == 256
    assert sum(len(r.prompt_token_ids) for r in workload) == 142_827
    assert sum(r.max_tokens for r in workload) == 133_966
    small = nano_workload(16, length_scale=0.125)
    assert all(12 <= len(r.prompt_token_ids) <= 128 and 12 <= r.max_tokens <= 128 for r in small)


def test_percentile_interpolates_like_numpy():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == 3.7
    assert percentile([5.0], 99) == 5.0


def test_run_benchmark_counts_every_token(tmp_path):
    url = shared_server().url
    requests = fixed_workload(8, prompt_len=6, output_len=8, max_token_id=TINY_MAX_TOKEN_ID)
    result = asyncio.run(run_benchmark(url, SERVED_MODEL_NAME, requests, max_concurrency=4))
    assert result.num_completed == 8 and result.num_failed == 0, result.errors
    assert result.total_output_tokens == 64 and result.total_prompt_tokens == 48
    assert 0 < result.ttft_ms.p50 <= result.e2e_ms.p50 and result.itl_ms.p99 >= result.itl_ms.p50 > 0
    assert all(1 <= len(r.itls) + 1 <= 8 for r in result.requests)  # chunks may carry several tokens
    assert math.isclose(result.output_token_throughput, 64 / result.duration_s)
    write_json(result, tmp_path / "result.json")
    write_plot(result, tmp_path / "latency.png")
    assert json.loads((tmp_path / "result.json").read_text())["num_completed"] == 8
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert result_table(result).row_count > 5

    poisson = asyncio.run(run_benchmark(url, SERVED_MODEL_NAME, requests[:4], request_rate=50.0, warmup=False))
    assert poisson.num_completed == 4


def test_bench_serve_command(tmp_path):
    from ruvonvllm.commands.main import app
    result = CliRunner().invoke(app, [
        "bench", "serve", "--base-url", shared_server().url, "--dataset", "nano", "--num-prompts", "4",
        "--length-scale", "0.02", "--max-token-id", str(TINY_MAX_TOKEN_ID), "--max-concurrency", "2",
        "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["num_completed"] == 4 and data["model"] == SERVED_MODEL_NAME
    assert data["total_output_tokens"] == sum(r.max_tokens for r in nano_workload(4, 0.02))
