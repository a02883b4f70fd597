"""A tiny byte-level BPE tokenizer for tests whose random HF models ship without one.

Byte-level BPE encodes any text (every byte is a token), and characters outside
ASCII span several tokens, so incremental detokenization is exercised for real.
Ids 0-2 are <|endoftext|>, <|im_start|>, <|im_end|> (as in SmolLM2); the chat
template is ChatML.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256  # specials plus one token per byte

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you today? I am fine, thank you.",
    "Paged attention stores the key and value cache in fixed-size blocks.",
    "What is the capital of France? The capital of France is Paris.",
    "Ünïcödé tëxt: café, naïve, façade, jalapeño, Straße.",
    "日本語のテキストと中文文本，还有한국어 텍스트.",
    "Emoji: 🙂 🚀 👍🏽 ❤️ and symbols ∑ ∞ → ≠ €.",
    "def f(x):\n    return x * 2  # code with    spaces\n",
    "0123456789 3.14159 2.71828 1,000,000",
] * 20


def build_tiny_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"a byte-level tokenizer needs vocab_size >= {MIN_VOCAB_SIZE}, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, chat_template=CHATML_TEMPLATE)


def save_tiny_tokenizer(directory: str, vocab_size: int = 320) -> int:
    """Write tokenizer files into `directory`; returns the tokenizer's size (<= vocab_size)."""
    tok = build_tiny_tokenizer(vocab_size)
    tok.save_pretrained(directory)
    return len(tok)
