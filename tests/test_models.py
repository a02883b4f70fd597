"""Every architecture against HF transformers on the same tiny random weights.

Our model runs through a real paged KV cache (pure-torch backend, block size 4,
scattered block ids) so that prefill, chunked prefill, decode and mixed batches
all cross block boundaries. HF runs its own forward on the whole sequence; the
logits must agree at every position, and greedy decoding must pick the same
tokens.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from tiny_models import ARCHS, VOCAB_SIZE, tiny_hf_config
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from ruvonvllm.attention.torch_backend import TorchAttentionBackend
from ruvonvllm.config import ModelConfig
from ruvonvllm.engine.model_inputs import SequenceChunk, build_model_inputs
from ruvonvllm.layers.attention import allocate_kv_caches, bind_kv_caches
from ruvonvllm.layers.cpu_gemm import PackedLinear
from ruvonvllm.layers.rotary import RotaryEmbedding, compute_inv_freq
from ruvonvllm.model.hf_loader import hf_weight_files, iter_hf_weights, read_hf_config
from ruvonvllm.model.loader import build_model, load_model
from ruvonvllm.model.registry import get_model_class

BLOCK_SIZE = 4
NUM_BLOCKS = 64
NUM_DECODE_STEPS = 32
PROMPT_LEN = 13
ATOL = 1e-4
CPU = torch.device("cpu")


def load_ours(directory):
    return load_model(ModelConfig(model=str(directory), load_format="hf", dtype="float32", device="cpu")).model


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    """arch -> (our model, HF model), loaded from the same directory once per module."""
    cache = {}

    def get(arch):
        if arch not in cache:
            directory = tiny_model_dir(arch)
            hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
            cache[arch] = (load_ours(directory), hf)
        return cache[arch]

    return get


class PagedRunner:
    """Runs our model over a freshly bound paged KV cache, handing out scattered block ids."""

    def __init__(self, model, seed: int = 0):
        self.model = model
        bind_kv_caches(model, allocate_kv_caches(model, NUM_BLOCKS, BLOCK_SIZE, torch.float32, CPU),
                       TorchAttentionBackend())
        self.free_blocks = list(range(NUM_BLOCKS))
        random.Random(seed).shuffle(self.free_blocks)

    def block_table(self, num_tokens: int) -> list[int]:
        num_blocks = -(-num_tokens // BLOCK_SIZE)
        table, self.free_blocks = self.free_blocks[:num_blocks], self.free_blocks[num_blocks:]
        return table

    @torch.no_grad()
    def run(self, chunks: list[SequenceChunk]) -> torch.Tensor:
        """Logits [num_new_tokens, vocab] for every new token of the batch."""
        inputs = build_model_inputs(chunks, BLOCK_SIZE, CPU)
        hidden = self.model(inputs.input_ids, inputs.positions, inputs.attn_meta)
        return self.model.compute_logits(hidden)


@torch.no_grad()
def hf_logits(hf, token_ids: list[int]) -> torch.Tensor:
    return hf(torch.tensor([token_ids])).logits[0].float()


def random_prompt(length: int, seed: int, vocab_size: int = VOCAB_SIZE) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(vocab_size) for _ in range(length)]


def assert_close(ours: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    diff = (ours - reference).abs().max().item()
    assert diff <= ATOL, f"{what}: max abs logit difference {diff:.2e} > {ATOL}"


@pytest.mark.parametrize("arch", ARCHS)
def test_prefill_and_greedy_decode_match_hf(arch, models):
    ours, hf = models(arch)
    prompt = random_prompt(PROMPT_LEN, seed=1)
    runner = PagedRunner(ours)
    table = runner.block_table(PROMPT_LEN + NUM_DECODE_STEPS)

    prefill_logits = runner.run([SequenceChunk(prompt, 0, table)])
    assert prefill_logits.shape == (PROMPT_LEN, VOCAB_SIZE) and prefill_logits.dtype == torch.float32
    assert_close(prefill_logits, hf_logits(hf, prompt), f"{arch} prefill")

    tokens = prompt + [int(prefill_logits[-1].argmax())]
    decode_logits = []
    for _ in range(NUM_DECODE_STEPS):
        logits = runner.run([SequenceChunk([tokens[-1]], len(tokens) - 1, table)])[0]
        decode_logits.append(logits)
        tokens.append(int(logits.argmax()))

    # HF recomputes the whole sequence; its logits at the positions we decoded
    # must match ours, and its greedy choice at each of them must be our token.
    reference = hf_logits(hf, tokens[:-1])[PROMPT_LEN:]
    assert_close(torch.stack(decode_logits), reference, f"{arch} decode")
    hf_greedy = reference.argmax(-1).tolist()
    assert tokens[PROMPT_LEN + 1:] == hf_greedy


@pytest.mark.parametrize("arch", ARCHS)
def test_chunked_prefill_matches_hf(arch, models):
    ours, hf = models(arch)
    prompt = random_prompt(PROMPT_LEN, seed=2)
    runner = PagedRunner(ours, seed=1)
    table = runner.block_table(PROMPT_LEN)
    pieces, start = [], 0
    for size in (5, 3, 5):  # chunk boundaries fall inside blocks, not on them
        pieces.append(runner.run([SequenceChunk(prompt[start:start + size], start, table)]))
        start += size
    assert_close(torch.cat(pieces), hf_logits(hf, prompt), f"{arch} chunked prefill")


@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_batch_matches_hf(arch, models):
    """One step holding a decode, a whole prompt and a prompt's second chunk."""
    ours, hf = models(arch)
    runner = PagedRunner(ours, seed=2)
    a, b, c = random_prompt(7, seed=3), random_prompt(9, seed=4), random_prompt(11, seed=5)
    table_a, table_b, table_c = runner.block_table(8), runner.block_table(9), runner.block_table(11)
    runner.run([SequenceChunk(a, 0, table_a), SequenceChunk(c[:6], 0, table_c)])

    next_a = 17
    logits = runner.run([SequenceChunk([next_a], 7, table_a), SequenceChunk(b, 0, table_b),
                         SequenceChunk(c[6:], 6, table_c)])
    assert logits.shape[0] == 1 + 9 + 5
    assert_close(logits[0], hf_logits(hf, a + [next_a])[-1], f"{arch} decode in mixed batch")
    assert_close(logits[1:10], hf_logits(hf, b), f"{arch} prefill in mixed batch")
    assert_close(logits[10:], hf_logits(hf, c)[6:], f"{arch} second chunk in mixed batch")


def test_sharded_checkpoint_loads_the_same_weights(tiny_model_dir):
    sharded, single = tiny_model_dir("qwen3", sharded=True), tiny_model_dir("qwen3")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(hf_weight_files(sharded)) > 1
    ours_sharded, ours_single = load_ours(sharded), load_ours(single)
    for (name, p), (_, q) in zip(ours_sharded.named_parameters(), ours_single.named_parameters(), strict=True):
        assert torch.equal(p, q), name


def test_generation_config_eos_ids_are_merged(tiny_model_dir):
    config = read_hf_config(tiny_model_dir("llama"))
    assert config.eos_token_ids == (2, 3)
    assert read_hf_config(tiny_model_dir("llama") / "config.json").eos_token_ids == (2, 3)


def _write_config(directory, arch: str, name: str = "config.json", **overrides):
    d = tiny_hf_config(arch).to_dict()
    d.update(overrides)
    path = directory / name
    path.write_text(json.dumps(d))
    return path


def test_dummy_load_from_a_config_json(tmp_path):
    path = _write_config(tmp_path, "qwen3", name="tiny-qwen3.json")
    _write_config(tmp_path, "qwen3")  # the same, as a directory's config.json
    loaded = load_model(ModelConfig(model=str(path), load_format="dummy", dtype="float32", device="cpu", seed=3))
    again = load_model(ModelConfig(model=str(tmp_path), load_format="dummy", dtype="float32", device="cpu", seed=3))
    other = load_model(ModelConfig(model=str(path), load_format="dummy", dtype="float32", device="cpu", seed=4))
    assert loaded.load_format == "dummy" and loaded.config.model_type == "qwen3"

    params = dict(loaded.model.named_parameters())
    # On the CPU the linear weights live packed for oneDNN (layers/cpu_gemm.py), not as parameters.
    packed = sum(m.weight_bytes() for m in loaded.model.modules() if isinstance(m, PackedLinear))
    assert loaded.weight_bytes == 4 * sum(p.numel() for p in params.values()) + packed
    assert torch.equal(params["model.norm.weight"], torch.ones(64))
    embed = params["model.embed_tokens.weight"]
    assert 0.01 < embed.std().item() < 0.03
    assert torch.equal(embed, dict(again.model.named_parameters())["model.embed_tokens.weight"])
    assert not torch.equal(embed, dict(other.model.named_parameters())["model.embed_tokens.weight"])

    logits = PagedRunner(loaded.model).run([SequenceChunk(list(range(10)), 0, list(range(3)))])
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("config_file", ["qwen3-0.6b.json", "llama-3.1-8b.json"])
def test_benchmark_configs_match_hf_parameter_count(config_file):
    """Shapes only (meta device): our module tree has exactly HF's parameters."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "models" / config_file
    config = read_hf_config(path)
    with torch.device("meta"):
        ours = get_model_class(config)(config)
        hf_config = AutoConfig.for_model(**json.loads(path.read_text()))
        hf = AutoModelForCausalLM.from_config(hf_config)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize("kind", ["default", "linear", "llama3"])
def test_rotary_frequencies_match_hf(kind):
    scaling = {"default": None, "linear": {"rope_type": "linear", "factor": 4.0},
               "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64}}[kind]
    hf_config = LlamaConfig(hidden_size=256, num_attention_heads=4, head_dim=64, rope_theta=10000.0,
                            rope_scaling=scaling)
    if kind == "default":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
        expected, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(hf_config)
    else:
        expected, _ = ROPE_INIT_FUNCTIONS[kind](hf_config, device="cpu")
    torch.testing.assert_close(compute_inv_freq(64, 10000.0, scaling), expected, rtol=1e-6, atol=0)


def test_rotary_table_grows_past_its_precomputed_length():
    small, large = RotaryEmbedding(16, 8, 10000.0), RotaryEmbedding(16, 64, 10000.0)
    positions = torch.arange(20)
    torch.testing.assert_close(small(positions, max_seq_len=20).cos_sin, large(positions, max_seq_len=20).cos_sin)
    assert small.cos_sin_cache.shape[0] >= 20


def test_unsupported_rope_type_is_rejected():
    with pytest.raises(ValueError, match="yarn"):
        compute_inv_freq(16, 10000.0, {"rope_type": "yarn", "factor": 4.0})


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_model(ModelConfig(model=str(tmp_path / "nope"), device="cpu"))
    with pytest.raises(ValueError, match="cannot load"):
        load_model(ModelConfig(model=str(tmp_path), device="cpu"))  # a directory without config.json


def test_unsupported_model_type_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10}))
    with pytest.raises(ValueError, match="'bert' is not supported"):
        load_model(ModelConfig(model=str(tmp_path), device="cpu"))


def test_unknown_and_missing_weights_are_rejected(tiny_model_dir):
    directory = tiny_model_dir("qwen2")
    config = read_hf_config(directory)
    weights = list(iter_hf_weights(directory))

    model = build_model(config, torch.float32, CPU)
    with pytest.raises(ValueError, match="unexpected weight 'model.layers.0.mlp.gate_proj.bias'"):
        model.load_weights(weights + [("model.layers.0.mlp.gate_proj.bias", torch.zeros(128))])
    with pytest.raises(ValueError, match="missing 1 weights.*qkv_proj.bias:k"):
        model.load_weights([(n, t) for n, t in weights if n != "model.layers.1.self_attn.k_proj.bias"])
    with pytest.raises(ValueError, match="has shape"):
        model.load_weights([("model.norm.weight", torch.ones(3))])


def test_gpt2_loads_original_openai_names(tiny_model_dir):
    """openai-community/gpt2 names its weights without the "transformer." prefix."""
    directory = tiny_model_dir("gpt2")
    config = read_hf_config(directory)
    unprefixed = [(n.removeprefix("transformer."), t) for n, t in iter_hf_weights(directory)]
    assert all(not n.startswith("transformer.") for n, _ in unprefixed)
    model = build_model(config, torch.float32, CPU)
    model.load_weights(unprefixed)
    reference = build_model(config, torch.float32, CPU)
    reference.load_weights(iter_hf_weights(directory))
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(p, q), name
