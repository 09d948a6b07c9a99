"""The worker's `/metrics` server: prometheus-client's WSGI app, on a port a second worker may
share (the dev stack's broker replacement runs two workers for a moment).

While two workers share the port the kernel spreads scrapes between them, and each process's
counters drop to the other's: Prometheus would read every switch as a counter reset. So a worker
that shares its port stops serving on SIGHUP, which the dev stack sends the old worker once the
new one serves: the port keeps answering, from one process at a time."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not worth a log line each."""


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per scrape, as prometheus-client's own server."""

    daemon_threads = True
    share_port = False

    def server_bind(self) -> None:
        if self.share_port:
            # Both sockets must set it, and the kernel lets only the same user share a port.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def serve_metrics(
    host: str, port: int, share_port: bool = False, registry: CollectorRegistry = REGISTRY
) -> WSGIServer:
    """Serve `registry` on http://host:port/ in a daemon thread; OSError if it cannot bind."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = type(
        "MetricsServer", (_Server,), {"share_port": share_port, "address_family": family}
    )
    server: WSGIServer = make_server(
        host, port, make_wsgi_app(registry), server_class, handler_class=_Quiet
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def stop_serving(server: WSGIServer) -> None:
    """Close the listener (the port stays with the other worker sharing it); returns at once,
    the serving thread ends within its poll interval."""

    def stop() -> None:
        server.shutdown()
        server.server_close()
        log.info("stopped serving /metrics: the port is left to the worker sharing it")

    threading.Thread(target=stop, name="metrics-stop", daemon=True).start()


def stop_serving_on_hangup(loop: asyncio.AbstractEventLoop, server: WSGIServer) -> None:
    """SIGHUP stops serving `/metrics` (the worker's other signals are the framework's)."""
    loop.add_signal_handler(signal.SIGHUP, stop_serving, server)
