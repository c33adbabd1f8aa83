"""B10: what a run costs as what it carries grows, in one process on SQLite (B1's setting: the local model, no
token delay). Target (B10, bench/README.md): cost grows with what the run reads and does, not with history: at
most ×1.2.

- conversation: a sync chat turn of universal_chat ('hello there') in a conversation of 1,000 messages (made by
  500 turns before the timing) against one that opens a new conversation, and against one in a short conversation
  (20 messages: its memory window full, as the long one's), interleaved. The ratio is the long conversation's turn
  over the new one's; the long over the short is what history alone adds.
- graph: a sync turn of a workflow definition whose model node follows a chain of `variable` nodes, 50 nodes
  against 5, each beside the same compiled graph run bare (LangGraph, the nodes and the model with hooks that record
  nothing), interleaved. The ratio is the engine's growth (50 nodes over 5) over the bare graph's own growth: what
  the recording adds per node, against what the graph itself does per node. Also the statements each run issues.

    .venv/bin/python -m bench.b10_scaling [--reps 60] [--messages 1000]
"""
from __future__ import annotations

import argparse
import random
import time

from bench import chatter_calls
from bench.chatter_servers import chatter_database
from bench.machine import machine_note
from bench.processes import BenchRun, log, run_main
from bench.stats import median, ms, table

TARGET = 1.2
MESSAGE = "hello there"
SIZES = (5, 50)


def chain_graph(nodes: int) -> dict:
    """start, `nodes - 3` variable nodes, model, end: a linear definition of `nodes` nodes."""
    middle = [{"id": f"v{i}", "type": "variable",
               "config": {"variable_name": f"x{i % 4}", "operation": "set", "value": i}} for i in range(nodes - 3)]
    chain = [{"id": "start", "type": "start"}, *middle, {"id": "model", "type": "model"}, {"id": "end", "type": "end"}]
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(chain, chain[1:])]
    return {"nodes": chain, "edges": edges}


class Graphs:
    """A definition of each size, and its compiled graph run bare with the config the engine resolved for it."""

    def __init__(self, user) -> None:
        from engine.compile import MAX_STEPS, graph_compile
        from engine.graph import parse_graph
        from workflows.services.definitions import definition_create

        self.user, self.max_steps = user, MAX_STEPS
        self.definitions, self.compiled, self.configs = {}, {}, {}
        for size in SIZES:
            graph = chain_graph(size)
            self.definitions[size] = definition_create(owner=user, name=f"b10 chain of {size}", **graph)
            self.compiled[size] = graph_compile(parse_graph(graph))

    def engine(self, size: int):
        from workflows.services.run_requests import ChatRequest
        from workflows.services.runs import execution_run_now

        return execution_run_now(ChatRequest(owner=self.user, message=MESSAGE, config={},
                                             definition_id=self.definitions[size].pk))

    def bare(self, size: int):
        from langchain_core.messages import HumanMessage

        from engine.hooks import NullHooks
        from engine.runtime import RunContext

        ctx = RunContext(config=self.configs[size], hooks=NullHooks())
        state = {"messages": [HumanMessage(MESSAGE)], "variables": {}, "errors": []}
        return self.compiled[size].invoke(state, config={"configurable": {"chatter": ctx},
                                                         "recursion_limit": self.max_steps})


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def statements_of(fn) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        fn()
    return sum(1 for query in queries.captured_queries
               if not query["sql"].startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=60, help="timed repetitions of each side (default 60)")
    parser.add_argument("--messages", type=int, default=1000, help="the long conversation's messages (default 1000)")
    args = parser.parse_args()

    with BenchRun("b10") as run:
        database = chatter_database(run, "sqlite", CHATTER_LOCAL_TOKEN_DELAY_MS=0)
        chatter_calls.django_setup(database.env)
        from conversations.models import Conversation

        user = chatter_calls.bench_user()
        log(f"a conversation of {args.messages} messages: {args.messages // 2} turns")
        long_id = chatter_calls.sync_turn(user=user, message=MESSAGE).conversation_id
        short_id = chatter_calls.sync_turn(user=user, message=MESSAGE).conversation_id
        for turn in range(args.messages // 2 - 1):
            chatter_calls.sync_turn(user=user, message=MESSAGE, conversation_id=long_id)
            if turn < 9:
                chatter_calls.sync_turn(user=user, message=MESSAGE, conversation_id=short_id)
        graphs = Graphs(user)
        for size in SIZES:  # the bare side runs with the very config the engine resolved
            execution = graphs.engine(size)
            if execution.status != "completed" or execution.llm_calls != 1:
                raise RuntimeError(f"the {size}-node definition's run: {execution.status}, {execution.error_message}")
            graphs.configs[size] = execution.config
            if execution.node_executions.count() != size:
                raise RuntimeError(f"the {size}-node run recorded {execution.node_executions.count()} nodes")
            graphs.bare(size)

        sides = {
            "new conversation": lambda: chatter_calls.sync_turn(user=user, message=MESSAGE),
            "short conversation": lambda: chatter_calls.sync_turn(user=user, message=MESSAGE, conversation_id=short_id),
            "long conversation": lambda: chatter_calls.sync_turn(user=user, message=MESSAGE, conversation_id=long_id),
            **{f"engine, {size} nodes": (lambda size=size: graphs.engine(size)) for size in SIZES},
            **{f"bare, {size} nodes": (lambda size=size: graphs.bare(size)) for size in SIZES},
        }
        for fn in sides.values():  # warm-up
            for _ in range(5):
                fn()
        log(f"{args.reps} timed repetitions of {len(sides)} sides, interleaved in a new order each time")
        times: dict[str, list[float]] = {name: [] for name in sides}
        order, shuffle = list(sides), random.Random(10)
        for _ in range(args.reps):
            shuffle.shuffle(order)
            for name in order:
                times[name].append(timed(sides[name]))
        statements = {name: statements_of(sides[name]) for name in sides if not name.startswith("bare")}
        messages = Conversation.objects.get(pk=long_id).message_count
        short_messages = Conversation.objects.get(pk=short_id).message_count

        med = {name: median(values) for name, values in times.items()}
        print(f"\nB10: {args.reps} interleaved repetitions of each side, SQLite, local model (ms)")
        print(table([[name, ms(med[name]), ms(sorted(times[name])[int(len(times[name]) * 0.95) - 1]),
                      statements.get(name, "-")] for name in sides],
                    ["side", "median", "p95", "statements a run"]))
        conversation = med["long conversation"] / med["new conversation"]
        history = med["long conversation"] / med["short conversation"]
        engine_growth = med["engine, 50 nodes"] / med["engine, 5 nodes"]
        bare_growth = med["bare, 50 nodes"] / med["bare, 5 nodes"]
        per_node = ((med["engine, 50 nodes"] - med["bare, 50 nodes"]) - (med["engine, 5 nodes"] - med["bare, 5 nodes"])
                    ) / (SIZES[1] - SIZES[0])
        print(f"\nconversation: a turn in a conversation of {messages} messages over one in a new conversation: "
              f"x{conversation:.2f} (target <= x{TARGET}: {'met' if conversation <= TARGET else 'not met'}); "
              f"over one in a conversation of {short_messages}: x{history:.2f}")
        print(f"graph: the engine's run of 50 nodes over 5, x{engine_growth:.2f}, against the bare graph's "
              f"x{bare_growth:.2f}: x{engine_growth / bare_growth:.2f} (target <= x{TARGET}: "
              f"{'met' if engine_growth / bare_growth <= TARGET else 'not met'}); the engine adds "
              f"{ms(per_node, 3)} ms a node over the bare graph's own")
        print(machine_note())
    return 0


if __name__ == "__main__":
    run_main(main)
