#!/usr/bin/python3
"""autosandbox example app: stdlib HTTP server with state and logs on disk.

GET /        -> {"app": "as-pyapp", "hits": N, "pid": PID}  (bumps the hit counter)
GET /health  -> {"status": "ok"}
State: <state-dir>/state.json, log: <log-dir>/app.log.
"""

import argparse
import http.server
import json
import logging
import os
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "as-pyapp/1.0"

    def _send(self, code, payload):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/":
            self._send(200, {"app": "as-pyapp", "hits": self.server.bump(), "pid": os.getpid()})
        else:
            self._send(404, {"error": "not found", "path": self.path})

    def log_message(self, fmt, *args):
        logging.info("%s %s", self.address_string(), fmt % args)


class App(http.server.ThreadingHTTPServer):
    allow_reuse_address = True

    def __init__(self, addr, state_dir):
        super().__init__(addr, Handler)
        self.state_file = os.path.join(state_dir, "state.json")
        try:
            with open(self.state_file) as f:
                self.hits = json.load(f)["hits"]
        except (OSError, ValueError, KeyError):
            self.hits = 0
        self.save()

    def save(self):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"hits": self.hits}, f)
        os.replace(tmp, self.state_file)

    def bump(self):
        self.hits += 1
        self.save()
        return self.hits


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8082)
    p.add_argument("--state-dir", default="/var/lib/as-pyapp")
    p.add_argument("--log-dir", default="/var/log/as-pyapp")
    a = p.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[
            logging.FileHandler(os.path.join(a.log_dir, "app.log")),
            logging.StreamHandler(sys.stderr),
        ],
    )
    srv = App((a.host, a.port), a.state_dir)
    logging.info("as-pyapp listening on %s:%d (pid %d)", a.host, a.port, os.getpid())
    srv.serve_forever()


if __name__ == "__main__":
    main()
