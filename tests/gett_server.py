#!/usr/bin/env python3
"""A local Ge.tt-compatible server (REST API version 1) for tests and the demo.

Follows ../shared/gett-api.md, including its quirks: JSON request bodies are parsed whatever
their content type (no body, "", "null" and "{}" all mean "no fields"), untitled shares have no
`title`, files have no `size` until uploaded, file ids are opaque strings, /blob redirects to the
bytes, access tokens expire (configurable), every error body is {"error": "<text>"}.

Python 3.11 standard library only. The first line on stdout is `PORT <n>`; then it serves until
killed (or until stdin closes, with --exit-on-stdin-eof).

Test hooks under /_admin/ (no authentication): fault injection (errors, delays, dropped
connections), token expiry, quota changes, a request log and counters. See --help and
/tmp/flufs/gett-notes.md.

Delays for concurrency tests: a fault with `delay` and no `status` holds matching requests that
long and then serves them normally, e.g. POST /_admin/fault {"path_prefix": "/1/blobs/",
"delay": 1.5} (downloads, after /blob's redirect) or {"path_prefix": "/1/upload/", "method":
"PUT", "delay": 3} (uploads; the file reads `uploading` meanwhile). /_admin/stats has
`in_flight` and `max_in_flight`: API requests being served now, and the most at once so far.
"""

import argparse
import json
import os
import random
import secrets
import socket
import string
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

ALNUM = string.digits + string.ascii_letters


class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class User:
    def __init__(self, userid, apikey, email, password, fullname, limit):
        self.userid = userid
        self.apikey = apikey
        self.email = email
        self.password = password
        self.fullname = fullname
        self.limit = limit


class File:
    def __init__(self, share, fileid, filename, created):
        self.share = share
        self.fileid = fileid
        self.filename = filename
        self.created = created
        self.downloads = 0
        self.readystate = "remote"
        self.data = None  # bytes once uploaded


class Share:
    def __init__(self, sharename, owner, title, created):
        self.sharename = sharename
        self.owner = owner
        self.title = title
        self.created = created
        self.files = {}  # fileid -> File, insertion order = creation order
        self.next_fileid = 0
        self.removed = False


class State:
    def __init__(self, args):
        self.lock = threading.RLock()
        self.args = args
        self.public_base = args.public_base.rstrip("/")
        self.base = None  # http://host:port, set once bound
        self.users = {}  # email -> User
        self.by_id = {}  # userid -> User
        for i, spec in enumerate(args.user or ["testkey:test@example.org:secret"]):
            parts = spec.split(":", 2)
            if len(parts) != 3 or not all(parts):
                raise SystemExit(f"--user wants APIKEY:EMAIL:PASSWORD, got {spec!r}")
            apikey, email, password = parts
            uid = f"u{i + 1}"
            name = "Test User" if i == 0 else f"Test User {i + 1}"
            u = User(uid, apikey, email, password, name, args.quota)
            self.users[email] = u
            self.by_id[uid] = u
        self.access = {}  # token -> (userid, deadline)
        self.refresh = {}  # token -> userid
        self.shares = {}  # sharename -> Share, insertion order = creation order
        self.upload_keys = {}  # key -> (sharename, fileid)
        self.issued = []  # every access and refresh token handed out
        self.faults = []
        self.next_fault = 1
        self.log = []
        self.stats = {
            "password_logins": 0,
            "refresh_logins": 0,
            "refresh_failures": 0,
            "auth_failures": 0,
            "uploads": 0,
            "downloads": 0,
            "in_flight": 0,  # API requests (not /_admin/) being served now
            "max_in_flight": 0,  # the most at once so far
        }

    # --- helpers -----------------------------------------------------------------------------

    def now(self):
        return int(time.time())

    def new_sharename(self):
        while True:
            name = "".join(random.choice(ALNUM) for _ in range(7))
            if name not in self.shares:
                return name

    def user_storage(self, u):
        used = 0
        files = 0
        downloads = 0
        for s in self.shares.values():
            if s.owner != u.userid or s.removed:
                continue
            for f in s.files.values():
                files += 1
                downloads += f.downloads
                if f.data is not None:
                    used += len(f.data)
        return used, files, downloads

    def user_json(self, u):
        used, files, downloads = self.user_storage(u)
        return {
            "userid": u.userid,
            "fullname": u.fullname,
            "email": u.email,
            "files": files,
            "downloads": downloads,
            "storage": {"used": used, "limit": u.limit, "extra": 0},
        }

    def file_json(self, f, with_upload=False):
        s = f.share
        o = {
            "fileid": f.fileid,
            "filename": f.filename,
            "sharename": s.sharename,
            "downloads": f.downloads,
            "readystate": f.readystate,
            "created": f.created,
            "getturl": f"{self.public_base}/{s.sharename}/v/{f.fileid}",
            "downloadurl": f"{self.base}/1/files/{s.sharename}/{quote(f.fileid)}/blob",
        }
        if f.data is not None:
            o["size"] = len(f.data)
        if with_upload:
            o["upload"] = self.new_upload(f)
        return o

    def share_json(self, s):
        o = {
            "sharename": s.sharename,
            "created": s.created,
            "files": []
            if s.removed
            else [self.file_json(f) for f in reversed(list(s.files.values()))],
            "getturl": f"{self.public_base}/{s.sharename}",
            "readystate": "removed" if s.removed else "ready",
            "live": False,
            "userid": s.owner,
            "fullname": self.by_id[s.owner].fullname if s.owner in self.by_id else "",
        }
        if s.title is not None:
            o["title"] = s.title
        return o

    def new_upload(self, f):
        key = secrets.token_urlsafe(12)
        self.upload_keys[key] = (f.share.sharename, f.fileid)
        url = f"{self.base}/1/upload/{f.share.sharename}/{quote(f.fileid)}?key={key}"
        return {"puturl": url, "posturl": url + "&kind=post"}

    def login(self, u):
        at = "a." + secrets.token_urlsafe(18)
        self.access[at] = (u.userid, time.monotonic() + self.args.token_lifetime)
        self.issued.append(at)
        return at

    def login_json(self, u, at, rt):
        return {
            "accesstoken": at,
            "refreshtoken": rt,
            "expires": self.args.token_lifetime,
            "user": self.user_json(u),
        }

    def auth(self, query):
        """The user whose access token is in the query, or ApiError 401."""
        at = (query.get("accesstoken") or [""])[0]
        ent = self.access.get(at)
        if not at or ent is None or time.monotonic() >= ent[1]:
            self.stats["auth_failures"] += 1
            raise ApiError(401, "access denied")
        return self.by_id[ent[0]]

    def share_of(self, name, user=None, live=True):
        s = self.shares.get(name)
        if s is None:
            raise ApiError(404, "share not found")
        if live and s.removed:
            raise ApiError(404, "share not found")
        if user is not None and s.owner != user.userid:
            raise ApiError(403, "access denied")
        return s

    def file_of(self, sharename, fileid, user=None):
        s = self.share_of(sharename, user)
        f = s.files.get(fileid)
        if f is None:
            raise ApiError(404, "file not found")
        return f

    def create_share(self, user, title):
        s = Share(self.new_sharename(), user.userid, title, self.now())
        self.shares[s.sharename] = s
        return s

    def create_file(self, s, filename):
        f = File(s, str(s.next_fileid), filename, self.now())
        s.next_fileid += 1
        s.files[f.fileid] = f
        return f

    def store(self, f, data):
        """Replace a file's bytes, respecting the owner's quota."""
        u = self.by_id[f.share.owner]
        used, _, _ = self.user_storage(u)
        old = len(f.data) if f.data is not None else 0
        if used - old + len(data) > u.limit:
            raise ApiError(413, "storage limit exceeded")
        f.data = bytes(data)
        f.readystate = "uploaded"
        self.stats["uploads"] += 1

    def seed(self):
        """Sample content for the demo (owned by the first user); see --help."""
        u = next(iter(self.by_id.values()))
        photos = self.create_share(u, "Holiday photos")
        for name, data in [
            ("beach.jpg", bytes(range(256)) * 40),
            ("notes.txt", b"Sun, sand and sea.\n"),
        ]:
            self.store(self.create_file(photos, name), data)
        docs = self.create_share(u, "Documents")
        self.store(self.create_file(docs, "report.txt"), b"Quarterly report: all good.\n" * 100)
        self.store(self.create_file(docs, "todo.txt"), b"first version\n")
        self.store(self.create_file(docs, "todo.txt"), b"second version, same name\n")
        untitled = self.create_share(u, None)
        self.store(self.create_file(untitled, "readme.txt"), b"This share has no title.\n")
        self.create_file(untitled, "pending.bin")  # never uploaded: readystate remote, no size
        for n in (1, 2):
            twin = self.create_share(u, "Twins")
            self.store(self.create_file(twin, f"twin{n}.txt"), f"twin share {n}\n".encode())
        self.create_share(u, "Empty")


def parse_range(header, size):
    """(start, end_exclusive) for a single `bytes=` range, 'unsatisfiable', or None (ignore)."""
    if not header or not header.startswith("bytes="):
        return None
    spec = header[len("bytes=") :].strip()
    if "," in spec:
        return None  # several ranges: answer with the whole body (allowed by RFC 9110)
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return (max(0, size - n), size)
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size:
        return "unsatisfiable"
    if end <= start:
        return None
    return (start, min(end, size))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gett-test/1"
    state = None  # set in main

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm holds the body
        # until the client's delayed ACK of the headers (~40 ms per request).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *a):
        if self.state.args.verbose:
            sys.stderr.write("gett-server: " + (fmt % a) + "\n")

    def log_request(self, code="-", size="-"):
        if self.state.args.verbose:
            path = urlsplit(self.path).path
            sys.stderr.write(f"gett-server: {self.command} {path} {code}\n")

    # --- plumbing ----------------------------------------------------------------------------

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("truncated chunked body")
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(n)
                self.rfile.readline(65537)
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n > 0 else b""
        if len(data) != n:
            raise ConnectionError("truncated body")
        return data

    def json_body(self, raw):
        """Decode a JSON request body whatever its content type; no body/""/null/{} = {}."""
        text = raw.decode("utf-8", "replace").strip()
        if text == "" or text == "null":
            return {}
        try:
            v = json.loads(text)
        except ValueError:
            raise ApiError(400, "invalid json")
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ApiError(400, "invalid json")
        return v

    def send(self, status, body=b"", ctype=None, headers=()):
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._status = status

    def send_json(self, status, obj):
        ctype = None if self.state.args.no_json_content_type else "application/json"
        self.send(status, json.dumps(obj).encode(), ctype)

    def dispatch(self):
        self._status = None
        st = self.state
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query, keep_blank_values=True)
        raw = b""
        counted = not path.startswith("/_admin/")
        if counted:
            with st.lock:
                st.stats["in_flight"] += 1
                st.stats["max_in_flight"] = max(st.stats["max_in_flight"], st.stats["in_flight"])
        uploading = self.mark_uploading(path, query)
        try:
            try:
                raw = self.read_body()
            except (ValueError, ConnectionError):
                self.close_connection = True
                raise ApiError(400, "bad request body")
            if path.startswith("/_admin/"):
                return self.admin(path, raw)
            if self.fault(path):
                return
            self.route(path, query, raw)
        except ApiError as e:
            self.send_json(e.status, {"error": e.message})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug here: answer 500 rather than dropping the connection
            self.close_connection = True
            try:
                self.send_json(500, {"error": f"internal error: {type(e).__name__}: {e}"})
            except OSError:
                pass
        finally:
            if counted:
                with st.lock:
                    st.stats["in_flight"] -= 1
            if uploading is not None:
                f, before = uploading
                with st.lock:
                    if f.readystate == "uploading":
                        f.readystate = before
            if not path.startswith("/_admin/"):
                with st.lock:
                    st.log.append(
                        {
                            "method": self.command,
                            "path": path,
                            "status": self._status,
                            "range": self.headers.get("Range"),
                            "token": "accesstoken" in query,
                        }
                    )

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = lambda self: self.dispatch()

    def mark_uploading(self, path, query):
        """A PUT/POST to a valid upload URL: the file reads `uploading` while its body arrives
        (and while an injected delay holds the request). Returns (file, state before)."""
        st = self.state
        p = [unquote(x) for x in path.split("/") if x != ""]
        if self.command not in ("PUT", "POST") or len(p) != 4 or p[:2] != ["1", "upload"]:
            return None
        with st.lock:
            key = (query.get("key") or [""])[0]
            if st.upload_keys.get(key) != (p[2], p[3]):
                return None
            s = st.shares.get(p[2])
            f = s.files.get(p[3]) if s is not None and not s.removed else None
            if f is None:
                return None
            before = f.readystate
            f.readystate = "uploading"
            return (f, before)

    def fault(self, path):
        """Apply the first matching injected fault. True when the request was answered."""
        st = self.state
        with st.lock:
            hit = None
            for f in st.faults:
                if not path.startswith(f.get("path_prefix", "")):
                    continue
                if f.get("method") and f["method"].upper() != self.command:
                    continue
                if f.get("count") is not None:
                    if f["count"] <= 0:
                        continue
                    f["count"] -= 1
                hit = dict(f)
                break
        if hit is None:
            return False
        if hit.get("delay"):
            time.sleep(float(hit["delay"]))
        if hit.get("drop"):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if hit.get("status"):
            msg = hit.get("error", "injected fault")
            if hit.get("echo"):
                msg += ": " + self.path  # a careless server echoing the URL (and its token)
            self.send_json(int(hit["status"]), {"error": msg})
            return True
        return False

    # --- admin -------------------------------------------------------------------------------

    def admin(self, path, raw):
        st = self.state
        body = self.json_body(raw)
        with st.lock:
            if path == "/_admin/fault" and self.command == "POST":
                f = dict(body)
                f["id"] = st.next_fault
                st.next_fault += 1
                st.faults.append(f)
                return self.send_json(200, {"id": f["id"]})
            if path in ("/_admin/clear", "/_admin/reset") and self.command == "POST":
                st.faults.clear()
                return self.send_json(200, {"success": True})
            if path == "/_admin/expire" and self.command == "POST":
                if body.get("access", True):
                    st.access.clear()
                if body.get("refresh", False):
                    st.refresh.clear()
                return self.send_json(200, {"success": True})
            if path == "/_admin/quota" and self.command == "POST":
                if not isinstance(body.get("limit"), int):
                    raise ApiError(400, "limit (an integer) expected")
                for u in st.by_id.values():
                    u.limit = body["limit"]
                return self.send_json(200, {"success": True})
            if path == "/_admin/log" and self.command == "GET":
                return self.send_json(200, st.log)
            if path == "/_admin/log/clear" and self.command == "POST":
                st.log.clear()
                return self.send_json(200, {"success": True})
            if path == "/_admin/stats" and self.command == "GET":
                return self.send_json(200, st.stats)
            if path == "/_admin/tokens" and self.command == "GET":
                # Every token ever issued, for tests that check no secret leaks anywhere.
                return self.send_json(200, st.issued)
        raise ApiError(404, "not found")

    # --- the API -----------------------------------------------------------------------------

    def route(self, path, query, raw):
        st = self.state
        m = self.command
        parts = [unquote(p) for p in path.split("/") if p != ""]
        if m == "OPTIONS":
            return self.send(
                200,
                headers=[
                    ("Access-Control-Allow-Origin", "*"),
                    ("Access-Control-Allow-Methods", "GET, POST, PUT, OPTIONS"),
                    ("Access-Control-Allow-Headers", "*"),
                ],
            )
        if not parts or parts[0] != "1":
            raise ApiError(404, "not found")
        p = parts[1:]
        with st.lock:
            # POST /1/users/login
            if p == ["users", "login"] and m == "POST":
                return self.login(self.json_body(raw))
            # GET /1/users/me
            if p == ["users", "me"] and m in ("GET", "HEAD"):
                return self.send_json(200, st.user_json(st.auth(query)))
            # GET /1/shares
            if p == ["shares"] and m in ("GET", "HEAD"):
                u = st.auth(query)
                mine = [s for s in st.shares.values() if s.owner == u.userid and not s.removed]
                mine.reverse()
                skip = int((query.get("skip") or ["0"])[0] or 0)
                limit = (query.get("limit") or [""])[0]
                mine = mine[skip:]
                if limit:
                    mine = mine[: int(limit)]
                return self.send_json(200, [st.share_json(s) for s in mine])
            # POST /1/shares/create
            if p == ["shares", "create"] and m == "POST":
                u = st.auth(query)
                title = self.json_body(raw).get("title")
                if title is not None and not isinstance(title, str):
                    raise ApiError(400, "missing parameters")
                return self.send_json(200, st.share_json(st.create_share(u, title)))
            # GET /1/shares/{s}
            if len(p) == 2 and p[0] == "shares" and m in ("GET", "HEAD"):
                return self.send_json(200, st.share_json(st.share_of(p[1], live=False)))
            # POST /1/shares/{s}/update
            if len(p) == 3 and p[0] == "shares" and p[2] == "update" and m == "POST":
                u = st.auth(query)
                body = self.json_body(raw)
                s = st.share_of(p[1], u)
                if "title" not in body:
                    raise ApiError(400, "missing parameters")
                title = body["title"]
                if title is not None and not isinstance(title, str):
                    raise ApiError(400, "missing parameters")
                s.title = title
                return self.send_json(200, st.share_json(s))
            # POST /1/shares/{s}/destroy
            if len(p) == 3 and p[0] == "shares" and p[2] == "destroy" and m == "POST":
                u = st.auth(query)
                s = st.share_of(p[1], u, live=False)
                if not s.removed:
                    s.removed = True
                    for f in s.files.values():
                        f.readystate = "removed"
                    s.files = {}
                return self.send_json(200, {"success": True})
            # POST /1/files/{s}/create
            if len(p) == 3 and p[0] == "files" and p[2] == "create" and m == "POST":
                u = st.auth(query)
                body = self.json_body(raw)
                s = st.share_of(p[1], u)
                name = body.get("filename")
                if not isinstance(name, str) or name == "":
                    raise ApiError(400, "missing filename")
                f = st.create_file(s, name)
                return self.send_json(200, st.file_json(f, with_upload=True))
            # GET /1/files/{s}/{f}
            if len(p) == 3 and p[0] == "files" and m in ("GET", "HEAD"):
                return self.send_json(200, st.file_json(st.file_of(p[1], p[2])))
            # GET /1/files/{s}/{f}/upload
            if len(p) == 4 and p[0] == "files" and p[3] == "upload" and m in ("GET", "HEAD"):
                u = st.auth(query)
                f = st.file_of(p[1], p[2], u)
                return self.send_json(200, st.new_upload(f))
            # POST /1/files/{s}/{f}/destroy
            if len(p) == 4 and p[0] == "files" and p[3] == "destroy" and m == "POST":
                u = st.auth(query)
                f = st.file_of(p[1], p[2], u)
                f.readystate = "removed"
                del f.share.files[f.fileid]
                for k in [k for k, v in st.upload_keys.items() if v == (p[1], p[2])]:
                    del st.upload_keys[k]
                return self.send_json(200, {"success": True})
            # GET /1/files/{s}/{f}/blob (redirect) and /1/blobs/{s}/{f} (bytes)
            if len(p) == 4 and p[0] == "files" and p[3] == "blob" and m in ("GET", "HEAD"):
                f = st.file_of(p[1], p[2])
                if f.data is None:
                    raise ApiError(409, "file not uploaded")
                if st.args.blob_direct:
                    return self.blob(f, query)
                loc = f"{st.base}/1/blobs/{p[1]}/{quote(p[2])}"
                if "download" in query:
                    loc += "?download"
                return self.send(302, b"", "text/plain", [("Location", loc)])
            if len(p) == 3 and p[0] == "blobs" and m in ("GET", "HEAD"):
                f = st.file_of(p[1], p[2])
                if f.data is None:
                    raise ApiError(409, "file not uploaded")
                return self.blob(f, query)
            if len(p) >= 5 and p[0] == "files" and p[3] == "blob" and m in ("GET", "HEAD"):
                st.file_of(p[1], p[2])
                raise ApiError(404, "not an image")
            # PUT/POST {puturl,posturl}
            if len(p) == 3 and p[0] == "upload" and m in ("PUT", "POST"):
                return self.upload(p[1], p[2], query, raw)
        raise ApiError(404, "not found")

    def login(self, body):
        st = self.state
        rt = body.get("refreshtoken")
        if rt is not None:
            uid = st.refresh.get(rt) if isinstance(rt, str) else None
            if uid is None:
                st.stats["refresh_failures"] += 1
                raise ApiError(401, "invalid refresh token")
            st.stats["refresh_logins"] += 1
            u = st.by_id[uid]
            return self.send_json(200, st.login_json(u, st.login(u), rt))
        apikey, email, password = body.get("apikey"), body.get("email"), body.get("password")
        if not all(isinstance(x, str) and x for x in (apikey, email, password)):
            raise ApiError(400, "missing parameters")
        u = st.users.get(email)
        if u is None:
            raise ApiError(404, "User not found")
        if not secrets.compare_digest(u.password, password) or u.apikey != apikey:
            raise ApiError(403, "wrong email or password")
        st.stats["password_logins"] += 1
        rt = "r." + secrets.token_urlsafe(18)
        st.refresh[rt] = u.userid
        st.issued.append(rt)
        return self.send_json(200, st.login_json(u, st.login(u), rt))

    def blob(self, f, query):
        st = self.state
        data = f.data
        headers = [("Accept-Ranges", "bytes")] if not st.args.no_ranges else []
        if "download" in query:
            headers.append(("Content-Disposition", f'attachment; filename="{quote(f.filename)}"'))
        rng = None if st.args.no_ranges else parse_range(self.headers.get("Range"), len(data))
        if rng == "unsatisfiable":
            headers.append(("Content-Range", f"bytes */{len(data)}"))
            return self.send_json_with(416, {"error": "range not satisfiable"}, headers)
        if "noinc" not in query:
            f.downloads += 1
        st.stats["downloads"] += 1
        if rng is None:
            return self.send(200, data, "application/octet-stream", headers)
        a, b = rng
        headers.append(("Content-Range", f"bytes {a}-{b - 1}/{len(data)}"))
        return self.send(206, data[a:b], "application/octet-stream", headers)

    def send_json_with(self, status, obj, headers):
        ctype = None if self.state.args.no_json_content_type else "application/json"
        self.send(status, json.dumps(obj).encode(), ctype, headers)

    def upload(self, sharename, fileid, query, raw):
        st = self.state
        key = (query.get("key") or [""])[0]
        if st.upload_keys.get(key) != (sharename, fileid):
            raise ApiError(404, "upload url not found")
        f = st.file_of(sharename, fileid)
        if st.args.fail_uploads:
            raise ApiError(500, "upload failed")
        data = raw
        if self.command == "POST":
            data = multipart_file(self.headers.get("Content-Type") or "", raw)
            if data is None:
                raise ApiError(400, "missing file")
        st.store(f, data)
        return self.send(200, b"computer says yes", "text/plain")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # Clients that time out or go away (tests do it on purpose) are not worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and not Handler.state.args.verbose:
            return
        super().handle_error(request, client_address)


def multipart_file(ctype, raw):
    """The content of the first file part (or the first part) of a multipart/form-data body."""
    marker = "boundary="
    i = ctype.find(marker)
    if i < 0:
        return None
    boundary = ctype[i + len(marker) :].split(";")[0].strip().strip('"').encode()
    first = None
    for part in raw.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if content.endswith(b"\r\n"):
            content = content[:-2]
        if b"filename=" in head:
            return content
        if first is None:
            first = content
    return first


def call(argv):
    """`gett_server.py --call URL [JSON]`: one request (POST with the JSON body, else GET);
    prints the answer body. For tests driving the admin endpoints without curl."""
    import urllib.error
    import urllib.request

    url = argv[0]
    data = argv[1].encode() if len(argv) > 1 else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
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
        description="Ge.tt REST API v1 compatible test server (see ../shared/gett-api.md).",
        epilog="--seed creates, for the first user: 'Holiday photos' (beach.jpg 10240 bytes, "
        "notes.txt), 'Documents' (report.txt, two files named todo.txt), an untitled share "
        "(readme.txt, pending.bin never uploaded), two shares titled 'Twins' (twin1.txt, "
        "twin2.txt) and an empty share 'Empty'. "
        "Test hooks (no auth): POST /_admin/fault {path_prefix, method, status, error, delay, "
        "count, drop, echo}, POST /_admin/reset, POST /_admin/expire {access, refresh}, "
        "POST /_admin/quota {limit}, GET /_admin/log, POST /_admin/log/clear, "
        "GET /_admin/stats (counters, in_flight, max_in_flight), GET /_admin/tokens. A fault with "
        "a delay and no status only delays the requests it matches. `gett_server.py --call URL [JSON]` sends one "
        "request (POST with JSON, else GET) and prints the answer.",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    ap.add_argument(
        "--user",
        "--users",
        dest="user",
        action="append",
        metavar="APIKEY:EMAIL:PASSWORD",
        help="an account (repeatable); default testkey:test@example.org:secret",
    )
    ap.add_argument(
        "--token-lifetime",
        type=int,
        default=86400,
        metavar="SECONDS",
        help="access-token lifetime, sent as `expires` (default 86400)",
    )
    ap.add_argument(
        "--quota",
        type=int,
        default=2000000000,
        metavar="BYTES",
        help="storage.limit of every user (default 2000000000); uploads beyond it get 413",
    )
    ap.add_argument("--seed", action="store_true", help="create sample shares and files")
    ap.add_argument("--public-base", default="http://ge.tt", help="base of getturl links")
    ap.add_argument(
        "--no-json-content-type",
        action="store_true",
        help="send JSON answers without a Content-Type (clients must not depend on it)",
    )
    ap.add_argument("--blob-direct", action="store_true", help="/blob answers 200, no redirect")
    ap.add_argument("--no-ranges", action="store_true", help="ignore Range headers")
    ap.add_argument("--fail-uploads", action="store_true", help="every upload answers 500")
    ap.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="exit when stdin closes (a test harness's pipe: no orphan server)",
    )
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = ap.parse_args()
    if args.token_lifetime < 1:
        ap.error("--token-lifetime must be at least 1")

    state = State(args)
    Handler.state = state
    httpd = Server((args.host, args.port), Handler)
    port = httpd.server_address[1]
    state.base = f"http://{args.host}:{port}"
    if args.seed:
        state.seed()
    print(f"PORT {port}", flush=True)
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
