"""Answers GET / on 127.0.0.1:8083; from the second request on it also writes a spool file,
so a learning run that sends one request never sees that write. GET /deliver writes a message
in spool/tmp and renames it into spool/new, as a Maildir delivery does."""

import http.server
import os
import sys

SPOOL = "/srv/as-lazy/spool"


class Handler(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        Handler.hits += 1
        try:
            if self.path == "/deliver":
                name = f"msg-{Handler.hits}"
                with open(os.path.join(SPOOL, "tmp", name), "w") as f:
                    f.write("mail\n")
                os.rename(os.path.join(SPOOL, "tmp", name), os.path.join(SPOOL, "new", name))
            elif Handler.hits >= 2:
                with open(os.path.join(SPOOL, f"request-{Handler.hits}"), "w") as f:
                    f.write("spooled\n")
            code, body = 200, b"ok\n"
        except OSError as exc:
            print(f"cannot spool: {exc}", file=sys.stderr, flush=True)
            code, body = 500, b"spool failed\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


http.server.HTTPServer(("127.0.0.1", 8083), Handler).serve_forever()
