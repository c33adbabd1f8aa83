"""B13: what OpenTelemetry export adds to a chat turn. Two daphne processes of this checkout on one PostgreSQL + Redis
database, one exporting traces (batch span processor, OTLP/HTTP to a receiver on loopback: tests/otlp_receiver.py,
decoding every span) and one with tracing off; sequential turns alternate between them turn by turn (B5's chat
turn, the `local` provider), 100 ms apart (cold) and 10 ms apart (warm). Target: at most 0.5 ms more at p50.

First, in this process, what a chat turn's spans cost in CPU: the request's span (its traceparent extracted), the
run's, its node's and its LLM call's with their GenAI attributes, made through workflows.run_spans as a run makes
them and exported by the same batch processor and OTLP exporter to the receiver; CPU time of the whole process (the
exporter's thread included) per turn. On a loaded machine this figure holds better than the latencies' difference.

    .venv/bin/python -m bench.b13_tracing [--reps 3] [--count 60] [--spans 5000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time
from decimal import Decimal
from types import SimpleNamespace

from bench.ab_turns import alternated
from bench.chatter_servers import Server, bench_token, chatter_database
from bench.machine import machine_note
from bench.processes import HOST, PYTHON, ROOT, BenchRun, free_port, log, run_main, wait_listening
from bench.services import start_services
from bench.stats import median, ms
from tests.otlp_receiver import OTLPReceiver


def daphne(run: BenchRun, database, label: str, extra: dict) -> Server:
    port = free_port()
    env = {**database.env, **extra}
    log_name = f"daphne-{label}-{port}.log"
    process = run.spawn([PYTHON, "-m", "daphne", "-b", HOST, "-p", str(port), "chatter_project.asgi:application"],
                        env=env, log_name=log_name)
    wait_listening(process, port, run.tmp / log_name, what=f"daphne ({label})")
    log(f"daphne ({label}) on {HOST}:{port}, pid {process.pid}")
    return Server(process=process, port=port, log_path=run.tmp / log_name, env=env)


RECEIVER = ("import sys, time; from tests.otlp_receiver import OTLPReceiver; r = OTLPReceiver().start(); "
            "print(r.endpoint, flush=True); sys.stdin.read(); print(len(r.spans), flush=True)")


def span_cost(turns: int) -> tuple[float, float, int]:
    """CPU seconds per chat turn's spans on the turn's own thread (what its path pays) and in the whole process (the
    exporter's thread too), exported (see the module's docstring) to a receiver in a process of its own (its decoding
    is not counted); and how many spans it received."""
    receiver = subprocess.Popen([PYTHON, "-c", RECEIVER], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.stdout.readline().strip()
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(turns * 4 + 1000)  # every span exported, none dropped
    from opentelemetry import propagate, trace

    from core.otel import tracer, tracing_setup
    from engine.runtime import CallStarted, LLMCall
    from engine.usage import Usage
    from workflows.run_spans import RunSpans

    tracing_setup(["otlp"])
    execution = SimpleNamespace(template_id=1, template=SimpleNamespace(key="universal_chat"), definition_id=None,
                                conversation_id="c0ffee", pk="e1", workflow_type="chat", mode="sync",
                                provider="local", model="chatter-local", trace_context={}, status="completed",
                                prompt_tokens=11, completion_tokens=5, total_tokens=16, cost=Decimal("0.0001"),
                                llm_calls=1, tool_calls=0, error_message="", error_type="")
    node = SimpleNamespace(id="respond", type="model")
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    usage = Usage(prompt_tokens=11, completion_tokens=5, cost=Decimal("0.0001"))

    def turn() -> None:
        with tracer().start_as_current_span("POST", context=propagate.extract(headers), kind=trace.SpanKind.SERVER,
                                            attributes={"http.request.method": "POST", "url.path": "/api/v1/chat/"}):
            execution.trace_context = {}
            propagate.inject(execution.trace_context)
            spans = RunSpans(execution)
            with spans.current():
                spans.node_started(1, node)
                spans.call_started(1, CallStarted("local", "chatter-local", 11, lambda: {}, 256, temperature=0.7))
                spans.call_ended(1, LLMCall("local", "chatter-local", "chatter-local", usage, 3, finish_reason="stop"))
                spans.node_ended(1, status="completed", error="", usage={"total_tokens": 16, "cost": usage.cost})
            spans.ended(execution)

    for _ in range(200):
        turn()
    began, began_here = time.process_time(), time.thread_time()
    for _ in range(turns):
        turn()
    on_path = (time.thread_time() - began_here) / turns
    trace.get_tracer_provider().force_flush()
    spent = (time.process_time() - began) / turns
    received, _ = receiver.communicate("", timeout=60)
    return on_path, spent, int(received.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--spans", type=int, default=5000, help="turns' spans made to measure their CPU cost")
    args = parser.parse_args()
    receiver = OTLPReceiver().start()
    try:
        on_path, cost, received = span_cost(args.spans)
        print(f"B13: one chat turn's spans (request, run, node, LLM call), exported over OTLP/HTTP: "
              f"{on_path * 1000:.3f} ms of CPU on the turn's thread, {cost * 1000:.3f} ms in the process with the "
              f"exporter's thread ({args.spans} turns after 200, {received} spans received)", flush=True)
        with BenchRun("b13-tracing") as run:
            services = start_services(run)
            database = chatter_database(run, "postgres", DATABASE_URL=services.database_url,
                                        REDIS_URL=services.redis_url, CHATTER_LOCAL_TOKEN_DELAY_MS=0)
            servers = {"off": daphne(run, database, "off", {}),
                       "on": daphne(run, database, "on", {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})}
            token = bench_token(servers["on"], database)
            targets = {name: f"{HOST}:{server.port}" for name, server in servers.items()}
            print(f"\nB13: a chat turn with traces exported (on) and off, one daphne each, PostgreSQL + Redis; "
                  f"sequential medians over {args.count} alternated turns, ms")
            for rep in range(1, args.reps + 1):
                line = [f"rep {rep}:"]
                for pause in (0.1, 0.01):
                    latencies = asyncio.run(alternated(targets, token, count=args.count, pause=pause))
                    off, on = median(latencies["off"]), median(latencies["on"])
                    line.append(f"{'cold' if pause > 0.05 else 'warm'} off {ms(off)} on {ms(on)} ({ms(on - off)})")
                print("  ".join(line), flush=True)
            print(f"spans received: {len(receiver.spans)}")
            print(machine_note())
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    run_main(main)
