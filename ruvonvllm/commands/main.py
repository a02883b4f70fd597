"""`ruvon`: the command line. Thin: parse, call the public API, print."""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated, Optional

import typer
from rich.console import Console

from ruvonvllm.commands import options as opt

app = typer.Typer(help="RuvonVLLM: a readable LLM inference engine.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)

DEFAULT_PROMPT = "What is the capital of France?"


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def build_llm(**kwargs):
    from ruvonvllm import LLM
    try:
        return LLM(**kwargs)
    except ValueError as e:
        fail(str(e))


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt.")] = DEFAULT_PROMPT,
    model: opt.Model = None, dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    load_format: opt.LoadFormat = "auto", max_model_len: opt.MaxModelLen = None,
    attention_backend: opt.AttentionBackend = "auto",
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 128,
    temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0,
    seed: Optional[int] = None, n: int = 1,
    quantization: opt.Quantization = None,
    chat: Annotated[bool, typer.Option("--chat/--raw", help="Apply the model's chat template.")] = True,
) -> None:
    """Generate a completion for one prompt and report the speed."""
    from ruvonvllm import SamplingParams
    try:
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                                seed=seed, max_tokens=max_tokens)
    except ValueError as e:
        fail(str(e))
    llm = build_llm(**opt.llm_kwargs(model, dtype, device, load_format, max_model_len,
                                     attention_backend=attention_backend, quantization=quantization))
    use_chat = chat and llm.get_tokenizer().has_chat_template
    start = time.perf_counter()
    try:
        if use_chat:
            outputs = llm.chat([{"role": "user", "content": prompt}], params, use_tqdm=False)
        else:
            outputs = llm.generate(prompt, params, use_tqdm=False)
    except ValueError as e:
        fail(str(e))
    elapsed = time.perf_counter() - start
    result = outputs[0]
    num_tokens = sum(len(c.token_ids) for c in result.outputs)
    for completion in result.outputs:
        if n > 1:
            console.rule(f"output {completion.index}")
        console.print(completion.text, markup=False, highlight=False)
    console.print(f"[dim]{len(result.prompt_token_ids)} prompt tokens, {num_tokens} generated in "
                  f"{elapsed:.2f} s ({num_tokens / elapsed:.1f} tok/s), finish: "
                  f"{', '.join(str(c.finish_reason) for c in result.outputs)}[/]")


@app.command("chat")
def chat_command(
    model: opt.Model = None, dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    load_format: opt.LoadFormat = "auto", max_model_len: opt.MaxModelLen = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 512,
    temperature: float = 0.7, top_p: float = 0.9, seed: Optional[int] = None,
    system: Annotated[Optional[str], typer.Option(help="A system prompt.")] = None,
) -> None:
    """Chat interactively; tokens stream as they are produced. Empty line or Ctrl-D quits."""
    from ruvonvllm import SamplingParams
    from ruvonvllm.commands.chat import run_chat
    params = SamplingParams(temperature=temperature, top_p=top_p, seed=seed, max_tokens=max_tokens)
    llm = build_llm(**opt.llm_kwargs(model, dtype, device, load_format, max_model_len))
    run_chat(llm.engine, params, system, console)


@app.command()
def info(
    model: opt.Model = None, dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    load_format: opt.LoadFormat = "auto", max_model_len: opt.MaxModelLen = None,
    kv_cache_bytes: opt.KvCacheBytes = None, quantization: opt.Quantization = None,
) -> None:
    """Show the model, how it was loaded, and how many tokens the KV pool holds."""
    from ruvonvllm.commands.info import print_info
    llm = build_llm(**opt.llm_kwargs(model, dtype, device, load_format, max_model_len, kv_cache_bytes,
                                     quantization=quantization))
    print_info(llm.engine, console)


def register_optional_commands() -> None:
    """Commands that live in their own modules (server, benchmarks) register themselves here."""
    import importlib
    for module in ("ruvonvllm.commands.serve", "ruvonvllm.commands.bench", "ruvonvllm.commands.bench_offline"):
        try:
            importlib.import_module(module).register(app)
        except ModuleNotFoundError as e:
            # A machine without a command's own dependencies (say, the GPU box without uvicorn)
            # still gets every other command; a missing module of ours is a real bug.
            if e.name is None or e.name.startswith("ruvonvllm"):
                raise


register_optional_commands()

# What a user's bad input raises: an invalid option value (ValueError, from the checks in
# SamplingParams, EngineConfig and the loaders), a path that cannot be read (OSError), a server
# that cannot be reached (ConnectionError), a feature this build lacks (NotImplementedError).
USER_ERRORS = (ValueError, OSError, ConnectionError, NotImplementedError)


def main() -> None:
    """The `ruvon` entry point: a bad option or an unservable model ends in one sentence.

    A traceback tells a user where our code noticed the problem, not what to change; the
    message says that. RUVON_TRACEBACK=1 shows the traceback anyway (for a bug report).
    """
    try:
        app()
    except USER_ERRORS as e:
        if os.environ.get("RUVON_TRACEBACK") == "1":
            raise
        err_console.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
