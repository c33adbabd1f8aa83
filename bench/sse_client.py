"""B2's client: a small HTTP/1.1 client over one keep-alive socket that POSTs JSON and reads a Server-Sent Events
response frame by frame as its bytes arrive. Like B5's load generator it is deliberately small (a socket, no HTTP
library), so that the time it reports is the server's and not the client's parsing: a general-purpose client
(httpx, `iter_lines`) added time of its own before it saw the first token frame (bench/RESULTS.md, B2).

    client = SseClient("127.0.0.1", port, {"Authorization": "Token …"})
    for seconds, event, data in client.post("/api/v1/chat/", {"message": "hi", "stream": True}):
        ...   # seconds from sending the request; event None for a frame without an `event:` line
"""
from __future__ import annotations

import json
import socket
import time
from typing import Iterator


class SseError(RuntimeError):
    """The server answered with something other than a 200 event stream."""


class SseClient:
    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None, timeout: float = 30):
        self.host, self.port, self.timeout = host, port, timeout
        self.headers = {"Accept": "text/event-stream", **(headers or {})}
        self._socket: socket.socket | None = None
        self._reader = None
        self.headers_at = 0.0  # seconds from sending the last request to its response's headers

    def _connect(self) -> None:
        self._socket = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = self._socket.makefile("rb")

    def post(self, path: str, body: dict) -> Iterator[tuple[float, str | None, str]]:
        """(seconds since the request was sent, event, data) for every frame, as it arrives, until the server
        ends the response. The connection is kept for the next request."""
        if self._socket is None:
            self._connect()
        payload = json.dumps(body).encode()
        head = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                   f"{head}Content-Length: {len(payload)}\r\n\r\n").encode() + payload
        started = time.perf_counter()
        self._socket.sendall(request)
        status, headers = self._head()
        self.headers_at = time.perf_counter() - started
        if status != 200 or "chunked" not in headers.get("transfer-encoding", ""):
            length = int(headers.get("content-length", "0"))
            text = self._reader.read(length)[:500] if length else b""
            self.close()
            raise SseError(f"{path} answered {status}: {text!r}")
        pending = b""
        for chunk in self._chunks():
            pending = (pending + chunk).replace(b"\r\n", b"\n")  # SSE lines may end in CRLF (the peer's do)
            while b"\n\n" in pending:
                frame, pending = pending.split(b"\n\n", 1)
                event, data = None, []
                for line in frame.decode().split("\n"):
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].lstrip())
                yield time.perf_counter() - started, event, "\n".join(data)

    def _head(self) -> tuple[int, dict[str, str]]:
        status = int(self._reader.readline().split()[1])
        headers = {}
        while (line := self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        return status, headers

    def _chunks(self) -> Iterator[bytes]:
        """The response's chunks, each as soon as it is read whole."""
        while True:
            size = int(self._reader.readline().split(b";")[0], 16)
            if size == 0:
                self._reader.readline()  # the empty trailer
                return
            chunk = self._reader.read(size)
            self._reader.readline()
            yield chunk

    def close(self) -> None:
        if self._socket is not None:
            self._reader.close()
            self._socket.close()
        self._socket = self._reader = None
