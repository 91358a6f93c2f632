"""Reads Parquet files VeloStream wrote, with pyarrow and with DuckDB, for its interop tests.

    parquet_tool.py pyarrow PATH        one JSON object per row, in file order
    parquet_tool.py duckdb PATH         the same, read by DuckDB (ORDER BY nothing: file order)
    parquet_tool.py schema PATH         the Arrow schema pyarrow reads, one field per line
    parquet_tool.py meta PATH           row groups, rows and page compression
    parquet_tool.py hive DIR SQL        DuckDB over DIR/**/*.parquet with hive_partitioning,
                                        the SQL's FROM being the table `t`; rows as JSON

Values are printed exactly: decimals as strings of their digits, timestamps as ISO text
(with the offset when the column has a time zone), bytes as hex.
"""
import datetime
import decimal
import json
import sys


def plain(value):
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def print_rows(rows):
    for row in rows:
        print(json.dumps(plain(row), separators=(",", ":")))


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "pyarrow":
        import pyarrow.parquet as pq

        print_rows(pq.read_table(path).to_pylist())
    elif mode == "schema":
        import pyarrow.parquet as pq

        for field in pq.read_schema(path):
            print(f"{field.name}: {field.type}{'' if field.nullable else ' not null'}")
    elif mode == "meta":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        codecs = {meta.row_group(i).column(j).compression
                  for i in range(meta.num_row_groups) for j in range(meta.num_columns)}
        print(f"row_groups={meta.num_row_groups} rows={meta.num_rows} compression={','.join(sorted(codecs))}")
    elif mode == "duckdb":
        import duckdb

        con = duckdb.connect()
        cursor = con.execute("SELECT * FROM read_parquet(?)", [path])
        names = [d[0] for d in cursor.description]
        print_rows(dict(zip(names, row)) for row in cursor.fetchall())
    elif mode == "hive":
        import duckdb

        con = duckdb.connect()
        glob = f"{path}/**/*.parquet".replace("'", "''")
        con.execute(
            f"CREATE VIEW t AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true)"
        )
        cursor = con.execute(sys.argv[3])
        names = [d[0] for d in cursor.description]
        print_rows(dict(zip(names, row)) for row in cursor.fetchall())
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
