"""Running the app: :func:`serve` (the command's blocking server), :class:`BackgroundServer` (a real server
on a free loopback port in a thread: tests and the load benchmark) and :class:`BodyLimit` (request bodies
read whole up to a limit — 413 beyond it — so no request can make the server hold more)."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Optional

__all__ = ["BodyLimit", "BackgroundServer", "serve", "free_socket"]


class BodyLimit:
    """ASGI middleware: an HTTP request body over ``upload_bytes`` (``/api/edit…``) or ``json_bytes``
    (anything else) is answered 413 before the app sees it; a body within the limit is replayed whole."""

    def __init__(self, app: Any, json_bytes: int, upload_bytes: int) -> None:
        self.app, self.json_bytes, self.upload_bytes = app, json_bytes, upload_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        limit = self.upload_bytes if scope["path"].startswith("/api/edit") else self.json_bytes
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return await self._refuse(send, limit)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # later calls: the disconnect (or nothing until it comes)

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Any, limit: int) -> None:
        msg = json.dumps({"error": f"the request body is over {limit:,} bytes — send a smaller body or image"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(msg)).encode()),
                                (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": msg})


def free_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port chosen by the OS)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def _server(app: Any, log_level: str = "warning"):
    import uvicorn

    # at most 256 connections at once (503 beyond): with bodies read whole up to 1 MiB, memory stays bounded
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5, access_log=False, limit_concurrency=256)
    return uvicorn.Server(config)


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          ready: Optional[callable] = None) -> None:  # fmt: skip
    """Serve ``app`` on host:port until interrupted (Ctrl-C / SIGTERM stop it gracefully)."""
    sock = free_socket(host, port)
    if ready is not None:
        ready(sock.getsockname()[1])
    _server(app, log_level).run(sockets=[sock])


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` a real uvicorn server on 127.0.0.1 and a free port, in a
    daemon thread, stopped (and joined, bounded) on exit."""

    def __init__(self, app: Any, host: str = "127.0.0.1", start_timeout: float = 60.0) -> None:
        self.app, self.host, self.start_timeout = app, host, start_timeout
        self.server, self.thread, self.url = None, None, ""

    def __enter__(self) -> str:
        sock = free_socket(self.host)
        self.url = f"http://{self.host}:{sock.getsockname()[1]}"
        self.server = _server(self.app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(15)
