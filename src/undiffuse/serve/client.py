"""A small standard-library client of the server's API (tests, the load benchmark, scripts):
``Client(url).sample(model="fm", n=4, seed=0)`` → (status, headers, bytes); ``events`` reads a stream."""

from __future__ import annotations

import http.client
import json
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit

__all__ = ["Client", "Answer", "multipart"]


class Answer:
    """One HTTP answer: status, headers (lower-case names) and body; ``json()`` parses the body."""

    def __init__(self, status: int, headers: dict, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    """A multipart/form-data body of ``fields`` (name → value) and ``files`` (name → bytes) and its content type."""
    boundary = "undiffuse-form-boundary-7d1c"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, data in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\nContent-Type: image/png\r\n\r\n'
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Client:
    """Requests to a server at ``url`` (e.g. http://127.0.0.1:8000), one connection per request."""

    def __init__(self, url: str, timeout: float = 300.0) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(self, method: str, path: str, body: Optional[bytes] = None, content_type: str = "application/json") -> Answer:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers={"Content-Type": content_type} if body is not None else {})
            r = conn.getresponse()
            return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post_json(self, path: str, body: Any) -> Answer:
        return self.request("POST", path, json.dumps(body).encode())

    def sample(self, **body: Any) -> Answer:
        return self.post_json("/api/sample", body)

    def edit(self, fields: dict, image: bytes, mask: Optional[bytes] = None) -> Answer:
        data, ctype = multipart(fields, {"image": image, **({"mask": mask} if mask is not None else {})})
        return self.request("POST", "/api/edit", data, ctype)

    def events(self, path: str, body: bytes, content_type: str = "application/json") -> Iterator[tuple[str, dict]]:
        """(event, data) of a server-sent-event answer, as they arrive; closing the iterator hangs up."""
        conn = self.connection()
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": content_type})
            r = conn.getresponse()
            if r.status != 200:
                yield "error", {"status": r.status, **json.loads(r.read() or b"{}")}
                return
            event, data = "message", ""
            for raw in r:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        yield event, json.loads(data)
                    event, data = "message", ""
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data += line[6:]
        finally:
            conn.close()
