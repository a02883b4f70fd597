"""The OpenAI API's request and response shapes, as pydantic models.

Requests carry the bounds OpenAI documents (so the OpenAPI schema at
/openapi.json states them and a bad value fails validation naming its field),
plus the extensions vLLM users know: top_k, min_p, repetition_penalty,
ignore_eos, min_tokens, stop_token_ids. Fields a client may send that this
server has no use for (user, metadata, ...) are ignored, as OpenAI does;
features it does not implement (logit_bias, suffix, tools, functions, the guided_*
fields) are declared here only so that they are rejected with a 400 naming them,
rather than silently dropped.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from ruvonvllm.sampling.params import MAX_LOGPROBS

# Bounds that keep one request from asking for unbounded work.
MAX_N = 128
MAX_STOP_SEQUENCES = 16
MAX_PROMPTS = 64
# More turns than any context holds (each costs a few template tokens). Validating 150,000
# messages holds Python's lock for 0.5 to 0.6 s; with this bound they are refused in 5 to 8 ms
# (benchmarks/cpu_request_parsing_microbench.py).
MAX_MESSAGES = 8192
# torch.Generator seeds are 64-bit; the sampler hashes the seed, so any value in range works.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
# top_k past the vocabulary means the whole vocabulary; the bound only refuses absurd numbers.
MAX_TOP_K = 2**31 - 1

NonNegativeInt = Annotated[int, Field(ge=0)]
TokenIds = Annotated[list[NonNegativeInt], Field(min_length=1)]
StopList = Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP_SEQUENCES)]


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class SamplingFields(OpenAIModel):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model: str | None = Field(default=None, description="Must be the served model's name; None means it.")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: Annotated[str, Field(min_length=1)] | StopList | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Extensions, as in vLLM.
    top_k: int | None = Field(default=None, ge=-1, le=MAX_TOP_K)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)
    stop_token_ids: list[NonNegativeInt] | None = Field(default=None, max_length=MAX_STOP_SEQUENCES)
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    # vLLM's structured-output fields, not implemented here: declared to be refused by name.
    guided_json: Any = None
    guided_regex: Any = None
    guided_choice: Any = None
    guided_grammar: Any = None

    def unsupported_fields(self) -> list[str]:
        """Fields the client set that this server does not implement (each a 400)."""
        return [name for name in UNSUPPORTED_FIELDS if getattr(self, name, None) is not None]


UNSUPPORTED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar",
                      "functions", "function_call", "parallel_tool_calls")


# ---- /v1/completions --------------------------------------------------------------

class CompletionRequest(SamplingFields):
    prompt: (str | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]
             | TokenIds | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)])
    max_tokens: int | None = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    best_of: int | None = Field(default=None, ge=1, le=MAX_N)
    suffix: str | None = None


class CompletionLogprobs(OpenAIModel):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionChoice(OpenAIModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class Usage(OpenAIModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionResponse(OpenAIModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


# A stream chunk of /v1/completions has the same shape as the full response.
CompletionStreamResponse = CompletionResponse


# ---- /v1/chat/completions ---------------------------------------------------------

class TextContentPart(OpenAIModel):
    type: Literal["text"]
    text: str


class ChatMessage(OpenAIModel):
    # "developer" is OpenAI's newer name for "system"; it is rendered as one.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextContentPart] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None  # declared to be refused: tool calling is not implemented

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ResponseFormat(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"]


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(default=None, ge=1, description="Deprecated by OpenAI for max_completion_tokens.")
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    # OpenAI's deprecated forms of tools, and its switch for them: refused by name.
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None
    # Extensions, as in vLLM.
    add_generation_prompt: bool = True


class TopLogprob(OpenAIModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatChoiceLogprobs(OpenAIModel):
    content: list[ChatTokenLogprob] | None = None


class ChatResponseMessage(OpenAIModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatCompletionChoice(OpenAIModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionResponse(OpenAIModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage


class DeltaMessage(OpenAIModel):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _omit_empty_fields(self, handler):
        # OpenAI sends the role only in a choice's first delta, and no content key in its last.
        return {key: value for key, value in handler(self).items() if value is not None}


class ChatCompletionStreamChoice(OpenAIModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionStreamResponse(OpenAIModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: Usage | None = None


# ---- /v1/models, /tokenize, /detokenize ---------------------------------------------

class ModelCard(OpenAIModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "ruvonvllm"
    root: str | None = None
    max_model_len: int | None = None


class ModelList(OpenAIModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeCompletionRequest(OpenAIModel):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True


class TokenizeChatRequest(OpenAIModel):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    add_generation_prompt: bool = True


TokenizeRequest = TokenizeCompletionRequest | TokenizeChatRequest


class TokenizeResponse(OpenAIModel):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeRequest(OpenAIModel):
    model: str | None = None
    tokens: list[NonNegativeInt]


class DetokenizeResponse(OpenAIModel):
    prompt: str


# ---- errors and health ----------------------------------------------------------------

class ErrorInfo(OpenAIModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(OpenAIModel):
    error: ErrorInfo


class HealthResponse(OpenAIModel):
    status: Literal["ok", "draining", "dead"]
