"""B6's data set: conversations, runs, LLM calls and messages written with COPY, each row what the engine would
have written (an assistant message carries its run's tokens and cost, conversations carry their sums), priced
as the engine prices calls (bench.chatter_calls). Models are reached by name (django.apps), their columns from
their fields, so columns added later with defaults need nothing here."""
from __future__ import annotations

import random
import time
import uuid
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

from bench import chatter_calls
from bench.processes import log

TURNS_PER_CONVERSATION = 10
MODELS = [  # provider, model, share of conversations
    ("local", "local-echo-1", 0.40),
    ("openai", "gpt-4o-mini", 0.30),
    ("openai", "gpt-4o", 0.15),
    ("anthropic", "claude-3-5-haiku-latest", 0.10),
    ("openai", "gpt-4.1", 0.05),
]


class RunUsage:
    """One run's token and cost totals over its LLM calls."""

    def __init__(self) -> None:
        self.prompt_tokens = self.completion_tokens = self.cached_prompt_tokens = 0
        self.cost = Decimal("0")

    def add(self, prompt: int, completion: int, cached: int, cost: Decimal) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.cached_prompt_tokens += cached
        self.cost += cost

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Copier:
    """COPY rows of one model: the varying columns per row, every other concrete column at its field default
    (prepared once). Generic over the models' fields, so columns added later with defaults need nothing here."""

    def __init__(self, model, varying: tuple[str, ...]):
        from django.db import connection

        fields = [f for f in model._meta.concrete_fields if not (f.primary_key and f.get_internal_type().endswith(
            "AutoField"))]
        by_attname = {f.attname: f for f in fields}
        self.varying = varying
        self.constant_fields = [f for f in fields if f.attname not in varying]
        self.constants = tuple(f.get_db_prep_save(f.get_default(), connection) for f in self.constant_fields)
        columns = [by_attname[name].column for name in varying] + [f.column for f in self.constant_fields]
        quote = connection.ops.quote_name
        self.sql = f"COPY {quote(model._meta.db_table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
        self.rows: list[tuple] = []
        self.written = 0

    def add(self, *values) -> None:
        self.rows.append(values)

    def flush(self, cursor) -> None:
        if not self.rows:
            return
        with cursor.copy(self.sql) as copy:
            for row in self.rows:
                copy.write_row(row + self.constants)
        self.written += len(self.rows)
        self.rows.clear()


def load(*, messages: int, users: int, days: int, seed: int = 6) -> dict:
    """Write the data set; returns what was written and how long it took."""
    from django.apps import apps
    from django.contrib.auth import get_user_model
    from django.db import connection

    Conversation, Message = apps.get_model("conversations", "Conversation"), apps.get_model("conversations", "Message")
    LLMCall = apps.get_model("workflows", "LLMCall")
    WorkflowExecution = apps.get_model("workflows", "WorkflowExecution")
    WorkflowTemplate = apps.get_model("workflows", "WorkflowTemplate")

    rng = random.Random(seed)
    started = time.monotonic()
    user_model = get_user_model()
    owners = list(user_model.objects.bulk_create(
        [user_model(username=f"user{n:04d}", password="!") for n in range(users)]))
    owner_ids = [user.pk for user in owners]
    templates = list(WorkflowTemplate.objects.filter(is_builtin=True).order_by("key").values_list("pk", "key"))
    chat = next(pk for pk, key in templates if key == "universal_chat")
    prices = {(p, m): chatter_calls.call_price(p, m) for p, m, _ in MODELS}
    now = datetime.now(dt_timezone.utc).replace(microsecond=0)
    first_day = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0)
    conversations_n = messages // (2 * TURNS_PER_CONVERSATION)

    conversations = Copier(Conversation, ("id", "owner_id", "title", "status", "created_at", "updated_at",
                                          "last_message_at", "message_count", "last_sequence", "prompt_tokens",
                                          "completion_tokens", "total_tokens", "total_cost"))
    runs = Copier(WorkflowExecution, ("id", "owner_id", "workflow_type", "template_id", "conversation_id", "status",
                                      "mode", "provider", "model", "error_type", "started_at", "completed_at",
                                      "execution_time_ms", "prompt_tokens", "completion_tokens", "total_tokens",
                                      "cost", "llm_calls", "created_at"))
    calls = Copier(LLMCall, ("execution_id", "provider", "model", "prompt_tokens", "completion_tokens",
                             "total_tokens", "cached_prompt_tokens", "reasoning_tokens", "cost", "duration_ms",
                             "created_at"))
    rows = Copier(Message, ("id", "conversation_id", "sequence", "role", "content", "execution_id", "prompt_tokens",
                            "completion_tokens", "total_tokens", "cached_prompt_tokens", "reasoning_tokens", "cost",
                            "provider_used", "model_used", "finish_reason", "response_time_ms", "created_at"))
    weights = [share for _, _, share in MODELS]
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor, for COPY
        for index in range(conversations_n):
            conversation_id = uuid.uuid4()
            owner = owner_ids[index % users]
            provider, model, _ = rng.choices(MODELS, weights)[0]
            price = prices[(provider, model)]
            template = chat if rng.random() < 0.8 else rng.choice(templates)[0]
            opened = first_day + timedelta(days=rng.randrange(days), seconds=rng.randrange(86_400))
            opened = min(opened, now - timedelta(hours=3))
            span = rng.choice((0, 0, 1, 2))  # the conversation goes on over 1-3 days
            at = opened
            totals = [0, 0, Decimal("0")]
            for turn in range(TURNS_PER_CONVERSATION):
                at = min(at + timedelta(seconds=rng.randrange(30, 600) + span * 86_400 // TURNS_PER_CONVERSATION),
                         now - timedelta(seconds=60))
                run_id = uuid.uuid4()
                roll = rng.random()
                status = "completed" if roll < 0.95 else "failed" if roll < 0.98 else "cancelled"
                calls_n = 0 if (status == "cancelled" and roll > 0.99) else (2 if rng.random() < 0.1 else 1)
                run_usage = RunUsage()
                elapsed = rng.randrange(200, 4000)
                for call in range(calls_n):
                    prompt, completion = rng.randrange(20, 2000), rng.randrange(5, 800)
                    cached = rng.randrange(0, prompt // 2) if provider == "openai" and rng.random() < 0.3 else 0
                    cost = chatter_calls.call_cost(price, prompt=prompt, completion=completion, cached=cached)
                    run_usage.add(prompt, completion, cached, cost)
                    calls.add(run_id, provider, model, prompt, completion, prompt + completion, cached, 0, cost,
                              elapsed // 2, at + timedelta(milliseconds=elapsed * (call + 1) // 2))
                done = at + timedelta(milliseconds=elapsed)
                runs.add(run_id, owner, "chat", template, conversation_id, status, "sync", provider, model,
                         "" if status == "completed" else ("limit_exceeded" if status == "failed" else "cancelled"),
                         at, done, elapsed, run_usage.prompt_tokens, run_usage.completion_tokens,
                         run_usage.total_tokens, run_usage.cost, calls_n, at)
                rows.add(uuid.uuid4(), conversation_id, 2 * turn + 1, "user", f"question {turn}", run_id, 0, 0, 0,
                         0, 0, Decimal("0"), provider, model, "", 0, at)
                rows.add(uuid.uuid4(), conversation_id, 2 * turn + 2, "assistant", f"answer {turn}", run_id,
                         run_usage.prompt_tokens, run_usage.completion_tokens, run_usage.total_tokens,
                         run_usage.cached_prompt_tokens, 0, run_usage.cost, provider, model,
                         "stop" if status == "completed" else status, elapsed, done)
                totals[0] += run_usage.prompt_tokens
                totals[1] += run_usage.completion_tokens
                totals[2] += run_usage.cost
            # last_sequence is the last message's: the next turn in the conversation numbers its messages after it.
            conversations.add(conversation_id, owner, f"conversation {index}", "active", opened, done, done,
                              2 * TURNS_PER_CONVERSATION, 2 * TURNS_PER_CONVERSATION, totals[0], totals[1],
                              totals[0] + totals[1], totals[2])
            if len(rows.rows) >= 100_000 or index == conversations_n - 1:
                for copier in (conversations, runs, calls, rows):  # parents first: each COPY commits on its own
                    copier.flush(raw)
                if (index + 1) % 10_000 < 5 or index == conversations_n - 1:
                    log(f"  {rows.written:,} messages written ({time.monotonic() - started:.0f} s)")
    return {"users": users, "conversations": conversations.written, "executions": runs.written,
            "llm_calls": calls.written, "messages": rows.written, "load_s": time.monotonic() - started,
            "owner_ids": owner_ids}


def vacuum_analyze() -> float:
    from django.db import connection

    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return time.monotonic() - started
