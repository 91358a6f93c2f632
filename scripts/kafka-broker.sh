#!/usr/bin/env bash
# Installs (if needed), starts, checks and stops a local Kafka-protocol broker for tests:
# nisshi 0.8.1 (crates.io; formerly tansu), in memory, on 127.0.0.1 only.
#
#   scripts/kafka-broker.sh start    install if missing, start, wait until it answers
#   scripts/kafka-broker.sh stop     stop the broker started by this script
#   scripts/kafka-broker.sh status   exit 0 when the broker answers
#   scripts/kafka-broker.sh install  only install
#
# When KAFKA_BROKERS is set, the tests use that broker and this script does nothing.
# Environment: KAFKA_PORT (default 9092), VELO_BROKER_DIR (pid and log; default ~/.cache/velostream-broker).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${KAFKA_PORT:-9092}"
state="${VELO_BROKER_DIR:-$HOME/.cache/velostream-broker}"
version="0.8.1"
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$state"

installed() {
  command -v nisshi >/dev/null 2>&1 && nisshi --version 2>/dev/null | grep -q "$version"
}

install() {
  if installed; then return 0; fi
  mkdir -p "$HOME/.cargo/bin"
  # Fast path: the prebuilt copy shipped beside the project, when there is one.
  local prebuilt
  prebuilt="$(ls "$root"/../shared/bin/nisshi-"$version"-*.xz 2>/dev/null | head -n 1 || true)"
  if [ -n "$prebuilt" ] && command -v xz >/dev/null 2>&1; then
    echo "installing nisshi $version from $prebuilt" >&2
    xz -dc "$prebuilt" > "$HOME/.cargo/bin/nisshi.tmp"
    chmod +x "$HOME/.cargo/bin/nisshi.tmp"
    mv "$HOME/.cargo/bin/nisshi.tmp" "$HOME/.cargo/bin/nisshi"
    if installed; then return 0; fi
  fi
  echo "building nisshi $version from crates.io (about 30 minutes on 2 cores)" >&2
  cargo install nisshi --version "=$version" --locked --ignore-rust-version \
    --no-default-features --features dynostore
}

answers() {
  timeout 2 nisshi topic list --broker "tcp://127.0.0.1:$port" >/dev/null 2>&1
}

start() {
  if [ -n "${KAFKA_BROKERS:-}" ]; then
    echo "KAFKA_BROKERS=$KAFKA_BROKERS is set: using that broker" >&2
    return 0
  fi
  install
  if answers; then
    echo "a broker already answers on 127.0.0.1:$port" >&2
    return 0
  fi
  nohup nisshi broker \
    --storage-engine memory://nisshi/ \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --group-initial-rebalance-delay 0s \
    >"$state/broker.log" 2>&1 &
  echo $! >"$state/broker.pid"
  for _ in $(seq 1 60); do
    if answers; then
      echo "broker ready on 127.0.0.1:$port (pid $(cat "$state/broker.pid"), log $state/broker.log)" >&2
      return 0
    fi
    if ! kill -0 "$(cat "$state/broker.pid")" 2>/dev/null; then
      echo "the broker exited; its log:" >&2
      cat "$state/broker.log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "the broker did not answer within 30 s; its log:" >&2
  cat "$state/broker.log" >&2
  return 1
}

stop() {
  if [ -f "$state/broker.pid" ]; then
    kill "$(cat "$state/broker.pid")" 2>/dev/null || true
    rm -f "$state/broker.pid"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  install) install ;;
  *) echo "usage: $0 start|stop|status|install" >&2; exit 2 ;;
esac
