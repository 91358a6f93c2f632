#!/usr/bin/env bash
# Kill -9 soak: runs the recovery tests (tests/recovery.rs) with many kills per scenario and
# prints, per scenario, the kills, the results expected, the messages written, and how many
# were lost, wrong or repeated. Needs the broker of scripts/kafka-broker.sh (or KAFKA_BROKERS).
#
#   scripts/kill-soak.sh [KILLS_PER_SCENARIO]     (default 30: 22 scenarios, 660 kills)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
kills="${1:-30}"
if [ -z "${KAFKA_BROKERS:-}" ]; then
  scripts/kafka-broker.sh start
  export KAFKA_BROKERS="127.0.0.1:${KAFKA_PORT:-9092}"
fi
VELO_KILLS="$kills" cargo test --test recovery -- --nocapture --test-threads 2 2>&1 \
  | grep -E "kills,|^test |test result|panicked|seed"
