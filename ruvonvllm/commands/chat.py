"""The interactive chat loop: tokens are printed as the engine produces them."""

from __future__ import annotations

import copy
import itertools

from rich.console import Console

from ruvonvllm.engine.llm_engine import LLMEngine
from ruvonvllm.sampling.params import SamplingParams


def stream_reply(engine: LLMEngine, request_id: str, prompt_token_ids: list[int],
                 params: SamplingParams, console: Console) -> str:
    """Run one request to completion, printing each new piece of text; returns the whole reply."""
    engine.add_request(request_id, prompt_token_ids, params)
    shown = ""
    while engine.has_unfinished_requests():
        for output in engine.step():
            text = output.outputs[0].text
            console.print(text[len(shown):], end="", markup=False, highlight=False, soft_wrap=True)
            shown = text
    console.print()
    return shown


def run_chat(engine: LLMEngine, params: SamplingParams, system: str | None, console: Console) -> None:
    messages = [{"role": "system", "content": system}] if system else []
    console.print("[dim]Chatting with the model. An empty line or Ctrl-D quits.[/]")
    for turn in itertools.count():
        try:
            user = console.input("[bold green]> [/]")
        except (EOFError, KeyboardInterrupt):
            break
        if not user.strip():
            break
        messages.append({"role": "user", "content": user})
        prompt = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        reply = stream_reply(engine, f"chat-{turn}", prompt, copy.copy(params), console)
        messages.append({"role": "assistant", "content": reply})
