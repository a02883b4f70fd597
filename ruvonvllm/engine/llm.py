"""LLM: the offline API, shaped like vLLM's.

    llm = LLM()                                   # embedded SmolLM2-135M-Instruct
    llm.generate(["Hello", "Bonjour"], SamplingParams(max_tokens=32))
    llm.chat([{"role": "user", "content": "What is the capital of France?"}])
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence as SequenceABC

from tqdm.auto import tqdm

from ruvonvllm.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from ruvonvllm.engine.llm_engine import LLMEngine
from ruvonvllm.outputs import RequestOutput
from ruvonvllm.sampling.params import RequestOutputKind, SamplingParams

PromptInput = str | list[int] | dict
Message = dict[str, str]


class LLM:
    def __init__(self, model: str | None = None, *, tokenizer: str | None = None, dtype: str = "auto",
                 device: str = "auto", load_format: str = "auto", max_model_len: int | None = None,
                 seed: int = 0, block_size: int = 16, kv_cache_bytes: int | None = None,
                 gpu_memory_utilization: float = 0.85, num_blocks: int | None = None,
                 enable_prefix_caching: bool = True, max_num_seqs: int = 64,
                 max_num_batched_tokens: int = 2048, enable_chunked_prefill: bool = True,
                 scheduler_policy: str = "continuous", enable_kv_cache: bool = True,
                 attention_backend: str = "auto", enforce_eager: bool = False,
                 async_scheduling: bool | None = None, quantization: str | None = None) -> None:
        config = EngineConfig(
            model=ModelConfig(model=model, tokenizer=tokenizer, load_format=load_format, dtype=dtype,
                              device=device, max_model_len=max_model_len, seed=seed,
                              quantization=quantization),
            cache=CacheConfig(block_size=block_size, kv_cache_bytes=kv_cache_bytes,
                              gpu_memory_utilization=gpu_memory_utilization, num_blocks=num_blocks,
                              enable_prefix_caching=enable_prefix_caching),
            scheduler=SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                      policy=scheduler_policy, enable_chunked_prefill=enable_chunked_prefill,
                                      enable_kv_cache=enable_kv_cache),
            attention_backend=attention_backend, enforce_eager=enforce_eager, async_scheduling=async_scheduling)
        self.engine = LLMEngine(config)
        self._request_counter = itertools.count()

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts: PromptInput | list[PromptInput],
                 sampling_params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Generate for one prompt or many; outputs come back in the prompts' order.

        A prompt is text, a list of token ids, or {"prompt": ...} / {"prompt_token_ids": [...]}.
        Every prompt is validated before any enters the engine, so a bad one fails the call
        without leaving half a batch behind.
        """
        prompt_list = _as_prompt_list(prompts)
        params_list = _broadcast_params(sampling_params, len(prompt_list))
        token_lists = [self._validated_tokens(p) for p in prompt_list]
        request_ids = []
        for prompt, tokens, params in zip(prompt_list, token_lists, params_list):
            # Offline callers only read finished outputs: do not build one per step.
            params = dataclasses.replace(params, output_kind=RequestOutputKind.FINAL_ONLY)
            request_id = str(next(self._request_counter))
            text = prompt if isinstance(prompt, str) else (prompt.get("prompt") if isinstance(prompt, dict) else None)
            self.engine.add_request(request_id, text if text is not None else tokens, params,
                                    prompt_token_ids=tokens)
            request_ids.append(request_id)
        return self._run_until_done(request_ids, use_tqdm)

    def chat(self, messages: list[Message] | list[list[Message]],
             sampling_params: SamplingParams | list[SamplingParams] | None = None,
             use_tqdm: bool = True, add_generation_prompt: bool = True) -> list[RequestOutput]:
        """Apply the model's chat template to one conversation or a list of them, then generate."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        if not conversations:
            raise ValueError("messages must not be empty")
        prompts = [{"prompt_token_ids": self.engine.require_tokenizer().apply_chat_template(c, add_generation_prompt)}
                   for c in conversations]
        return self.generate(prompts, sampling_params, use_tqdm)

    def _validated_tokens(self, prompt: PromptInput) -> list[int]:
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                tokens = list(prompt["prompt_token_ids"])
            elif "prompt" in prompt:
                tokens = self.engine.require_tokenizer().encode(prompt["prompt"])
            else:
                raise ValueError("a prompt dict needs a 'prompt' or a 'prompt_token_ids' key")
        elif isinstance(prompt, str):
            tokens = self.engine.require_tokenizer().encode(prompt)
        else:
            tokens = list(prompt)
        self.engine.validate_prompt(tokens)
        return tokens

    def _run_until_done(self, request_ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        finished: dict[str, RequestOutput] = {}
        with tqdm(total=len(request_ids), desc="Generating", unit="req", disable=not use_tqdm,
                  dynamic_ncols=True) as bar:
            while self.engine.has_unfinished_requests():
                for output in self.engine.step():
                    if output.finished:
                        finished[output.request_id] = output
                        bar.update(1)
        return [finished[r] for r in request_ids]


def _as_prompt_list(prompts: PromptInput | list[PromptInput]) -> list[PromptInput]:
    if isinstance(prompts, (str, dict)):
        return [prompts]
    if isinstance(prompts, SequenceABC) and prompts and all(isinstance(t, int) for t in prompts):
        return [list(prompts)]  # one prompt given as token ids
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts must not be empty")
    return prompts


def _broadcast_params(params: SamplingParams | list[SamplingParams] | None, n: int) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams() for _ in range(n)]
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"got {len(params)} sampling_params for {n} prompts; pass one, or one per prompt")
    return params
