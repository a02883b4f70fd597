"""`ruvon bench ...`: benchmarks. `bench serve` loads any OpenAI-compatible endpoint.

Other benchmark commands (throughput, latency) are added to `bench_app`.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Optional

import typer
from rich.console import Console

bench_app = typer.Typer(help="Benchmarks: serving load, offline throughput, latency.", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


def _first_model(base_url: str, api_key: str | None) -> str:
    import httpx
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/v1/models"
    try:
        response = httpx.get(url, headers=headers, timeout=30.0)
        response.raise_for_status()
    except httpx.HTTPError as e:
        # ConnectionError: the entry point turns it into one line (commands/main.py).
        raise ConnectionError(f"cannot list the models of {base_url} ({url}: {e}); is a server running there?") from e
    return response.json()["data"][0]["id"]


@bench_app.command("serve")
def serve_benchmark(
    base_url: Annotated[str, typer.Option("--base-url", help="The server, e.g. http://127.0.0.1:8000.")]
        = "http://127.0.0.1:8000",
    model: Annotated[Optional[str], typer.Option(help="Model name to send; default: the server's first.")] = None,
    dataset: Annotated[str, typer.Option(help="nano (nano-vllm's length distribution) or fixed.")] = "nano",
    num_prompts: Annotated[int, typer.Option("--num-prompts")] = 256,
    length_scale: Annotated[float, typer.Option("--length-scale", help="nano: multiply prompt and output "
                                                "length bounds (e.g. 0.125 for a CPU run).")] = 1.0,
    input_len: Annotated[int, typer.Option("--input-len", help="fixed: prompt tokens.")] = 32,
    output_len: Annotated[int, typer.Option("--output-len", help="fixed: output tokens.")] = 128,
    request_rate: Annotated[float, typer.Option("--request-rate", help="Poisson arrivals per second; "
                                                "inf sends all at once.")] = math.inf,
    max_concurrency: Annotated[Optional[int], typer.Option("--max-concurrency")] = None,
    temperature: float = 0.0,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos/--no-ignore-eos")] = True,
    prompt_format: Annotated[str, typer.Option("--prompt-format", help="token-ids or text "
                                               "(decoded with --tokenizer).")] = "token-ids",
    tokenizer: Annotated[Optional[str], typer.Option(help="For --prompt-format text: a model directory or "
                                                     ".gguf; default: the embedded model's.")] = None,
    max_token_id: Annotated[int, typer.Option("--max-token-id", help="Prompt ids are drawn from "
                                              "[0, max-token-id].")] = 10000,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="Bearer token; default: $RUVON_API_KEY.")]
        = None,
    seed: int = 0,
    warmup: Annotated[bool, typer.Option("--warmup/--no-warmup")] = True,
    json_path: Annotated[Optional[str], typer.Option("--json", help="Write the results here.")] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Write a latency plot (PNG) here.")] = None,
) -> None:
    """Load an OpenAI-compatible server and report TTFT, ITL, e2e latency and throughput."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ruvonvllm.bench.serve_client import run_benchmark
    from ruvonvllm.bench.serve_report import result_table, write_json, write_plot
    from ruvonvllm.bench.workloads import fixed_workload, nano_workload
    from ruvonvllm.config import env_str

    api_key = api_key or env_str("RUVON_API_KEY")
    try:
        if dataset == "nano":
            requests = nano_workload(num_prompts, length_scale, seed, max_token_id)
        elif dataset == "fixed":
            requests = fixed_workload(num_prompts, input_len, output_len, seed, max_token_id)
        else:
            raise ValueError(f"--dataset must be nano or fixed, got {dataset!r}")
        if prompt_format not in ("token-ids", "text"):
            raise ValueError(f"--prompt-format must be token-ids or text, got {prompt_format!r}")
    except ValueError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from e
    decode = None
    if prompt_format == "text":
        from ruvonvllm.model.default_model import default_model_path
        from ruvonvllm.tokenizer import Tokenizer
        decode = Tokenizer.from_model_path(tokenizer or str(default_model_path())).decode
    model = model or _first_model(base_url, api_key)

    # Redrawn when a request finishes, not 10 times a second from a thread of its own: on a small
    # machine the load generator shares the cores with the server it measures.
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True, auto_refresh=False) as progress:
        task = progress.add_task("requests", total=len(requests))
        try:
            result = asyncio.run(run_benchmark(
                base_url, model, requests, request_rate, max_concurrency, temperature, ignore_eos, api_key,
                decode, seed, warmup, on_done=lambda _: progress.update(task, advance=1, refresh=True)))
        except ValueError as e:
            console.print(f"[bold red]error:[/] {e}")
            raise typer.Exit(2) from e
    console.print(result_table(result))
    for error in result.errors:
        console.print(f"[red]error:[/] {error}", markup=True, highlight=False)
    if json_path:
        write_json(result, json_path)
        console.print(f"[dim]results written to {json_path}[/]")
    if plot:
        write_plot(result, plot)
        console.print(f"[dim]plot written to {plot}[/]")
    if result.num_completed == 0:
        raise typer.Exit(1)


@bench_app.command("stall")
def stall_benchmark(
    base_url: Annotated[str, typer.Option("--base-url", help="The server, e.g. http://127.0.0.1:8000.")]
        = "http://127.0.0.1:8000",
    model: Annotated[Optional[str], typer.Option(help="Model name to send; default: the server's first.")] = None,
    prompt_mb: Annotated[float, typer.Option("--prompt-mb", help="Size of the big prompts (MB).")] = 5.0,
    oversized_mb: Annotated[Optional[float], typer.Option("--oversized-mb", help="Also send a body this big "
                                                          "(MB), which the server should refuse.")] = None,
    quiet_s: Annotated[float, typer.Option("--quiet-s", help="Seconds of probing before the big requests.")] = 3.0,
    loaded_s: Annotated[float, typer.Option("--loaded-s", help="Seconds of sending big requests.")] = 4.0,
    interval_s: Annotated[float, typer.Option("--interval-s", help="Pause after each big request.")] = 0.25,
    kind: Annotated[Optional[list[str]], typer.Option("--kind", help="Which big requests (repeatable): "
                                                      "tokenize, completion, chat, completion-ids, oversized; "
                                                      "default: all.")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="Bearer token; default: $RUVON_API_KEY.")]
        = None,
    json_path: Annotated[Optional[str], typer.Option("--json", help="Write the results here.")] = None,
) -> None:
    """Time /health and a running stream while multi-megabyte requests arrive: does one stall the rest?"""
    import dataclasses
    import json
    from pathlib import Path

    from rich.table import Table

    from ruvonvllm.bench.stall import BIG_REQUEST_KINDS, measure_stall
    from ruvonvllm.config import env_str

    api_key = api_key or env_str("RUVON_API_KEY")
    model = model or _first_model(base_url, api_key)
    with console.status(f"probing {base_url}: {quiet_s:g} s quiet, then {loaded_s:g} s of {prompt_mb:g} MB requests"):
        result = measure_stall(base_url, model, prompt_mb, oversized_mb, quiet_s, loaded_s, api_key,
                               tuple(kind) if kind else BIG_REQUEST_KINDS, interval_s)
    table = Table(title=f"Stall under big requests: {base_url}")
    for column in ("phase", "samples", "/health p50 (ms)", "/health max (ms)", "token gap p50 (ms)",
                   "token gap max (ms)"):
        table.add_column(column, justify="right" if column != "phase" else "left")
    for phase, times in (("quiet", result.quiet), ("big requests", result.loaded)):
        table.add_row(phase, str(len(times.health_ms)),
                      f"{times.health.p50:.1f}", f"{max(times.health_ms, default=0):.1f}",
                      f"{times.token_gap.p50:.1f}", f"{max(times.token_gap_ms, default=0):.1f}")
    console.print(table)
    for answer, count in sorted(result.answers.items()):
        console.print(f"  {count} x {answer}", highlight=False)
    if result.big_request_s:
        console.print(f"  slowest big request answered in {max(result.big_request_s):.2f} s", highlight=False)
    if json_path:
        data = dataclasses.asdict(result)
        Path(json_path).write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"[dim]results written to {json_path}[/]")
