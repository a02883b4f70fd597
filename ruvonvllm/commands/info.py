"""`ruvon info`: what was loaded, how long it took, and what fits in the KV pool (Parts 2 and 14)."""

from __future__ import annotations

import resource

from rich.console import Console
from rich.table import Table

from ruvonvllm.engine.llm_engine import LLMEngine


def resident_memory_mib() -> float:
    """Current resident set size of this process, from /proc (Linux), else the peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_info(engine: LLMEngine, console: Console) -> None:
    loaded, arch, runner = engine.loaded, engine.loaded.config, engine.runner
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    # fold, not the default ellipsis: a model path is only useful whole, however narrow the terminal
    table.add_column(overflow="fold")
    rows = [
        ("model", loaded.source),
        ("format", loaded.load_format),
        ("architecture", f"{arch.model_type}: {arch.num_hidden_layers} layers, hidden {arch.hidden_size}, "
                         f"{arch.num_attention_heads} q / {arch.num_key_value_heads} kv heads, "
                         f"head_dim {arch.head_dim}, vocab {arch.vocab_size}"),
        ("dtype / device", f"{loaded.dtype} / {loaded.device}"),
        ("weights", f"{loaded.weight_bytes / 2**20:.1f} MiB"),
        ("load time", f"{loaded.load_seconds:.2f} s"),
        ("resident memory", f"{resident_memory_mib():.0f} MiB"),
        ("max_model_len", str(engine.max_model_len)),
        ("attention backend", runner.backend.name),
        ("KV bytes per token", f"{runner.kv_bytes_per_token:,}"),
        ("KV pool", f"{runner.num_blocks:,} blocks x {runner.block_size} tokens = "
                    f"{runner.num_kv_tokens:,} tokens "
                    f"({runner.num_kv_tokens * runner.kv_bytes_per_token / 2**20:.0f} MiB)"),
    ]
    graphs = runner.cuda_graphs
    rows.append(("CUDA graphs", "off (CPU, the torch backend, or --enforce-eager)" if graphs is None else
                 f"{len(graphs.batch_sizes)} decode graphs (batch {graphs.batch_sizes[0]}..{graphs.batch_sizes[-1]}), "
                 f"{len(graphs.prefill_shapes)} prefill graphs (up to "
                 f"{graphs.prefill_shapes[-1].num_tokens if graphs.prefill_shapes else 0} tokens), "
                 f"captured in {graphs.capture_seconds:.1f} s, {graphs.memory_bytes / 2**20:.0f} MiB"))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    console.print(table)
