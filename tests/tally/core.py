"""tally's core: a small service written without Greenlight in mind.

An HTTP API (stdlib http.server) and a DNS responder for tally.test. It installs no signal
handler, so SIGTERM kills it, as it does most services. Its answers are plain text except the
API's JSON. Faults for tests come from faults.json beside this file:

- "refuse-key": the API refuses every key with 401 (the health endpoint still answers);
- "no-a-record": the DNS responder answers NOERROR with no A record;
- {"die-after": N}: the process exits with status 3, N seconds after it starts serving.

And one fault of the machine, not of a release: while `crash-on-start` exists beside the key
file, the core exits with status 3 as it starts (a broken local store, say).
"""

import argparse
import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset

HERE = Path(__file__).resolve().parent
VERSION = (HERE / "VERSION").read_text().strip()
FAULTS = json.loads((HERE / "faults.json").read_text())


def serve_dns(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            query = dns.message.from_wire(data)
        except Exception:
            continue
        reply = dns.message.make_response(query)
        for question in query.question:
            if (question.rdtype == dns.rdatatype.A and "no-a-record" not in FAULTS
                    and question.name.to_text().rstrip(".") == "tally.test"):
                reply.answer.append(dns.rrset.from_text(question.name, 30, "IN", "A",
                                                        "127.0.0.1"))
        sock.sendto(reply.to_wire(), peer)


def handler(key: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def send(self, status: int, body: str, kind: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self.send(200, "ok\n")
            elif self.path == "/version":
                self.send(200, f"tally {VERSION}\n")
            elif self.path == "/api/items":
                given = self.headers.get("Authorization", "")
                if "refuse-key" in FAULTS or given != f"Bearer {key}":
                    self.send(401, "unknown key\n")
                else:
                    self.send(200, json.dumps({"items": [1, 2, 3], "version": VERSION}),
                              "application/json")
            else:
                self.send(404, "no such page\n")

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dns-port", type=int, required=True)
    parser.add_argument("--key-file", type=Path, required=True)
    args = parser.parse_args()
    if (args.key_file.parent / "crash-on-start").exists():
        print("tally: cannot open the local store", file=sys.stderr, flush=True)
        return 3
    key = args.key_file.read_text().strip()
    dns_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    dns_sock.bind(("127.0.0.1", args.dns_port))
    threading.Thread(target=serve_dns, args=(dns_sock,), daemon=True).start()
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(key))
    if "die-after" in FAULTS:
        threading.Timer(float(FAULTS["die-after"]), os._exit, (3,)).start()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
