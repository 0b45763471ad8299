#!/usr/bin/python3
"""autosandbox fleet example: one app whose endpoints need different sandboxes.

GET /health -> ok (needs nothing beyond serving)
GET /       -> bumps a counter in <state-dir> (StateDirectory=)
GET /export -> writes a report into <export-dir> (a ReadWritePaths= place)
GET /ipv6   -> opens an AF_INET6 socket (RestrictAddressFamilies= must allow it)
Each host of the fleet test calls one of them, so only a merged profile covers all.
"""

import argparse
import http.server
import json
import os
import socket


class Handler(http.server.BaseHTTPRequestHandler):
    def _send(self, code, payload):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        app = self.server
        try:
            if self.path == "/health":
                self._send(200, {"status": "ok"})
            elif self.path == "/":
                self._send(200, {"hits": app.bump()})
            elif self.path == "/export":
                with open(os.path.join(app.export_dir, "report.txt"), "w") as f:
                    f.write(f"hits {app.hits}\n")
                self._send(200, {"exported": app.hits})
            elif self.path == "/ipv6":
                with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                    self._send(200, {"ipv6_socket": s.fileno() >= 0})
            else:
                self._send(404, {"error": "not found"})
        except OSError as exc:  # what a too-tight sandbox refuses
            self._send(500, {"error": str(exc)})

    def log_message(self, fmt, *args):
        pass


class App(http.server.ThreadingHTTPServer):
    allow_reuse_address = True

    def __init__(self, addr, state_dir, export_dir):
        super().__init__(addr, Handler)
        self.state_file = os.path.join(state_dir, "hits")
        self.export_dir = export_dir
        try:
            with open(self.state_file) as f:
                self.hits = int(f.read())
        except (OSError, ValueError):
            self.hits = 0

    def bump(self):
        self.hits += 1
        with open(self.state_file, "w") as f:
            f.write(str(self.hits))
        return self.hits


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8085)
    p.add_argument("--state-dir", default="/var/lib/as-fleet")
    p.add_argument("--export-dir", default="/srv/as-fleet/export")
    a = p.parse_args()
    App(("127.0.0.1", a.port), a.state_dir, a.export_dir).serve_forever()


if __name__ == "__main__":
    main()
