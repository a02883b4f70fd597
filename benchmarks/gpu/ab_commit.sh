#!/usr/bin/env bash
# A/B against an earlier commit in one GPU-machine call: the same command, alternating between
# this checkout and the package as it was at COMMIT, ROUNDS times (alternating spreads drift of
# the card over both). Timings from different calls or machines are not comparable; this is.
#
#   (here)  rm -rf .old && mkdir .old && git archive COMMIT ruvonvllm | tar -x -C .old
#   (there) ROUNDS=2 bash benchmarks/gpu/ab_commit.sh python3 -m ruvonvllm.commands.main bench throughput ...
#
# `.old` must be ignored by git and carried (run's `carry`); paths in the command must be
# absolute. Its --json, if any, is suffixed with -old-N / -new-N. Sourcing setup.sh is left to
# the caller.
set -u
ROUNDS=${ROUNDS:-2}
for round in $(seq 1 "$ROUNDS"); do
  for side in old new; do
    root=$PWD; [ "$side" = old ] && root=$PWD/.old
    args=() after_json=0
    for arg in "$@"; do  # only the value of --json gets the suffix (a config.json must not)
      if [ "$after_json" = 1 ]; then arg=${arg%.json}-$side-$round.json; fi
      [ "$arg" = --json ] && after_json=1 || after_json=0
      args+=("$arg")
    done
    echo "=== $side round $round"
    # From the tree's own directory: `python3 -m` puts the working directory first on sys.path.
    (cd "$root" && PYTHONPATH=/tmp/site:$root "${args[@]}" 2>&1 | grep -v "Generating")
  done
done
