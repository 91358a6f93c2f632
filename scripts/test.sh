#!/usr/bin/env bash
# Sets up and runs every test: installs and starts the local Kafka-protocol broker (unless
# KAFKA_BROKERS names one), then runs the workspace's tests. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# System packages: OpenSSL's headers and pkg-config (librdkafka's TLS), the openssl tool (the TLS
# tests make a throwaway CA), promtool (monitoring checks). Installed with apt when missing.
need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; }; then need+=(libssl-dev); fi
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# promtool (Debian's prometheus package) checks the monitoring files.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  sudo=""; if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

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
