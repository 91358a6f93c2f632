#!/usr/bin/env bash
# Builds and starts docker-compose.yml, then waits until every service reports healthy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
docker compose -p velostream up -d --build
for _ in $(seq 1 60); do
  unhealthy="$(docker compose -p velostream ps --format '{{.Service}} {{.Health}}' | awk '$2 != "healthy" {print $1}')"
  if [ -z "$unhealthy" ]; then
    echo "all services healthy: Grafana http://localhost:3000, VeloStream http://localhost:8080"
    exit 0
  fi
  sleep 5
done
echo "not healthy after 5 minutes: $unhealthy" >&2
docker compose -p velostream ps >&2
exit 1
