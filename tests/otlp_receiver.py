"""A real OTLP/HTTP trace receiver on loopback for the tests: POST /v1/traces with an ExportTraceServiceRequest
(protobuf, as opentelemetry-exporter-otlp-proto-http sends it, gzip or not), decoded with opentelemetry-proto;
the spans it received, flattened, in `spans`."""
from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    service: str
    start_ns: int
    end_ns: int


class OTLPReceiver:
    """`refusing`: a collector that takes no span: it holds each export until `release` is set, then answers it
    400 (which the exporter does not retry); what it was sent is still in `spans`, and each export in `exports`."""

    def __init__(self, *, refusing: bool = False) -> None:
        self.spans: list[ReceivedSpan] = []
        self.exports = 0
        self.headers: list[dict] = []  # each export's request headers (lower-case names)
        self.lock = threading.Lock()
        self.refusing, self.release = refusing, threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    receiver.headers.append({name.lower(): value for name, value in self.headers.items()})
                receiver.add(request)
                if receiver.refusing:
                    receiver.release.wait(120)
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> OTLPReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def add(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(ReceivedSpan(
                        name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(), kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes}, status_code=span.status.code,
                        status_message=span.status.message,
                        service=resource.get("service.name", ""), start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano))
        with self.lock:
            self.spans.extend(received)
            self.exports += 1

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def wait_for(self, trace_id: str, *names_starting: str, timeout_s: float = 20) -> list[ReceivedSpan]:
        """The trace's spans once one span starts with each of `names_starting` (AssertionError at the deadline)."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.of_trace(trace_id)
            missing = [prefix for prefix in names_starting if not any(s.name.startswith(prefix) for s in spans)]
            if not missing:
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"trace {trace_id}: no span {missing} in {[s.name for s in spans]}")
            time.sleep(0.02)
