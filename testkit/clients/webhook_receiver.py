"""A webhook receiver for the event tests: checks each POST's X-Ftps-Signature (HMAC-SHA256 of the body under
SECRET), answers 500 to the first FAIL_FIRST valid ones, then 200, and appends each accepted body as one line to
OUT. A bad or missing signature gets 401 and is never recorded.

usage: webhook_receiver.py SECRET FAIL_FIRST OUT [PORT]   (prints "listening on PORT" once it listens)
"""
import hashlib
import hmac
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET, FAIL_FIRST, OUT = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
valid = 0


class Hook(BaseHTTPRequestHandler):
    # Keep-alive, as real receivers do: the server reuses one connection for its events.
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global valid
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(self.headers.get("X-Ftps-Signature", ""), expected):
            print("bad signature", file=sys.stderr, flush=True)
            self.send_response(401)
        else:
            valid += 1
            if valid <= FAIL_FIRST:
                self.send_response(500)
            else:
                with open(OUT, "ab") as out:
                    out.write(body + b"\n")
                self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[4]) if len(sys.argv) > 4 else 0), Hook)
print("listening on", server.server_address[1], flush=True)
server.serve_forever()
