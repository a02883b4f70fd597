"""Real `ruvon serve` processes on loopback for the server tests, with a tiny random model.

The model is a 2-layer Llama (hidden 64) with the tiny byte-level tokenizer, so
a server starts in seconds and a token costs about a millisecond. One shared
server (`shared_server`) is started once per test process and reused by every
module that asks; tests that need their own settings or kill the process
start a private one with `ServerProcess`.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from tiny_tokenizer import save_tiny_tokenizer
from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig

VOCAB_SIZE = 320  # the byte-level tokenizer needs at least 259 ids
MAX_MODEL_LEN = 512
KV_CACHE_BYTES = 4 << 20  # 8192 token slots for this model: room for 64 concurrent requests
SERVED_MODEL_NAME = "tiny-llama"
STARTUP_TIMEOUT_S = 180.0


def make_server_model(directory: Path) -> Path:
    """A tiny random Llama with the test tokenizer; EOS is <|im_end|> (id 2), as the tokenizer says."""
    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    config = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=MAX_MODEL_LEN, tie_word_embeddings=True, eos_token_id=2)
    generator = torch.Generator().manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:  # wider than HF's init, so outputs depend visibly on the prompt
                param.copy_(0.15 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(directory)
    GenerationConfig(eos_token_id=2).save_pretrained(directory)
    save_tiny_tokenizer(str(directory), vocab_size=VOCAB_SIZE)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`ruvon serve` in a subprocess; `url` once /health answers."""

    def __init__(self, model_dir: Path | None, *extra_args: str, env: dict[str, str] | None = None) -> None:
        """model_dir None serves the embedded default model (SmolLM2-135M-Instruct) under its own name."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="ruvon-serve-", suffix=".log")[1])
        model_args = ["--model", str(model_dir), "--served-model-name", SERVED_MODEL_NAME] if model_dir else []
        args = [sys.executable, "-c", "from ruvonvllm.commands.main import main; main()", "serve", *model_args,
                "--port", str(self.port), "--kv-cache-bytes", str(KV_CACHE_BYTES), *extra_args]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start within {STARTUP_TIMEOUT_S} s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@functools.cache
def shared_server() -> ServerProcess:
    """The server most tests share: continuous batching, 64 sequences, an unbounded-enough queue."""
    model_dir = make_server_model(Path(tempfile.mkdtemp(prefix="ruvon-server-model-")))
    server = ServerProcess(model_dir, "--max-num-seqs", "64", "--max-waiting", "256")
    atexit.register(server.stop)
    return server


def metrics(url: str) -> dict[str, float]:
    """The /metrics samples as {'name{labels}': value}."""
    samples = {}
    for line in httpx.get(url + "/metrics", timeout=10.0).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for key, value in samples.items():
        metric, _, rest = key.partition("{")
        if metric == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def wait_until_idle(url: str, timeout: float = 30.0) -> dict[str, float]:
    """Poll /metrics until nothing runs or waits and every KV block is free; return the last samples."""
    deadline = time.monotonic() + timeout
    while True:
        samples = metrics(url)
        idle = (sample(samples, "ruvon:num_requests_running") == 0
                and sample(samples, "ruvon:num_requests_waiting") == 0
                and sample(samples, "ruvon:num_kv_blocks_free") == sample(samples, "ruvon:num_kv_blocks_total"))
        if idle or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)
