#!/usr/bin/env python3
"""Recovery time after kill -9 with a large window state, through the binary and a broker.

Fills one tumbling window with N distinct keys (N window groups of state), lets
`velo-sql stream` read them and checkpoint, kills it with -9, sends the record that closes
the window, starts it again and prints how long until the first and the last result row
arrive (restore + read the closer + emit N rows), and the checkpoint's size.

    scripts/bench_recovery.py [N]          (default 1000000)

Needs: a broker (KAFKA_BROKERS, default 127.0.0.1:9092; scripts/kafka-broker.sh start), the
`velo-sql` binary (VELO_SQL, default the release build), and `pip install confluent-kafka`.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

BROKERS = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target"))
BINARY = os.environ.get("VELO_SQL", os.path.join(TARGET, "release", "velo-sql"))


def produce(topic, values, partitions=2):
    producer = Producer({"bootstrap.servers": BROKERS, "linger.ms": 20, "batch.num.messages": 10000})
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush()


def newest_manifest(state):
    best = None
    for root, _, files in os.walk(state):
        if "manifest.json" in files and "/chk-" in root:
            path = os.path.join(root, "manifest.json")
            if best is None or path > best:
                best = path
    return best


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    stamp = int(time.time())
    topic = f"recovery-bench-{stamp}"
    admin = AdminClient({"bootstrap.servers": BROKERS})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result()
    time.sleep(1)
    print(f"producing {n} records with distinct keys into one window of {topic} ...", flush=True)
    produce(topic, (json.dumps({"k": i, "ts": "2024-01-01T00:00:00Z"}) for i in range(n)))
    state = tempfile.mkdtemp(prefix="velo-recovery-")
    group = f"recovery-{stamp}"
    args = [
        BINARY, "stream", "--topic", topic, "--schema", "k BIGINT, ts TIMESTAMP",
        "--query", "SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(ts, 1h)",
        "--group-id", group, "--group-instance-id", group, "--checkpoint-interval", "2s",
        "--state-dir", state, "--format", "json-lines", "--brokers", BROKERS,
    ]
    job = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    # Wait for a checkpoint holding every record.
    deadline = time.time() + 600
    while time.time() < deadline:
        manifest = newest_manifest(state)
        if manifest:
            try:
                with open(manifest) as f:
                    m = json.load(f)
                read = sum(sum(i["positions"].values()) for i in m["inputs"])
                if read >= n:
                    break
            except (OSError, ValueError):
                pass
        time.sleep(0.5)
    else:
        sys.exit("no checkpoint covered every record within 10 minutes")
    folder = os.path.dirname(manifest)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    job.send_signal(signal.SIGKILL)
    job.wait()
    produce(topic, [json.dumps({"k": -1, "ts": "2024-01-01T05:00:00Z"})] * 2)
    start = time.time()
    job = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    job.stdout.readline()
    first = time.time() - start
    rows = 1
    while rows < n:
        if not job.stdout.readline():
            break
        rows += 1
    last = time.time() - start
    job.send_signal(signal.SIGTERM)
    job.wait()
    shutil.rmtree(state, ignore_errors=True)
    print(f"state: {n} window groups, checkpoint {size / 1e6:.1f} MB")
    print(f"after kill -9: first result row {first:.2f} s after the restart, all {rows} rows after {last:.2f} s")


if __name__ == "__main__":
    main()
