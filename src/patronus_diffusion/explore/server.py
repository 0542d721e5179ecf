"""The explorer's web server: the standard library's threaded HTTP server, JSON in and out.

Only the three files of ``explore/static/`` are served, by name from a fixed table (no path from a URL
ever reaches the file system). Everything else is the JSON API of :class:`~.session.ExplorerSession`:

    GET  /api/info                     model facts, slider ranges, the decode's guidance, the window's timesteps
    GET  /api/thumbs?offset=&count=    test images for the picking grid
    GET  /api/patches                  every prototype's nearest training patches (PNG strips), or why there are none
    POST /api/pick      {index}        pick a test image (encode + invert once)
    POST /api/upload?name=FILE         the raw bytes of an image file
    POST /api/prior     {seed}         sample s from the run's prior and decode it
    POST /api/render    {key, s, seq, client, window}   decode the picked image under s (timed by window = [LO, HI],
                                       fractions of T; absent: every step), re-encode it
    POST /api/interpolate {a, b, alpha}
    POST /api/counterfactual {key}     the picked image with the classifier's attribute flipped and the classifier's
                                       probability before and after (only when started with --classifier)

A user error (a bad upload, an unknown index, a number that should be an integer, JSON nested too deeply) is a
400 with ``{"error": message}`` that the page shows; the server keeps running. A bug is a 500, and its traceback
goes to the terminal. A client that hangs up before its answer is simply forgotten (no traceback).

Every connection has a timeout (``DEFAULT_TIMEOUT``, ``make_server(timeout=)``): a client that sends or reads nothing
for that long is dropped (a stalled body gets a 408 first), so stalled requests cannot pile up threads; at most
``max_connections`` are served at once and a connection beyond them gets a 503 at once.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, unquote, urlparse

from ..utils.errors import UserError
from .session import MAX_UPLOAD_BYTES, ExplorerSession

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/explorer.js": ("explorer.js", "text/javascript; charset=utf-8"),
          "/explorer.css": ("explorer.css", "text/css; charset=utf-8")}
MAX_JSON_BYTES = 256 << 10  # an API request is a few numbers per prototype: 256 KiB is room for ~20,000 prototypes
DEFAULT_TIMEOUT = 10.0
"""Seconds a connection may send or read nothing before it is dropped (a slider answer is computed while the socket
is quiet: this bounds a stalled client, not a slow model)."""
MAX_CONNECTIONS = 32
"""Connections served at once (a page keeps one request in flight); one beyond gets a 503 without a thread."""
DRAIN_BYTES = 64 << 20  # a too-large upload up to this size is read and answered; a larger one is cut off
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def static_file(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """Host headers the explorer answers: its loopback names (DNS-rebinding protection); None (any) when bound to a
    non-loopback address on purpose."""
    loop = {"127.0.0.1", "localhost", "::1"}
    if host not in loop and not host.startswith("127."):
        return None
    return {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]", host)}


def make_handler(session: ExplorerSession, quiet: bool = True, timeout: float | None = DEFAULT_TIMEOUT):
    class Handler(BaseHTTPRequestHandler):
        server_version = "patronus-explore"

        def handle(self):
            """Serve the connection; a client that hung up (or stalled until the timeout) is dropped quietly."""
            try:
                super().handle()
            except (ConnectionError, TimeoutError):
                self.close_connection = True

        def log_message(self, fmt, *args):  # requests are not logged unless asked (a slider sends many)
            if not quiet:
                sys.stderr.write("[explore] " + fmt % args + "\n")

        # ------------------------------------------------------------ responses
        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in SECURITY_HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, obj, status: int = 200) -> None:
            self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json")

        def _error(self, status: int, message: str) -> None:
            self._json({"error": message}, status)

        def _body(self, limit: int) -> bytes | None:
            """The request body, or None after answering 413 when it is larger than ``limit``."""
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise RequestError("the Content-Length header is not a number") from None
            if n < 0:
                raise RequestError("the Content-Length header is negative")
            if n > limit:
                self.close_connection = True
                left = n if n <= DRAIN_BYTES else 0  # read what was sent, so the browser sees the answer
                while left > 0:
                    left -= len(self.rfile.read(min(left, 1 << 16)) or b"x" * left)
                self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"the {'upload' if limit == MAX_UPLOAD_BYTES else 'request'} is {_size(n)}; "
                            f"the limit is {_size(limit)}")
                return None
            return self.rfile.read(n) if n else b""

        def _dispatch(self, fn) -> None:
            try:
                fn()
            except UserError as e:
                self._error(HTTPStatus.BAD_REQUEST, str(e))
            except ConnectionError:  # the client hung up: nobody to answer
                self.close_connection = True
            except TimeoutError:  # the client stalled while sending its body: tell it (if it still listens), drop it
                self.close_connection = True
                try:
                    self._error(HTTPStatus.REQUEST_TIMEOUT, f"nothing arrived for {self.timeout:g} s; send it again")
                except OSError:
                    pass
            except Exception as e:  # a bug: keep its traceback in the terminal, tell the page
                traceback.print_exc()
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(e).__name__}: {e}); "
                                                              "see the terminal running `patronus explore`")

        def _trusted(self) -> bool:
            """Refuse requests for another Host (DNS rebinding) and cross-site POSTs (another page in the browser)."""
            hosts = allowed_hosts(*self.server.server_address[:2])
            if hosts is not None and self.headers.get("Host", "") not in hosts:
                self._error(HTTPStatus.FORBIDDEN, "this explorer answers only on its own address (Host header)")
                return False
            origin = self.headers.get("Origin")
            if self.command == "POST" and origin and origin != f"http://{self.headers.get('Host', '')}":
                self._error(HTTPStatus.FORBIDDEN, "cross-site requests are refused")
                return False
            return True

        # ------------------------------------------------------------ routes
        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            if not self._trusted():
                return
            url = urlparse(self.path)
            if url.path in STATIC:
                name, ctype = STATIC[url.path]
                return self._send(200, static_file(name), ctype)
            if url.path == "/favicon.ico":
                return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            q = parse_qs(url.query)
            if url.path == "/api/info":
                return self._dispatch(lambda: self._json(session.info()))
            if url.path == "/api/thumbs":
                return self._dispatch(lambda: self._json(session.thumbnails(
                    _int(q, "offset", 0), _int(q, "count", 48))))
            if url.path == "/api/patches":
                return self._dispatch(lambda: self._json(session.patches()))
            self._error(HTTPStatus.NOT_FOUND, "not found")

        def do_POST(self):
            if not self._trusted():
                return
            url = urlparse(self.path)
            if url.path == "/api/upload":
                name = unquote(parse_qs(url.query).get("name", ["upload"])[0])[:120]

                def upload():
                    data = self._body(MAX_UPLOAD_BYTES)
                    if data is not None:
                        self._json(session.pick_upload(data, name))
                return self._dispatch(upload)
            routes = {"/api/pick": lambda a: session.pick_test(_integer(a, "index")),
                      "/api/prior": lambda a: session.sample_prior(_integer(a, "seed", 0)),
                      "/api/render": lambda a: session.render(_text(a, "key"), _numbers(a, "s"),
                                                              _integer(a, "seq", 0), _text(a, "client"),
                                                              _numbers(a, "window")),
                      "/api/interpolate": lambda a: session.interpolate(_text(a, "a"), _text(a, "b"),
                                                                        _number(a, "alpha")),
                      "/api/counterfactual": lambda a: session.counterfactual(_text(a, "key"))}
            if url.path not in routes:
                return self._error(HTTPStatus.NOT_FOUND, "not found")

            def call():
                if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                    raise RequestError("send the request as application/json")
                raw = self._body(MAX_JSON_BYTES)
                if raw is None:
                    return
                try:
                    args = json.loads(raw or b"{}")
                except RecursionError:
                    raise RequestError("the request body is nested too deeply to be an explorer request") from None
                except ValueError:  # not JSON, not UTF-8, or an integer beyond Python's digit limit
                    raise RequestError("the request body is not JSON the explorer can read") from None
                if not isinstance(args, dict):
                    raise RequestError("the request body must be a JSON object")
                self._json(routes[url.path](args))
            self._dispatch(call)

    Handler.timeout = timeout  # StreamRequestHandler applies it to the socket: each read and write waits this long
    return Handler


class RequestError(UserError):
    """A malformed API request."""


def _integer(args: dict, name: str, default: int | None = None) -> int:
    """A JSON integer (not a bool, a float such as 2.9, or a string)."""
    v = args.get(name, default)
    if v is None:
        raise RequestError(f"missing {name!r}")
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestError(f"{name!r} must be an integer, got {json.dumps(v)[:40]}")
    return v


def _number(args: dict, name: str) -> float:
    """A finite JSON number (not a bool or a string)."""
    v = args.get(name)
    if v is None:
        raise RequestError(f"missing {name!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RequestError(f"{name!r} must be a number, got {json.dumps(v)[:40]}")
    try:
        v = float(v)
    except OverflowError:
        raise RequestError(f"{name!r} is too large") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise RequestError(f"{name!r} must be a finite number")
    return v


def _numbers(args: dict, name: str) -> list:
    """A JSON list of numbers (bools and strings refused; finiteness and length are the session's to check)."""
    v = args.get(name)
    if v is None:
        return []
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v):
        raise RequestError(f"{name!r} must be a list of numbers")
    return v


def _text(args: dict, name: str) -> str:
    v = args.get(name, "")
    if not isinstance(v, str):
        raise RequestError(f"{name!r} must be a string")
    return v


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _int(q: dict, name: str, default: int) -> int:
    try:
        return int(q.get(name, [default])[0])
    except ValueError:
        raise RequestError(f"{name!r} must be an integer") from None


class ExplorerServer(ThreadingHTTPServer):
    """The threaded server with a bound on the connections served at once (each holds a thread)."""

    daemon_threads = True

    def __init__(self, address, handler, max_connections: int = MAX_CONNECTIONS):
        if max_connections < 1:
            raise RequestError(f"max_connections must be at least 1, got {max_connections}")
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            return self._refuse(request)
        try:
            super().process_request(request, client_address)  # starts the thread that gives the slot back
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request) -> None:
        """A 503 written from the accepting thread without waiting on the client, then the connection closed."""
        body = json.dumps({"error": f"the explorer is busy ({self.max_connections} connections open); "
                                    "try again in a moment"}).encode()
        head = (f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        try:
            request.settimeout(0.5)
            request.sendall(head + body)
            request.settimeout(0)
            request.recv(1 << 16)  # take what already arrived, so closing does not reset the answer away
        except OSError:
            pass
        self.shutdown_request(request)


def make_server(session: ExplorerSession, host: str = "127.0.0.1", port: int = 8765, quiet: bool = True,
                timeout: float | None = DEFAULT_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> ExplorerServer:
    """A threaded server bound to (host, port); port 0 picks a free one (``server.server_address``).

    ``timeout``: seconds a connection may stay silent (reading its request or its answer) before it is dropped;
    ``max_connections``: connections served at once, each on its own thread (more get a 503).
    """
    if timeout is not None and not timeout > 0:
        raise RequestError(f"the timeout must be a positive number of seconds, got {timeout}")
    cls = ExplorerServer
    if ":" in host:  # an IPv6 address
        cls = type("ExplorerServer6", (ExplorerServer,), {"address_family": socket.AF_INET6})
    try:
        server = cls((host, port), make_handler(session, quiet, timeout), max_connections)
    except OSError as e:
        raise RequestError(f"cannot serve on {host}:{port}: {e.strerror or e}; another explorer may be running "
                           f"there: pass --port 0 (any free port) or another --port") from None
    return server
