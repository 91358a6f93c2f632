"""A small in-memory Confluent Schema Registry for tests: the REST calls VeloStream uses.

    registry.py [--cert PEM --key PEM] [--user NAME:PASSWORD]
                       prints the port it listens on (127.0.0.1, chosen by the OS), then serves:
                       over TLS with --cert/--key; with --user, only requests carrying those
                       HTTP basic credentials (others get 401)

POST /subjects/{subject}/versions   {"schema": "...", "schemaType"?: "..."} -> {"id": N}
GET  /schemas/ids/{id}              -> {"schema": "...", "schemaType": "..."} or 404
GET  /subjects/{subject}/versions/latest -> {"subject", "version", "id", "schema"} or 404
"""
import argparse
import base64
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REQUIRED_AUTH = None  # "Basic …" when --user is given

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

    def authorized(self):
        if REQUIRED_AUTH is None or self.headers.get("Authorization") == REQUIRED_AUTH:
            return True
        self.reply(401, {"error_code": 401, "message": "Unauthorized"})
        return False

    def do_POST(self):
        if not self.authorized():
            return
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
        if not self.authorized():
            return
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
    global REQUIRED_AUTH
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    args = parser.parse_args()
    if args.user:
        REQUIRED_AUTH = "Basic " + base64.b64encode(args.user.encode()).decode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
