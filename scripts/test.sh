#!/usr/bin/env bash
# Sets up and runs every test: installs and starts the local Kafka-protocol broker (unless
# KAFKA_BROKERS names one), then runs the workspace's tests. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# The broker binary is needed even with KAFKA_BROKERS set: the broker-restart test runs its own.
scripts/kafka-broker.sh install

started=""
if [ -z "${KAFKA_BROKERS:-}" ]; then
  scripts/kafka-broker.sh start
  started=1
  export KAFKA_BROKERS="127.0.0.1:${KAFKA_PORT:-9092}"
fi
cleanup() { if [ -n "$started" ]; then scripts/kafka-broker.sh stop; fi; }
trap cleanup EXIT

# Interop tests read and write Avro and Protobuf with Python's libraries; the broker-restart
# test keeps its broker's data in a local S3 (moto).
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/interop/requirements.txt

cargo test --workspace --all-targets "$@"
