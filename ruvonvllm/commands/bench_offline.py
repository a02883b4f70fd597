"""`ruvon bench latency` and `ruvon bench throughput`: us and HF transformers in one process run.

Every report carries both engines' numbers, so a ratio never mixes two runs.
"""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ruvonvllm.commands import options as opt

console = Console()
ENGINES = ("ruvon", "hf", "both")
Engine = Annotated[str, typer.Option("--engine", help="ruvon, hf, or both (same process, same workload).")]
JsonPath = Annotated[Optional[str], typer.Option("--json", help="Write the results here.")]


def _engines(engine: str) -> list[str]:
    if engine not in ENGINES:
        console.print(f"[bold red]error:[/] --engine must be one of {ENGINES}, got {engine!r}")
        raise typer.Exit(2)
    return ["ruvon", "hf"] if engine == "both" else [engine]


def _llm(model, dtype, device, load_format, max_model_len, **kwargs):
    from ruvonvllm import LLM
    return LLM(**opt.llm_kwargs(model, dtype, device, load_format, max_model_len, **kwargs))


def _hf_model(model, load_format, dtype_name, device_name):
    from ruvonvllm.bench.hf_peer import load_hf_model
    from ruvonvllm.model.loader import resolve_device
    import torch
    device = resolve_device(device_name)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    if dtype_name != "auto":
        dtype = getattr(torch, dtype_name)
    return load_hf_model(model, load_format, dtype, device), device


def latency(
    model: opt.Model = None, dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    load_format: opt.LoadFormat = "auto", max_model_len: opt.MaxModelLen = None,
    attention_backend: opt.AttentionBackend = "auto", enforce_eager: opt.EnforceEager = False,
    async_scheduling: opt.AsyncScheduling = None, quantization: opt.Quantization = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 1,
    input_len: Annotated[int, typer.Option("--input-len", help="Random prompt ids (ignored with --chat).")] = 128,
    output_len: Annotated[int, typer.Option("--output-len")] = 256,
    chat: Annotated[bool, typer.Option("--chat", help="Use the chat prompts of the CPU benchmarks instead "
                                       "of random ids.")] = False,
    kv_cache: Annotated[bool, typer.Option("--kv-cache/--no-kv-cache", help="--no-kv-cache recomputes every "
                                           "sequence each step (Part 3's baseline).")] = True,
    temperature: Annotated[float, typer.Option(help="0 = greedy (ours only; HF stays greedy).")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    engine: Engine = "ruvon", json_path: JsonPath = None,
) -> None:
    """Decode latency: ms per step at a fixed batch, ignore_eos, against the roofline."""
    from ruvonvllm.bench.latency import make_result, run_ruvon_latency

    if batch_size < 1 or output_len < 1 or input_len < 1:
        raise ValueError(f"--batch-size, --input-len and --output-len must be >= 1, got {batch_size}, "
                         f"{input_len} and {output_len}")
    results = []
    llm = None
    for name in _engines(engine):
        if name == "ruvon":
            llm = _llm(model, dtype, device, load_format, max_model_len, attention_backend=attention_backend,
                       enforce_eager=enforce_eager, max_num_seqs=max(batch_size, 1), enable_kv_cache=kv_cache,
                       async_scheduling=async_scheduling, quantization=quantization)
            prompts = _prompts(llm.get_tokenizer(), chat, batch_size, input_len, llm.engine.loaded.config.vocab_size)
            seconds, split = run_ruvon_latency(llm, prompts, output_len, temperature=temperature, top_p=top_p)
            loaded = llm.engine.loaded
            results.append(make_result("ruvon", prompts, output_len, seconds, loaded.weight_bytes, loaded.device,
                                       split))
        else:
            from ruvonvllm.bench.hf_peer import hf_generate
            hf, hf_device = _hf_model(model, load_format, dtype, device)
            tokenizer = llm.get_tokenizer() if llm is not None else _tokenizer_for(model, load_format)
            prompts = _prompts(tokenizer, chat, batch_size, input_len, hf.config.vocab_size)
            hf_generate(hf, prompts[:1], 8)  # warm-up
            seconds, _ = hf_generate(hf, prompts, output_len)
            weight_bytes = sum(p.numel() * p.element_size() for p in hf.parameters())
            results.append(make_result("hf", prompts, output_len, seconds, weight_bytes, hf_device))
            del hf
    table = Table(title=f"latency: batch {batch_size}, {output_len} tokens")
    for column in ("engine", "ms/step", "tok/s", "roofline ms/step", "of roofline", "first step ms",
                   "decode ms/step"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r.engine, f"{r.ms_per_step:.2f}", f"{r.tokens_per_second:.1f}",
                      f"{r.roofline_ms_per_step:.3f}", f"{r.roofline_fraction:.1%}",
                      "" if r.first_step_ms is None else f"{r.first_step_ms:.2f}",
                      "" if r.decode_ms_per_step is None else f"{r.decode_ms_per_step:.3f}")
    _print_and_save(table, [r.to_dict() for r in results], json_path)


def throughput(
    model: opt.Model = None, dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    load_format: opt.LoadFormat = "auto", max_model_len: opt.MaxModelLen = None,
    attention_backend: opt.AttentionBackend = "auto", enforce_eager: opt.EnforceEager = False,
    async_scheduling: opt.AsyncScheduling = None, quantization: opt.Quantization = None,
    max_num_seqs: opt.MaxNumSeqs = 256, max_num_batched_tokens: opt.MaxBatchedTokens = 8192,
    kv_cache_bytes: opt.KvCacheBytes = None, scheduler: opt.SchedulerPolicy = "continuous",
    num_prompts: Annotated[int, typer.Option("--num-prompts")] = 256,
    length_scale: Annotated[float, typer.Option("--length-scale", help="Shrink the nano workload's lengths.")] = 1.0,
    temperature: float = 0.6, engine: Engine = "ruvon", json_path: JsonPath = None,
    timeline: Annotated[Optional[str], typer.Option("--timeline", help="Write every step of our run (tokens, "
                                                    "context, times) to this JSON file.")] = None,
) -> None:
    """The nano workload: every request at once; output tokens per second."""
    from ruvonvllm.bench.throughput import run_hf_throughput, run_ruvon_throughput
    from ruvonvllm.bench.workloads import fit_to_vocab, nano_workload

    requests = nano_workload(num_prompts, length_scale)
    results = []
    for name in _engines(engine):
        if name == "ruvon":
            llm = _llm(model, dtype, device, load_format, max_model_len, attention_backend=attention_backend,
                       enforce_eager=enforce_eager, max_num_seqs=max_num_seqs,
                       max_num_batched_tokens=max_num_batched_tokens, kv_cache_bytes=kv_cache_bytes,
                       scheduler=scheduler, async_scheduling=async_scheduling, quantization=quantization)
            requests = fit_to_vocab(requests, llm.engine.loaded.config.vocab_size)
            results.append(run_ruvon_throughput(llm, requests, temperature, timeline))
            del llm
        else:
            hf, _ = _hf_model(model, load_format, dtype, device)
            requests = fit_to_vocab(requests, hf.config.vocab_size)
            results.append(run_hf_throughput(hf, requests, temperature))
            del hf
    table = Table(title=f"throughput: {len(requests)} requests, "
                        f"{sum(len(r.prompt_token_ids) for r in requests):,} prompt tokens")
    for column in ("engine", "output tokens", "seconds", "output tok/s"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r.engine, f"{r.output_tokens:,}", f"{r.seconds:.2f}", f"{r.output_tokens_per_second:,.1f}")
    if len(results) == 2:
        table.caption = f"ruvon / hf = {results[0].output_tokens_per_second / results[1].output_tokens_per_second:.1f}x"
    _print_and_save(table, [r.to_dict() for r in results], json_path)


def prefix_cache(
    model: opt.Model = None, dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    load_format: opt.LoadFormat = "auto", max_model_len: opt.MaxModelLen = None,
    num_prompts: Annotated[int, typer.Option("--num-prompts")] = 16,
    prefix_len: Annotated[int, typer.Option("--prefix-len", help="Tokens every prompt shares.")] = 512,
    suffix_len: Annotated[int, typer.Option("--suffix-len", help="Tokens unique to each prompt.")] = 32,
    output_len: Annotated[int, typer.Option("--output-len")] = 32,
    json_path: JsonPath = None,
) -> None:
    """Part 14: prompts sharing a long prefix (a system prompt, a document), prefix cache off vs on."""
    from ruvonvllm.bench.prefix import run_prefix_benchmark

    if min(num_prompts, prefix_len, suffix_len, output_len) < 1:
        raise ValueError(f"--num-prompts, --prefix-len, --suffix-len and --output-len must be >= 1, got "
                         f"{num_prompts}, {prefix_len}, {suffix_len} and {output_len}")
    results = []
    for enabled in (False, True):
        llm = _llm(model, dtype, device, load_format, max_model_len, enable_prefix_caching=enabled)
        results.append(run_prefix_benchmark(llm, enabled, num_prompts, prefix_len, suffix_len, output_len))
        del llm
    table = Table(title=f"prefix cache: {num_prompts} prompts = {prefix_len} shared + {suffix_len} own tokens, "
                        f"{output_len} out")
    for column in ("prefix cache", "prompt tokens computed", "hit rate", "seconds", "requests/s"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row("on" if r["enabled"] else "off", f"{r['computed_prompt_tokens']:,}", f"{r['hit_rate']:.1%}",
                      f"{r['seconds']:.2f}", f"{r['requests_per_second']:.2f}")
    _print_and_save(table, results, json_path)


def _prompts(tokenizer, chat: bool, batch_size: int, input_len: int, vocab_size: int) -> list[list[int]]:
    from ruvonvllm.bench.chat_prompts import CHAT_PROMPTS
    from ruvonvllm.bench.latency import random_prompts
    if not chat:
        return random_prompts(batch_size, input_len, vocab_size)
    return [tokenizer.apply_chat_template([{"role": "user", "content": CHAT_PROMPTS[i % len(CHAT_PROMPTS)]}])
            for i in range(batch_size)]


def _tokenizer_for(model, load_format):
    from ruvonvllm.model.default_model import default_model_path
    from ruvonvllm.tokenizer import Tokenizer
    if load_format == "dummy":
        return None
    return Tokenizer.from_model_path(model or default_model_path())


def _print_and_save(table: Table, rows: list[dict], json_path: str | None) -> None:
    console.print(table)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=2)
        console.print(f"[dim]wrote {json_path}[/]")


def register(app: typer.Typer) -> None:
    from ruvonvllm.commands.bench import bench_app
    bench_app.command("latency")(latency)
    bench_app.command("throughput")(throughput)
    bench_app.command("prefix-cache")(prefix_cache)
