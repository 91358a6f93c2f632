#!/usr/bin/env python3
"""A continuous job over a backlog: `velo-sql stream` reading a topic of Nexmark bids.

1. Loads the bids among N generated Nexmark events onto a new topic of two partitions
   (`velo-sql execute --source generator:nexmark … --output-topic`, untimed).
2. Times `velo-sql stream --group-id <fresh> --limit <bids>` of q1 (`0.908 * price`, every
   bid out as a JSON line to a file under /dev/shm) for each binary given, the binaries
   taking turns, RUNS times each: from the process start (joining the group included) to its
   exit at the limit (its final checkpoint and leaving the group included).
3. Prints per binary the median, least and most wall time and the median CPU time (user +
   system of the process, librdkafka's threads included), and checks every run wrote one row
   per bid.

    scripts/bench_stream.py [--runs 10] [--events 1000000] [--parallelism 1] [BINARY ...]

BINARY defaults to VELO_SQL or $CARGO_TARGET_DIR/release/velo-sql: give two binaries to compare
builds. Needs a broker (KAFKA_BROKERS, default 127.0.0.1:9092), `pip install confluent-kafka`.
The topic is deleted at the end.
"""

import argparse
import os
import random
import statistics
import subprocess
import time

from confluent_kafka.admin import AdminClient, NewTopic

SCHEMA = (
    "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, "
    "date_time TIMESTAMP, extra VARCHAR"
)
FLAT_BIDS = (
    "SELECT bid['auction'] AS auction, bid['bidder'] AS bidder, bid['price'] AS price, "
    "bid['channel'] AS channel, bid['url'] AS url, bid['date_time'] AS date_time, "
    "bid['extra'] AS extra FROM nexmark WHERE event_type = 2"
)


def default_binary():
    if "VELO_SQL" in os.environ:
        return os.environ["VELO_SQL"]
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    return os.path.join(target, "release", "velo-sql")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--parallelism", default="1")
    parser.add_argument("binaries", nargs="*")
    args = parser.parse_args()
    binaries = args.binaries or [default_binary()]
    brokers = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")
    admin = AdminClient({"bootstrap.servers": brokers})
    topic = f"bench-stream-bids-{os.getpid()}"
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result()
    try:
        load = subprocess.run(
            [binaries[0], "execute", "--brokers", brokers, "--source",
             f"generator:nexmark?count={args.events}", "--query", FLAT_BIDS,
             "--output-topic", topic, "--format", "json"],
            check=True, capture_output=True, text=True,
        )
        bids = int(load.stderr.split("rows_out=")[1].split()[0])
        print(f"{bids} bids on {topic}; {args.runs} runs per binary, "
              f"--parallelism {args.parallelism}", flush=True)
        query = "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bids"
        out = "/dev/shm/velo-bench-stream.jsonl"
        results = {b: [] for b in binaries}
        for _ in range(args.runs):
            for binary in binaries:
                before = os.times()
                started = time.monotonic()
                subprocess.run(
                    [binary, "stream", "--brokers", brokers, "--topic", topic, "--group-id",
                     f"bench-stream-{random.randrange(1 << 40)}", "--schema", SCHEMA,
                     "--query", query, "--limit", str(bids), "--format", "json-lines",
                     "--output-file", out, "--parallelism", args.parallelism],
                    check=True, stderr=subprocess.DEVNULL,
                )
                wall = time.monotonic() - started
                after = os.times()
                cpu = (after.children_user - before.children_user) + (
                    after.children_system - before.children_system)
                with open(out, "rb") as f:
                    rows = sum(1 for _ in f)
                if rows != bids:
                    raise SystemExit(f"{binary} wrote {rows} rows for {bids} bids")
                results[binary].append((wall, cpu))
        os.remove(out)
        for binary, runs in results.items():
            walls = [w for w, _ in runs]
            cpu = statistics.median(c for _, c in runs)
            print(f"{binary}: wall median {statistics.median(walls):.2f} s (least "
                  f"{min(walls):.2f}, most {max(walls):.2f}), CPU median {cpu:.2f} s, "
                  f"{bids / statistics.median(walls) / 1e6:.2f} M bids/s")
    finally:
        for future in admin.delete_topics([topic]).values():
            try:
                future.result()
            except Exception:  # noqa: BLE001 - a topic left behind is harmless
                pass


if __name__ == "__main__":
    main()
