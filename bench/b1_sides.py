"""B1's compared sides, in one process: the bare compiled graph (with and without a continuing conversation's
history) and sync chat turns through the services (new and continuing conversations), all through
bench.chatter_calls; plus garbage-collector pauses charged to the side that was running."""
from __future__ import annotations

import time
from collections import defaultdict

from bench import chatter_calls
from bench.processes import log

KINDS = {"tool": "What is 12*7?", "plain": "hello there"}
VARIANTS = ("bare", "bare+hist", "new", "continuing")
ENGINE = ("new", "continuing")
WARMUP = 10


class GcPauses:
    """A gc.callbacks entry: the collector's pauses, summed per side."""

    def __init__(self) -> None:
        self.side = None
        self.total: dict = defaultdict(float)
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.side is not None:
            self.total[self.side] += time.perf_counter() - self._started


class Sides:
    """Everything the turns need, set up once (after Django is set up)."""

    def __init__(self) -> None:
        self.chat = chatter_calls.BareChat()
        self.user = chatter_calls.bench_user()
        self.conversations: dict[str, object] = {}  # kind -> the continuing conversation's id
        self.history: dict[str, list] = {}  # kind -> what that conversation's memory reads (for bare+hist)

    def bare(self, message: str, history: list | None = None) -> tuple[float, float, dict]:
        """(wall s, this thread's CPU s, final state) of one invoke of the compiled graph."""
        c0, t0 = time.thread_time(), time.perf_counter()
        state, _ = self.chat.invoke(message, history)
        return time.perf_counter() - t0, time.thread_time() - c0, state

    def engine(self, message: str, conversation_id=None) -> tuple[float, float, object]:
        """(wall s, CPU s, ended execution) of one sync chat turn."""
        c0, t0 = time.thread_time(), time.perf_counter()
        execution = chatter_calls.sync_turn(user=self.user, message=message, conversation_id=conversation_id)
        return time.perf_counter() - t0, time.thread_time() - c0, execution

    def side(self, kind: str, variant: str) -> dict:
        message = KINDS[kind]
        if variant == "bare":
            wall, cpu, _ = self.bare(message)
            return {"wall": wall, "cpu": cpu}
        if variant == "bare+hist":
            wall, cpu, _ = self.bare(message, self.history[kind])
            return {"wall": wall, "cpu": cpu}
        conversation_id = self.conversations[kind] if variant == "continuing" else None
        wall, cpu, execution = self.engine(message, conversation_id)
        if execution.status != "completed":
            raise RuntimeError(f"{kind}/{variant}: the turn ended {execution.status}: {execution.error_message}")
        return {"wall": wall, "cpu": cpu}

    def prepare(self) -> None:
        """Warm every path (compile cache, imports, statement caches), start one continuing conversation per kind,
        and check that both sides do the same work."""
        for kind, message in KINDS.items():
            _, _, first = self.engine(message)
            self.conversations[kind] = first.conversation_id
            if not self.chat.same_graph_as(first.graph):
                raise RuntimeError("the engine did not run the compiled graph the bare side invokes")
            _, _, state = self.bare(message)
            bare_text, engine_text = self.chat.reply(state), first.output_data["content"]
            if bare_text != engine_text:
                raise RuntimeError(f"bare and engine answered differently: {bare_text!r} vs {engine_text!r}")
            expected_tools = 1 if kind == "tool" else 0
            if first.tool_calls != expected_tools or first.llm_calls != 1 + expected_tools:
                raise RuntimeError(f"{kind}: {first.tool_calls} tool calls, {first.llm_calls} LLM calls")
            log(f"{kind}: {message!r} -> {engine_text!r} ({first.llm_calls} LLM calls, {first.tool_calls} tool calls)")
        for rep in range(WARMUP):
            for kind in KINDS:
                for variant in VARIANTS:
                    if variant == "bare+hist" and kind not in self.history:
                        continue
                    self.side(kind, variant)
                if kind not in self.history and rep >= 5:
                    # The continuing conversation has > 10 messages by now: memory reads a full window from here on.
                    self.history[kind] = chatter_calls.conversation_history(self.conversations[kind],
                                                                            self.chat.memory_window)
