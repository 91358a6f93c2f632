#!/usr/bin/env python3
"""File throughput: VeloStream against DuckDB on the same Nexmark bids, the same machine.

1. Generates N Nexmark events with `velo-sql` and keeps the bids as a JSON-lines file.
2. File source: for q0 (every column), q1 (0.908 * price) and q2 (auction % 123 = 0), times
   `velo-sql execute --source file:bids.jsonl --output-file out.jsonl` and DuckDB's
   `COPY (… read_json(…)) TO 'out.jsonl'` — JSON lines file → SQL → JSON lines file.
3. Parquet: puts the bids on a topic, times `velo-sql export --topic bids --output-file
   bids.parquet` (topic → Parquet, the Kafka consumer included), `velo-sql execute --source
   file:bids.jsonl --output-file bids.parquet`, and DuckDB's `read_json → COPY TO … (FORMAT
   PARQUET)`.

Prints records/s, MB/s of JSON in, and CPU seconds (user + system, all threads) of each side,
and checks both sides wrote the same number of rows.

    scripts/bench_files.py [EVENTS]        (default 1100000: about 1 M bids)

Needs: the release `velo-sql` (VELO_SQL, default $CARGO_TARGET_DIR/release/velo-sql), a broker
for the export (KAFKA_BROKERS, default 127.0.0.1:9092), `pip install duckdb pyarrow`.
"""

import os
import resource
import subprocess
import sys
import tempfile
import time

import duckdb

TARGET = os.environ.get(
    "CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target")
)
BINARY = os.environ.get("VELO_SQL", os.path.join(TARGET, "release", "velo-sql"))
BROKERS = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")

BID_COLUMNS = (
    "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, "
    "date_time TIMESTAMP, extra VARCHAR"
)
DUCK_COLUMNS = (
    "{auction: 'BIGINT', bidder: 'BIGINT', price: 'BIGINT', channel: 'VARCHAR', "
    "url: 'VARCHAR', date_time: 'TIMESTAMP', extra: 'VARCHAR'}"
)
QUERIES = {
    "q0": "SELECT auction, bidder, price, channel, url, date_time, extra FROM {t}",
    "q1": "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM {t}",
    "q2": "SELECT auction, price FROM {t} WHERE auction % 123 = 0",
}


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def velo(args):
    """Runs velo-sql; returns (wall s, cpu s)."""
    cpu, start = children_cpu(), time.perf_counter()
    subprocess.run(
        [BINARY, *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "error", "KAFKA_BROKERS": BROKERS},
    )
    return time.perf_counter() - start, children_cpu() - cpu


def duck(sql):
    """Runs DuckDB in this process (all its threads); returns (wall s, cpu s)."""
    con = duckdb.connect()
    cpu, start = self_cpu(), time.perf_counter()
    con.execute(sql)
    return time.perf_counter() - start, self_cpu() - cpu


def count_lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def row(name, records, megabytes, wall, cpu):
    print(
        f"| {name} | {records / wall / 1e6:.2f} M rec/s | {megabytes / wall:.0f} MB/s "
        f"| {cpu:.2f} s CPU | {records / cpu / 1e6:.2f} M rec/CPU-s |"
    )


def main():
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 1_100_000
    work = tempfile.mkdtemp(prefix="velo-bench-files-")
    bids = os.path.join(work, "bids.jsonl")
    velo(
        [
            "execute",
            "--source",
            f"generator:nexmark?count={events}",
            "--query",
            "SELECT bid.auction AS auction, bid.bidder AS bidder, bid.price AS price, "
            "bid.channel AS channel, bid.url AS url, bid.date_time AS date_time, "
            "bid.extra AS extra FROM nexmark WHERE event_type = 2",
            "--format",
            "json-lines",
            "--output-file",
            bids,
        ]
    )
    from_bids = ["--source", f"file:{bids}", "--schema", BID_COLUMNS]
    records = count_lines(bids)
    megabytes = os.path.getsize(bids) / 1e6
    print(f"{records} bids, {megabytes:.0f} MB of JSON lines ({work})\n")
    print("| run | throughput | JSON in | CPU | per CPU-second |")
    print("|---|---|---|---|---|")
    for name, query in QUERIES.items():
        out = os.path.join(work, f"{name}.velo.jsonl")
        wall, cpu = velo(
            [
                "execute",
                *from_bids,
                "--query",
                query.format(t="bids"),
                "--format",
                "json-lines",
                "--output-file",
                out,
            ]
        )
        row(f"{name} file → file, VeloStream", records, megabytes, wall, cpu)
        duck_out = os.path.join(work, f"{name}.duck.jsonl")
        source = f"read_json('{bids}', format = 'newline_delimited', columns = {DUCK_COLUMNS})"
        wall, cpu = duck(
            f"COPY ({query.format(t=source)}) TO '{duck_out}' (FORMAT JSON)"
        )
        row(f"{name} file → file, DuckDB", records, megabytes, wall, cpu)
        velo_rows, duck_rows = count_lines(out), count_lines(duck_out)
        assert velo_rows == duck_rows, (name, velo_rows, duck_rows)
    # Export: topic → Parquet against DuckDB's JSON lines → Parquet.
    topic = f"bench-bids-{os.getpid()}"
    velo(
        [
            "execute",
            *from_bids,
            "--query",
            "SELECT * FROM bids",
            "--output",
            "kafka",
            "--output-topic",
            topic,
            "--format",
            "json",
            "--brokers",
            BROKERS,
        ]
    )
    parquet = os.path.join(work, "bids.velo.parquet")
    wall, cpu = velo(
        [
            "export",
            "--topic",
            topic,
            "--schema",
            BID_COLUMNS,
            "--output-file",
            parquet,
            "--brokers",
            BROKERS,
            "--quiet",
        ]
    )
    row("export topic → Parquet (zstd), VeloStream", records, megabytes, wall, cpu)
    file_parquet = os.path.join(work, "bids.file.parquet")
    wall, cpu = velo(
        [
            "execute",
            *from_bids,
            "--query",
            "SELECT * FROM bids",
            "--output-file",
            file_parquet,
        ]
    )
    row("JSON lines file → Parquet (zstd), VeloStream", records, megabytes, wall, cpu)
    duck_parquet = os.path.join(work, "bids.duck.parquet")
    source = f"read_json('{bids}', format = 'newline_delimited', columns = {DUCK_COLUMNS})"
    wall, cpu = duck(
        f"COPY (SELECT * FROM {source}) TO '{duck_parquet}' (FORMAT PARQUET, COMPRESSION ZSTD)"
    )
    row("JSON lines file → Parquet (zstd), DuckDB", records, megabytes, wall, cpu)
    got = duckdb.connect().execute(f"SELECT COUNT(*) FROM '{parquet}'").fetchone()[0]
    assert got == records, (got, records)


if __name__ == "__main__":
    main()
