"""Reads and writes schemaless Avro datums with fastavro, for VeloStream's interop tests.

    avro_tool.py write SCHEMA.avsc < records.jsonl > datums.hex   (one hex datum per line)
    avro_tool.py read SCHEMA.avsc < datums.hex > records.jsonl
    avro_tool.py write-container SCHEMA.avsc FILE.avro < records.jsonl   (an object container file)
    avro_tool.py read-container FILE.avro > records.jsonl

Decimals travel as strings of their exact digits, timestamps as epoch milliseconds.
"""
import datetime
import decimal
import io
import json
import sys

import fastavro


def to_avro(value, schema):
    if isinstance(schema, list):
        if value is None:
            return None
        schema = next(s for s in schema if s != "null")
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        if logical == "decimal":
            return decimal.Decimal(value)
        if logical == "timestamp-millis":
            return datetime.datetime.fromtimestamp(value / 1000, tz=datetime.timezone.utc)
    return value


def from_avro(value):
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    return value


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "read-container":
        with open(path, "rb") as f:
            for record in fastavro.reader(f):
                print(json.dumps({k: from_avro(v) for k, v in record.items()}))
        return
    with open(path) as f:
        raw = json.load(f)
    schema = fastavro.parse_schema(raw)
    fields = {f["name"]: f["type"] for f in raw["fields"]}
    if mode == "write-container":
        records = [
            {k: to_avro(v, fields[k]) for k, v in json.loads(line).items()}
            for line in sys.stdin
            if line.strip()
        ]
        with open(sys.argv[3], "wb") as f:
            fastavro.writer(f, schema, records)
        return
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if mode == "write":
            record = {k: to_avro(v, fields[k]) for k, v in json.loads(line).items()}
            out = io.BytesIO()
            fastavro.schemaless_writer(out, schema, record)
            print(out.getvalue().hex())
        else:
            record = fastavro.schemaless_reader(io.BytesIO(bytes.fromhex(line)), schema)
            print(json.dumps({k: from_avro(v) for k, v in record.items()}))


if __name__ == "__main__":
    main()
