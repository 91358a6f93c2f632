#!/usr/bin/env bash
# Applies k8s/ (namespace, test Kafka, config, server, service, ingress, PDB) and waits until the
# server is ready. Needs kubectl and a cluster that can pull (or has) the velostream:0.1.0 image.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
kubectl apply -k .
kubectl -n velostream rollout status statefulset/kafka --timeout=300s
kubectl -n velostream rollout status statefulset/velostream --timeout=300s
echo "ready: kubectl -n velostream port-forward svc/velostream 8080:8080, then curl localhost:8080/jobs"
