"""A small in-memory Confluent Schema Registry for tests: the REST calls VeloStream uses.

    registry.py        prints the port it listens on (127.0.0.1, chosen by the OS), then serves

POST /subjects/{subject}/versions   {"schema": "...", "schemaType"?: "..."} -> {"id": N}
GET  /schemas/ids/{id}              -> {"schema": "...", "schemaType": "..."} or 404
GET  /subjects/{subject}/versions/latest -> {"subject", "version", "id", "schema"} or 404
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCHEMAS = {}   # id -> (schema, type)
SUBJECTS = {}  # subject -> [id, ...]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "subjects" or parts[2] != "versions":
            return self.reply(404, {"error_code": 404, "message": "not found"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        entry = (body["schema"], body.get("schemaType", "AVRO"))
        ids = [i for i, s in SCHEMAS.items() if s == entry]
        schema_id = ids[0] if ids else len(SCHEMAS) + 1
        SCHEMAS[schema_id] = entry
        versions = SUBJECTS.setdefault(parts[1], [])
        if schema_id not in versions:
            versions.append(schema_id)
        self.reply(200, {"id": schema_id})

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and int(parts[2]) in SCHEMAS:
            schema, kind = SCHEMAS[int(parts[2])]
            return self.reply(200, {"schema": schema, "schemaType": kind})
        if len(parts) == 4 and parts[0] == "subjects" and parts[3] == "latest" and parts[1] in SUBJECTS:
            versions = SUBJECTS[parts[1]]
            schema_id = versions[-1]
            return self.reply(200, {"subject": parts[1], "version": len(versions), "id": schema_id,
                                    "schema": SCHEMAS[schema_id][0]})
        self.reply(404, {"error_code": 40403, "message": "Schema not found"})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
