"""The live page over HTTP: one static page and a server-sent-events stream.

Routes: ``/`` (the page), ``/static/<file>`` (its script and style, shipped inside the
package), ``/api/state[?stream=S]`` (meta, history and counters as JSON) and
``/events[?stream=S]`` (``text/event-stream``: ``meta``, then ``points`` and
``counters`` events as they come). Threads only: the daemon's loop never waits on it.
"""
from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from runtime.errors import ConfigError
from runtime.live_feed import LiveHub

log = logging.getLogger(__name__)

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
KEEPALIVE = 10.0  # seconds between SSE comments on a quiet stream
SEND_TIMEOUT = 5.0  # a client whose socket takes no data for this long is dropped


def static_file(name: str) -> bytes:
    return resources.files("runtime").joinpath("live_static", name).read_bytes()


def sse(event: str, data) -> bytes:
    """One server-sent event: ``event: NAME`` and one ``data:`` line of compact JSON."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    server_version = "stepwise-live"
    protocol_version = "HTTP/1.1"
    hub: LiveHub  # set on the subclass made per server

    def log_message(self, fmt, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        stream = (parse_qs(url.query).get("stream") or [None])[0] or None
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, STATIC["index.html"], static_file("index.html"))
        elif url.path.startswith("/static/") and url.path[8:] in STATIC:
            self._send(HTTPStatus.OK, STATIC[url.path[8:]], static_file(url.path[8:]))
        elif url.path == "/api/state":
            body = json.dumps(self.hub.snapshot(stream), separators=(",", ":")).encode()
            self._send(HTTPStatus.OK, "application/json", body)
        elif url.path == "/events":
            self._events(stream)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, status: HTTPStatus, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _events(self, stream: str | None) -> None:
        client = self.hub.subscribe(stream)
        if client is None:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", b"too many viewers\n")
            return
        try:
            self.connection.settimeout(SEND_TIMEOUT)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(sse("state", self.hub.snapshot(stream)))
            self.wfile.flush()
            while not self.server.stopping.is_set():
                if not client.wake.wait(KEEPALIVE):
                    self.wfile.write(b": keepalive\n\n")
                client.wake.clear()
                while client.queue:
                    self.wfile.write(sse(*client.queue.popleft()))
                self.wfile.flush()
        except OSError as e:  # the viewer went away or stopped reading
            log.debug("live viewer %s left: %s", self.address_string(), e)
        finally:
            self.hub.unsubscribe(client)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    stopping: threading.Event


class LiveServer:
    """``LiveHub`` + an HTTP server on ``host:port``, each on its own thread."""

    def __init__(self, hub: LiveHub):
        self.hub = hub
        handler = type("Handler", (_Handler,), {"hub": hub})
        try:
            self.httpd = _Server((hub.opts.host, hub.opts.port), handler)
        except OSError as e:
            raise ConfigError(f"--http {hub.opts.host}:{hub.opts.port}: cannot listen: {e.strerror}") from None
        self.httpd.stopping = threading.Event()
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="live-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def start(self) -> "LiveServer":
        self.hub.start()
        self._thread.start()
        log.info("live view on %s", self.url)
        return self

    def stop(self) -> None:
        self.httpd.stopping.set()
        for client in list(self.hub.clients):
            client.wake.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.hub.stop()


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (loopback) -> (host, port); a clear error else."""
    host, sep, port = text.rpartition(":")
    host = (host or "127.0.0.1") if sep else "127.0.0.1"
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8321")
    return host, int(port)


def open_live_view(daemon, engine, address: tuple[str, int]) -> LiveServer:
    """Start the live view on ``address`` for ``daemon`` (anything with ``observe``:
    ``runtime.daemon.Daemon``, ``runtime.multiserve.MultiDaemon``) whose model runs in
    ``engine``, and make it the daemon's observer; the caller stops it."""
    from runtime.live_feed import LiveFeed, LiveMeta, LiveOptions

    out = engine.contract.output
    feed = LiveFeed(LiveOptions(host=address[0], port=address[1]))
    meta = LiveMeta(tuple(engine.contract.input.feature_names), tuple(out.labels), out.kind, out.threshold,
                    engine.variant, str(engine.policy))
    server = LiveServer(LiveHub(feed, meta)).start()
    daemon.observe(feed.observe)
    return server
