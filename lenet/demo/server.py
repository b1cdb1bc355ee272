"""The demo's web server: the page's files and a small JSON API over lenet.demo.compute,
on the standard library's ThreadingHTTPServer (a thread per connection, keep-alive: all a
local demo needs, without a framework to install).

    GET  /, /NAME           the regular files of static/, read once at start (no path
                            from a request reaches the file system)
    GET  /api/info          class names, data set, device, the mistakes' state
    POST /api/draw          {"width", "height", "pixels": base64 of W*H grey bytes row by
                            row (0 black .. 255 white), "step": distortion 0..}
    GET  /api/mistake?k=K&step=S   the test set's K-th surest mistake (0-based)

Answers carry each layer as its shape and base64 little-endian float32 (`encode`). A bad
request gets a 4xx and {"error": one short line}, never a traceback (a 405 names the
methods its path takes in Allow); a client that hangs up mid-request is dropped without a
word on the terminal. Tested by tests/test_demo.py.
"""

import base64
import binascii
import json
import os
import re
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

from lenet.demo.compute import MAX_STEP, DrawingError

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
         ".ico": "image/x-icon"}
MIN_SIDE, MAX_SIDE = 8, 1024          # a drawing's width and height, pixels
MAX_BODY = 2 * 1024 * 1024            # bytes: a 1024x1024 drawing in base64 fits
TIMEOUT = 30                          # seconds a connection may stay silent
DRAIN = 16 * 1024 * 1024              # a refused body up to this size is read and dropped
MAX_DIGITS = 20                       # an integer longer than this is out of every range
INTEGER = re.compile(r"[+-]?[0-9]+")  # what a query's integer may be (ASCII digits)


class RequestError(Exception):
    """A bad request: its status, one line saying why and, for a 405, the methods the
    path allows (the Allow header HTTP requires)."""

    def __init__(self, status, message, allow=None):
        super().__init__(message)
        self.status = status
        self.allow = allow


def static_files(folder=STATIC):
    """name -> (content type, bytes) of the regular files directly in `folder`."""
    files = {}
    for entry in os.scandir(folder):
        kind = TYPES.get(os.path.splitext(entry.name)[1])
        if kind and entry.is_file(follow_symlinks=False):
            with open(entry.path, "rb") as f:
                files[entry.name] = (kind, f.read())
    return files


def encode(answer):
    """The JSON-ready answer: each layer as its shape and base64 float32 (little-endian),
    which the page reads into a Float32Array with no parsing of numbers."""
    layers = {name: {"shape": list(a.shape),
                     "data": base64.b64encode(np.ascontiguousarray(a, "<f4")).decode()}
              for name, a in answer["layers"].items()}
    return dict(answer, layers=layers)


def cut(text, room=24):
    """text, cut to `room` characters with its length said: a refusal stays one short
    line whatever was sent."""
    return text if len(text) <= room else f"{text[:room]}... ({len(text):,} characters)"


def shorten(value, room=24):
    """repr(value), cut (a value of the request shown as the client sent it)."""
    return cut(repr(value), room)


def integer(value, name, low, high):
    """An int in low..high of a query's text (None: absent) or of a JSON number already
    checked to be an integer (an int, or a LongInteger too long to convert), else a
    RequestError saying which: 400 for what is not an integer, 422 for one out of range
    (as short as any other, however many digits it has)."""
    if value is None:
        raise RequestError(400, f"{name} is missing: give an integer in {low}..{high}")
    if isinstance(value, str) and not isinstance(value, LongInteger):
        if not INTEGER.fullmatch(value.strip()):
            raise RequestError(400, f"{name} must be an integer, not {shorten(value)}")
        value = json_integer(value.strip())
    if isinstance(value, LongInteger):
        raise RequestError(422, f"{name} must lie in {low}..{high}, not {value[:12]}... "
                           f"({len(value.lstrip('+-')):,} digits)")
    if not low <= value <= high:
        raise RequestError(422, f"{name} must lie in {low}..{high}, not {value}")
    return value


class LongInteger(str):
    """The digits of a JSON or query integer too long to be a width, a step or an index
    (and to convert: Python refuses int() of more than 4300 digits)."""


def json_integer(digits):
    """json.loads' parse_int: a LongInteger for more than MAX_DIGITS digits."""
    return LongInteger(digits) if len(digits) > MAX_DIGITS else int(digits)


def read_drawing(body):
    """(grey float (H,W), step) of a /api/draw body, or a RequestError."""
    try:
        request = json.loads(body, parse_int=json_integer)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, f"malformed JSON: {e}") from None
    except RecursionError:  # arrays or objects nested thousands deep
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(request, dict):
        raise RequestError(400, "the body must be a JSON object {width, height, pixels}")
    missing = [k for k in ("width", "height", "pixels") if k not in request]
    if missing:
        raise RequestError(400, f"missing {', '.join(missing)}: send {{width, height, "
                           "pixels}")
    for key in ("width", "height", "step"):
        value = request.get(key)
        if key in request and (not isinstance(value, int | LongInteger)
                               or isinstance(value, bool)):
            raise RequestError(400, f"{key} must be an integer, not {shorten(value)}")
    width = integer(request["width"], "width", MIN_SIDE, MAX_SIDE)
    height = integer(request["height"], "height", MIN_SIDE, MAX_SIDE)
    step = integer(request.get("step", 0), "step", 0, MAX_STEP)
    if not isinstance(request["pixels"], str):
        raise RequestError(400, "pixels must be a base64 string of width*height bytes")
    try:
        pixels = base64.b64decode(request["pixels"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(400, f"pixels are not valid base64: {e}") from None
    if len(pixels) != width * height:
        raise RequestError(422, f"wrong shape: {len(pixels)} grey pixels sent for "
                           f"{width}x{height} = {width * height}")
    grey = np.frombuffer(pixels, np.uint8).reshape(height, width).astype(np.float64)
    return grey, step


class Handler(BaseHTTPRequestHandler):
    """One connection's requests (keep-alive: HTTP/1.1)."""

    protocol_version = "HTTP/1.1"
    server_version = "lenet-demo"
    timeout = TIMEOUT
    # headers and body go out in two writes: with Nagle's algorithm the body waits for
    # the client's delayed ACK of the headers, 40 ms on Linux, most of the answer's time
    disable_nagle_algorithm = True

    # ------------------------------------------------------------ replies
    def _send(self, status, body, kind="application/json", close=False, allow=None):
        if isinstance(body, dict):
            body = (json.dumps(body, separators=(",", ":")) + "\n").encode()
        self.send_response(status)
        if allow:
            self.send_header("Allow", allow)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code, message=None, explain=None):
        """The standard library's own refusals (a bad request line, headers too long,
        an unknown method) as the same one-line JSON, and the connection closed."""
        short = self.responses.get(code, ("error",))[0]
        if self.request_version == "HTTP/0.9":  # a request line it could not read: reply
            self.request_version = "HTTP/1.0"   # with a status line all the same
        self._send(code, {"error": cut(" ".join(str(message or short).split()), 60)},
                   close=True)

    def log_message(self, format, *args):
        pass    # no line on stderr per request

    # ----------------------------------------------------------- requests
    def _serve(self, work):
        """Answer one request with work()'s (status, body, type) or its RequestError. A
        client that hangs up or goes silent mid-request, while its body is read or its
        reply written (a refusal's or a fault's too), only closes the connection: no
        trace on the terminal, which is for faults of ours."""
        self.body_read = False
        try:
            try:
                status, body, kind = work()
                self._send(status, body, kind, close=self._unread())
            except RequestError as e:
                self._send(e.status, {"error": str(e)}, allow=e.allow,
                           close=self._unread() or e.status in (411, 413) or
                           self.close_connection)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:  # a fault of ours: one line to the client, the trace here
            traceback.print_exc(file=sys.stderr)
            self._send(500, {"error": "internal error in the demo server (its log has the "
                             "details)"}, close=True)

    def _unread(self):
        """Whether the request announced a body (on any method) that was not read: the
        connection then closes, or the body would be read as the next request."""
        return not self.body_read and ("Transfer-Encoding" in self.headers or
                                       self.headers.get("Content-Length", "0") != "0")

    def do_GET(self):
        self._serve(self._get)

    do_HEAD = do_GET    # _send leaves the body out

    def do_POST(self):
        self._serve(self._post)

    def _allowed(self, path):
        """The methods `path` answers (None: no such path)."""
        if path == "/api/draw":
            return "POST"
        if path in ("/api/info", "/api/mistake") or (
                not path.startswith("/api/") and (path == "/" or path[1:] in self.server.static)):
            return "GET, HEAD"
        return None

    def _wrong_method(self):
        """The refusal of a method `path` does not take: 405 with the Allow header, or
        404 for a path not served at all."""
        path = urlsplit(self.path).path
        allow = self._allowed(path)
        if allow is None:
            return RequestError(404, f"not found: {cut(path, 60)}")
        return RequestError(405, f"{self.command} is not served on {path}: it takes "
                            f"{' and '.join(allow.split(', '))}", allow=allow)

    def _refuse_method(self):
        def refuse():
            raise self._wrong_method()
        self._serve(refuse)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def _get(self):
        url = urlsplit(self.path)
        demo = self.server.demo
        if url.path == "/api/info":
            return 200, demo.info(), "application/json"
        if url.path == "/api/mistake":
            query = parse_qs(url.query, keep_blank_values=True)
            return 200, encode(self._mistake(demo, query)), "application/json"
        if url.path == "/api/draw":
            raise self._wrong_method()
        if url.path.startswith("/api/"):
            raise RequestError(404, f"no such API: {cut(url.path, 60)} (GET /api/info, "
                               "/api/mistake?k=K; POST /api/draw)")
        name = "index.html" if url.path == "/" else url.path[1:]
        if name not in self.server.static:
            raise RequestError(404, f"not found: {cut(url.path, 60)}")
        kind, body = self.server.static[name]
        return 200, body, kind

    def _mistake(self, demo, query):
        if demo.state != "ready":
            status = 503 if demo.state == "computing" else 404
            raise RequestError(status, "the test set's mistakes are being found; try again "
                               "in a few seconds" if status == 503 else
                               f"no test set, so no mistakes: {demo.reason}")
        if not len(demo.mistakes):
            raise RequestError(404, "the model makes no mistake on the test set")
        k = integer(query.get("k", [None])[-1], "k", 0, len(demo.mistakes) - 1)
        step = integer(query.get("step", ["0"])[-1], "step", 0, MAX_STEP)
        return demo.mistake(k, step)

    def _post(self):
        if urlsplit(self.path).path != "/api/draw":
            raise self._wrong_method()
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(411, "send the body with a Content-Length, not chunked")
        lengths = self.headers.get_all("Content-Length") or []
        if len(set(lengths)) > 1:  # which body is the request? (RFC 9112 6.3: an error)
            self.close_connection = True
            raise RequestError(400, f"{len(lengths)} different Content-Length headers")
        length = lengths[0].strip(" \t") if lengths else None   # RFC 9110: spaces around
        if length is None:
            raise RequestError(411, "a Content-Length is required")
        if not re.fullmatch(r"[0-9]+", length):   # RFC 9112: digits only, no sign
            self.close_connection = True
            raise RequestError(400, f"Content-Length {shorten(length)} is not a number")
        digits = len(length.lstrip("0"))
        length = int(length) if digits <= 15 else None   # None: past any body, unread
        if length is None or length > MAX_BODY:
            self._drain(length or 0)
            size = f"{length:,} bytes" if length else f"a number of {digits:,} digits"
            raise RequestError(413, f"request too large: {size}, at most {MAX_BODY:,} (a "
                               f"{MAX_SIDE}x{MAX_SIDE} drawing)")
        body = self.rfile.read(length)
        self.body_read = True
        if len(body) != length:
            self.close_connection = True
            raise RequestError(400, f"the body ended after {len(body)} of {length} bytes")
        grey, step = read_drawing(body)
        try:
            return 200, encode(self.server.demo.drawing(grey, step)), "application/json"
        except DrawingError as e:
            raise RequestError(422, str(e)) from None

    def _drain(self, length):
        """Read and drop a refused body of up to DRAIN bytes, so that the client, still
        sending it, reads the 413 instead of a reset connection."""
        while 0 < length <= DRAIN:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                break
            length -= len(chunk)


class DemoServer(ThreadingHTTPServer):
    """The demo's HTTP server around a lenet.demo.compute.Demo."""

    daemon_threads = True
    request_queue_size = 128   # many clients connecting at once are queued, not refused

    def __init__(self, demo, host="127.0.0.1", port=0):
        self.demo = demo
        self.static = static_files()
        super().__init__((host, port), Handler)

    def handle_error(self, request, client_address):
        """A client that hung up where no request catches it (while the next one was
        awaited, during a refusal's or a fault's reply, before the last flush) leaves no
        trace; anything else prints its own."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
