#!/usr/bin/env python3
"""A small REST object store (and HTTP test endpoints) for lua/httpfs.lua and the http module.

Python 3 standard library only. The first line on stdout is `PORT <n>`; then it serves (one
thread per connection, HTTP/1.1 keep-alive) until killed, or until stdin closes with
--exit-on-stdin-eof.

The store (keys are any UTF-8 text, "/" included; percent-encode them in the URL):
  GET    /objects[?prefix=P]  200 [{"key": K, "size": N, "mtime": SECONDS}, ...] sorted by key
  GET    /objects/KEY         200 the bytes (headers x-mtime, last-modified) | 404
  HEAD   /objects/KEY         the same headers, no body
  PUT    /objects/KEY         store the body: 201 (new) or 200 (replaced), {"key", "size",
                              "mtime"}; 507 over --quota; 400 for an empty or non-UTF-8 key
  DELETE /objects/KEY         204 | 404
Errors are JSON: {"error": "..."}.

Test endpoints (any method):
  /echo                 200 {"method", "path", "query", "headers": {lower-case: value},
                        "body": text, "length": n}
  /status/CODE          answers CODE (body "status CODE\\n", header x-status: CODE)
  /headers?n=v&n=w      answers with those response headers (a repeated name: several lines)
  /redirect?to=URL[&code=302]
  /bytes?n=N            N bytes (byte i is i % 256)
  /drop                 closes the connection without answering
  /trickle?n=N&interval=S   promises N bytes and sends one every S seconds

Delays (for time-out and concurrency tests), added before a request is answered:
  ?delay=SECONDS on any URL, or a request header `X-Delay: SECONDS`;
  --delay '[METHOD ]GLOB=SECONDS' (repeatable; GLOB is matched against the path, e.g.
  --delay 'GET /objects/slow*=2');
  POST /_admin/delay {"path": GLOB, "method": M or null, "seconds": S} (0 removes the rule).
Other hooks (no auth): POST /_admin/fault {"path": GLOB, "method": M, "status": 500,
"count": n (default 1; -1 = always), "drop": false}, GET /_admin/log (the requests so far),
POST /_admin/reset (rules and log; {"objects": true} also empties the store),
GET /_admin/stats {"requests", "in_flight", "max_in_flight"}. `--call URL [JSON]` sends one
request (POST with the JSON, else GET) and prints the answer.
"""

import argparse
import fnmatch
import json
import os
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.args = args
        self.objects = {}  # key (str) -> (bytes, mtime)
        self.delays = []  # (method or None, glob, seconds)
        self.faults = []  # dicts: method, path, status, count, drop
        self.log = []
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        for spec in args.delay or []:
            rule, _, secs = spec.rpartition("=")
            method, _, glob = rule.strip().rpartition(" ")
            self.delays.append((method.upper() or None, glob, float(secs)))
        for spec in args.object or []:
            key, _, value = spec.partition("=")
            self.objects[key] = (value.encode(), time.time())

    def used(self):
        return sum(len(d) for d, _ in self.objects.values())

    def delay_for(self, method, path):
        with self.lock:
            return sum(
                s for m, g, s in self.delays if (m is None or m == method) and fnmatch.fnmatchcase(path, g)
            )

    def take_fault(self, method, path):
        with self.lock:
            for f in self.faults:
                if f.get("method") not in (None, method):
                    continue
                if not fnmatch.fnmatchcase(path, f.get("path") or "*"):
                    continue
                if f["count"] == 0:
                    continue
                if f["count"] > 0:
                    f["count"] -= 1
                return f
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "objectstore/1"
    state = None  # set in main

    def log_message(self, fmt, *args):
        if self.state.args.verbose:
            super().log_message(fmt, *args)

    # --- plumbing ----------------------------------------------------------------------------

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send(self, status, body=b"", ctype="application/json", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        no_body = status in (204, 304) or status < 200
        if not no_body:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, value, headers=()):
        self.send(status, json.dumps(value), headers=headers)

    def error(self, status, message):
        self.send_json(status, {"error": message})

    def handle_one(self):
        st = self.state
        url = urlsplit(self.path)
        path, query = url.path, dict(parse_qsl(url.query, keep_blank_values=True))
        body = self.read_body()
        with st.lock:
            st.requests += 1
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
            st.log.append(
                {
                    "method": self.command,
                    "path": path,
                    "query": url.query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "length": len(body),
                    "time": time.time(),
                }
            )
        try:
            delay = st.delay_for(self.command, path)
            for v in (query.get("delay"), self.headers.get("X-Delay")):
                if v:
                    delay += float(v)
            if delay > 0:
                time.sleep(delay)
            fault = st.take_fault(self.command, path)
            if fault is not None:
                if fault.get("drop"):
                    self.close_connection = True
                    return
                return self.error(int(fault.get("status") or 500), fault.get("error") or "injected fault")
            self.route(path, query, body)
        finally:
            with st.lock:
                st.in_flight -= 1

    def do_GET(self):
        self.handle_one()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_PROPFIND = do_GET

    # --- routes ------------------------------------------------------------------------------

    def route(self, path, query, body):
        if path.startswith("/_admin/"):
            return self.admin(path, body)
        if path == "/objects" or path == "/objects/":
            if self.command not in ("GET", "HEAD"):
                return self.error(405, "method not allowed")
            return self.listing(query.get("prefix", ""))
        if path.startswith("/objects/"):
            return self.object(path[len("/objects/") :], body)
        if path == "/echo":
            return self.send_json(
                200,
                {
                    "method": self.command,
                    "path": path,
                    "query": urlsplit(self.path).query,
                    "headers": self.header_dict(),
                    "body": body.decode("utf-8", "replace"),
                    "length": len(body),
                },
            )
        if path.startswith("/status/"):
            code = int(path[len("/status/") :])
            return self.send(code, f"status {code}\n", "text/plain", [("X-Status", str(code))])
        if path == "/headers":
            pairs = parse_qsl(urlsplit(self.path).query, keep_blank_values=True)
            return self.send(200, "ok", "text/plain", pairs)
        if path == "/redirect":
            code = int(query.get("code", "302"))
            return self.send(code, "", "text/plain", [("Location", query.get("to", "/echo"))])
        if path == "/bytes":
            n = int(query.get("n", "0"))
            return self.send(200, bytes(i % 256 for i in range(n)), "application/octet-stream")
        if path == "/drop":
            self.close_connection = True
            return
        if path == "/trickle":
            n, interval = int(query.get("n", "10")), float(query.get("interval", "1"))
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            self.wfile.flush()
            for _ in range(n):
                time.sleep(interval)
                self.wfile.write(b"x")
                self.wfile.flush()
            return
        return self.error(404, "no such endpoint")

    def header_dict(self):
        out = {}
        for k, v in self.headers.items():
            k = k.lower()
            out[k] = out[k] + ", " + v if k in out else v
        return out

    def listing(self, prefix):
        st = self.state
        with st.lock:
            items = [
                {"key": k, "size": len(d), "mtime": m}
                for k, (d, m) in sorted(st.objects.items())
                if k.startswith(prefix)
            ]
        return self.send_json(200, items)

    def object(self, raw_key, body):
        st = self.state
        try:
            key = unquote_to_bytes(raw_key).decode("utf-8")
        except UnicodeDecodeError:
            return self.error(400, "keys must be UTF-8")
        if key == "":
            return self.error(400, "empty key")
        if self.command in ("GET", "HEAD"):
            with st.lock:
                found = st.objects.get(key)
            if found is None:
                return self.error(404, "no such object")
            data, mtime = found
            return self.send(
                200,
                data,
                "application/octet-stream",
                [("X-Mtime", repr(mtime)), ("Last-Modified", formatdate(mtime, usegmt=True))],
            )
        if self.command == "PUT":
            with st.lock:
                old = st.objects.get(key)
                grow = len(body) - (len(old[0]) if old else 0)
                if st.args.quota is not None and st.used() + grow > st.args.quota:
                    return self.error(507, "insufficient storage")
                mtime = time.time()
                st.objects[key] = (body, mtime)
            return self.send_json(201 if old is None else 200, {"key": key, "size": len(body), "mtime": mtime})
        if self.command == "DELETE":
            with st.lock:
                found = st.objects.pop(key, None)
            if found is None:
                return self.error(404, "no such object")
            return self.send(204)
        return self.error(405, "method not allowed")

    def admin(self, path, body):
        st = self.state
        try:
            arg = json.loads(body) if body.strip() else {}
        except ValueError:
            return self.error(400, "bad JSON")
        if path == "/_admin/delay":
            with st.lock:
                glob, method = arg.get("path", "*"), arg.get("method")
                method = method.upper() if method else None
                st.delays = [d for d in st.delays if (d[0], d[1]) != (method, glob)]
                if float(arg.get("seconds", 0)) > 0:
                    st.delays.append((method, glob, float(arg["seconds"])))
            return self.send_json(200, {"ok": True})
        if path == "/_admin/fault":
            f = {
                "method": (arg.get("method") or "").upper() or None,
                "path": arg.get("path") or "*",
                "status": arg.get("status", 500),
                "error": arg.get("error"),
                "count": int(arg.get("count", 1)),
                "drop": bool(arg.get("drop", False)),
            }
            with st.lock:
                st.faults.append(f)
            return self.send_json(200, {"ok": True})
        if path == "/_admin/log":
            with st.lock:
                # Not the admin requests themselves.
                return self.send_json(200, [r for r in st.log if not r["path"].startswith("/_admin/")])
        if path == "/_admin/reset":
            with st.lock:
                st.delays, st.faults, st.log = [], [], []
                if arg.get("objects"):
                    st.objects = {}
            return self.send_json(200, {"ok": True})
        if path == "/_admin/stats":
            with st.lock:
                return self.send_json(
                    200,
                    {
                        "requests": st.requests,
                        "in_flight": st.in_flight - 1,  # not this request
                        "max_in_flight": st.max_in_flight,
                        "objects": len(st.objects),
                        "bytes": st.used(),
                    },
                )
        return self.error(404, "no such admin endpoint")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # Clients that time out or go away (tests do it on purpose) are not worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and not Handler.state.args.verbose:
            return
        super().handle_error(request, client_address)


def call(argv):
    """`--call URL [JSON]`: one request (POST with the JSON body, else GET); prints the body."""
    import urllib.error
    import urllib.request

    data = argv[1].encode() if len(argv) > 1 else None
    req = urllib.request.Request(argv[0], data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            sys.stdout.write(r.read().decode())
    except urllib.error.HTTPError as e:
        sys.stdout.write(e.read().decode())
        sys.exit(1)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--call":
        return call(sys.argv[2:])
    ap = argparse.ArgumentParser(
        description="A REST object store and HTTP test endpoints (see the module docstring).",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    ap.add_argument(
        "--delay",
        action="append",
        metavar="[METHOD ]GLOB=SECONDS",
        help="delay matching requests, e.g. 'GET /objects/slow*=2' (repeatable)",
    )
    ap.add_argument(
        "--object", action="append", metavar="KEY=TEXT", help="store an object at start (repeatable)"
    )
    ap.add_argument("--quota", type=int, metavar="BYTES", help="total size limit (PUT beyond it: 507)")
    ap.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="exit when stdin closes (a test harness's pipe: no orphan server)",
    )
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = ap.parse_args()

    Handler.state = State(args)
    httpd = Server((args.host, args.port), Handler)
    print(f"PORT {httpd.server_address[1]}", flush=True)
    if args.exit_on_stdin_eof:

        def watch():
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            finally:
                os._exit(0)

        threading.Thread(target=watch, daemon=True).start()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
