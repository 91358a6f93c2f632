"""Writes and reads Protobuf messages with Google's protobuf library, for VeloStream's interop
tests. The message classes come from a serialized FileDescriptorSet (no protoc needed).

    protobuf_tool.py write DESCRIPTORS.pb package.Message < records.jsonl > messages.hex
    protobuf_tool.py read  DESCRIPTORS.pb package.Message < messages.hex > records.jsonl

Records are flat JSON objects; fields holding a `Decimal {units, scale}` message travel as
strings of their exact digits, `google.protobuf.Timestamp` fields as epoch milliseconds, enums
by name.
"""
import decimal
import json
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def load(descriptors, name):
    with open(descriptors, "rb") as f:
        fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def is_decimal(desc):
    return sorted(f.name for f in desc.fields) == ["scale", "units"]


def write(cls, record):
    msg = cls()
    for field in msg.DESCRIPTOR.fields:
        value = record.get(field.name)
        if value is None:
            continue
        if field.message_type is not None and is_decimal(field.message_type):
            d = decimal.Decimal(value)
            scale = -d.as_tuple().exponent
            target = getattr(msg, field.name)
            target.units = int(d.scaleb(scale))
            target.scale = scale
        elif field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp":
            getattr(msg, field.name).FromMilliseconds(int(value))
        elif field.enum_type is not None:
            setattr(msg, field.name, field.enum_type.values_by_name[value].number)
        else:
            setattr(msg, field.name, value)
    return msg.SerializeToString()


def read(cls, data):
    msg = cls.FromString(data)
    out = {}
    for field in msg.DESCRIPTOR.fields:
        if field.has_presence and not msg.HasField(field.name):
            out[field.name] = None
            continue
        value = getattr(msg, field.name)
        if field.message_type is not None and is_decimal(field.message_type):
            out[field.name] = "{:f}".format(decimal.Decimal(value.units).scaleb(-value.scale))
        elif field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp":
            out[field.name] = value.ToMilliseconds()
        elif field.enum_type is not None:
            out[field.name] = field.enum_type.values_by_number[value].name
        else:
            out[field.name] = value
    return out


def main():
    mode, descriptors, name = sys.argv[1:4]
    cls = load(descriptors, name)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if mode == "write":
            print(write(cls, json.loads(line)).hex())
        else:
            print(json.dumps(read(cls, bytes.fromhex(line))))


if __name__ == "__main__":
    main()
