"""Command-line options shared by several `ruvon` commands (names follow vLLM's CLI)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Model = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="HF model directory, .gguf file, or config.json with --load-format dummy. "
                          "Default: the embedded SmolLM2-135M-Instruct.")]
Dtype = Annotated[str, typer.Option(help="auto, float32, float16 or bfloat16.")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
LoadFormat = Annotated[str, typer.Option("--load-format", help="auto, hf, gguf or dummy (random weights).")]
MaxModelLen = Annotated[Optional[int], typer.Option("--max-model-len", help="Context length; default: the model's.")]
KvCacheBytes = Annotated[Optional[int], typer.Option("--kv-cache-bytes", help="KV pool size in bytes.")]
MaxNumSeqs = Annotated[int, typer.Option("--max-num-seqs", help="Most sequences running at once.")]
MaxBatchedTokens = Annotated[int, typer.Option("--max-num-batched-tokens", help="Token budget per step.")]
SchedulerPolicy = Annotated[str, typer.Option("--scheduler", help="sequential, static or continuous.")]
AttentionBackend = Annotated[str, typer.Option("--attention-backend", help="auto, torch or triton.")]
Quantization = Annotated[Optional[str], typer.Option(
    "--quantization", help="int8: int8 weights and per-token int8 activations on the CPU (about 2x faster "
                       "decode, close to but not equal to float32). Default: the checkpoint's precision.")]
EnforceEager = Annotated[bool, typer.Option("--enforce-eager", help="Disable CUDA graphs.")]
AsyncScheduling = Annotated[Optional[bool], typer.Option(
    "--async-scheduling/--no-async-scheduling",
    help="Schedule the next step while the GPU runs this one. Default: on with CUDA.")]


def llm_kwargs(model, dtype, device, load_format, max_model_len, kv_cache_bytes=None, max_num_seqs=64,
               max_num_batched_tokens=2048, scheduler="continuous", attention_backend="auto",
               enforce_eager=False, quantization=None, **extra) -> dict:
    """LLM(...) keyword arguments from CLI options; `extra` passes other LLM arguments through."""
    return dict(**extra, model=model, dtype=dtype, device=device, load_format=load_format, max_model_len=max_model_len,
                kv_cache_bytes=kv_cache_bytes, max_num_seqs=max_num_seqs,
                max_num_batched_tokens=max_num_batched_tokens, scheduler_policy=scheduler,
                attention_backend=attention_backend, enforce_eager=enforce_eager, quantization=quantization)
