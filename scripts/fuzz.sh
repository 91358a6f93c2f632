#!/usr/bin/env bash
# Fuzzing: runs the property tests of tests/fuzz.rs (random and mutated bytes into every decoder,
# random SQL into the front end and planner, random YAML into the config loader, random
# application files into their parser) again and again, with fresh random inputs, for the given
# time. Any panic or failed property stops it and prints the input proptest shrank it to.
#
#   scripts/fuzz.sh [SECONDS] [CASES_PER_ROUND]     (default 300 s, 2000 cases per property)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
seconds="${1:-300}"
cases="${2:-2000}"
cargo test --test fuzz --no-run --quiet
end=$(( $(date +%s) + seconds ))
rounds=0
while [ "$(date +%s)" -lt "$end" ]; do
  status=0
  out="$(PROPTEST_CASES="$cases" cargo test --quiet --test fuzz 2>&1)" || status=$?
  if [ "$status" != 0 ]; then
    echo "$out" >&2
    echo "fuzzing found a failure after $rounds rounds" >&2
    exit 1
  fi
  rounds=$((rounds + 1))
done
echo "fuzzed for $seconds s: $rounds rounds of $cases cases per property, 7 properties, nothing found"
