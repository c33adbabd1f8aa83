"""Conversations' named statements against the ORM statements that would say the same, µs per call (median),
interleaved in one process on a fresh migrated database: SQLite, or PostgreSQL when DATABASE_URL is set (source
the env of `make services-up`). Each call runs in its own transaction, as the services run it.

- add:      counting a message and reading the row back (CONVERSATION_MESSAGE_ADD through Manager.raw) vs
            `update()` with F() then `get()`;
- open:     a new conversation with its first message (conversation_open_with_message: one statement on
            PostgreSQL, two named INSERTs on SQLite) vs two `save()`s;
- insert:   a message whose sequence is known, where it does not ride on the count (SQLite): message_insert
            (MESSAGE_INSERT) vs `save(force_insert=True)`;
- history:  a turn's memory, the last 10 user/assistant/system messages before a sequence number, read through
            `conversations.selectors.conversation_history` (CONVERSATION_HISTORY) vs the queryset that says the same.

    .venv/bin/python -m bench.conversation_budget_statements [--reps 300]
"""
from __future__ import annotations

import argparse
import os
import random
import time
from decimal import Decimal

from bench import chatter_calls
from bench.chatter_servers import chatter_database, chatter_env
from bench.processes import BenchRun
from bench.stats import median, table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args()
    with BenchRun("conversation-budget-statements") as run:
        url = os.environ.get("DATABASE_URL")
        if url:  # the database of `make services-up`, migrated here; its user kept between runs
            chatter_calls.django_setup(chatter_env(run, "postgres", DATABASE_URL=url))
            from django.contrib.auth import get_user_model
            from django.core.management import call_command

            call_command("migrate", verbosity=0)
            user = get_user_model().objects.get_or_create(username="bench-statements")[0]
        else:
            chatter_calls.django_setup(chatter_database(run, "sqlite").env)
            user = chatter_calls.bench_user()
        print(_measure(args.reps, user))
    return 0


def _measure(reps: int, user) -> str:
    from django.db import connection, transaction
    from django.db.models import F
    from django.utils import timezone

    from conversations.models import Conversation, Message
    from conversations.services import conversation_create, message_save
    from conversations.selectors import conversation_history
    from conversations.statements import (
        CONVERSATION_MESSAGE_ADD,
        conversation_open_with_message,
        message_insert,
    )

    conversation = conversation_create(owner=user)
    for number in range(30):
        message_save(conversation_id=conversation.pk, role="user" if number % 2 else "assistant", content="x" * 200)
    total_cost = Conversation._meta.get_field("total_cost")

    def add_orm():
        with transaction.atomic():
            Conversation.objects.filter(pk=conversation.pk, owner_id=user.pk).update(
                message_count=F("message_count") + 1, prompt_tokens=F("prompt_tokens") + 1,
                completion_tokens=F("completion_tokens") + 1, total_tokens=F("total_tokens") + 2,
                total_cost=F("total_cost") + Decimal("0.001"), last_sequence=F("last_sequence") + 1,
                last_message_at=timezone.now())
            Conversation.objects.get(pk=conversation.pk)

    def add_named():
        with transaction.atomic():
            next(iter(Conversation.objects.raw(CONVERSATION_MESSAGE_ADD, [
                1, 1, 2, total_cost.get_db_prep_save(Decimal("0.001"), connection),
                Conversation._meta.get_field("last_message_at").get_db_prep_save(timezone.now(), connection),
                Conversation._meta.pk.get_db_prep_value(conversation.pk, connection), user.pk])))

    def opened():
        new = Conversation(owner=user, message_count=1, last_sequence=1)
        return new, Message(conversation_id=new.pk, sequence=1, role="user", content="hello")

    def open_orm():
        new, message = opened()
        with transaction.atomic():
            new.save(force_insert=True)
            message.save(force_insert=True)

    def open_named():
        new, message = opened()
        with transaction.atomic():
            conversation_open_with_message(new, message)

    sequences = iter(range(1000, 10**9))

    def reply():
        return Message(conversation_id=conversation.pk, sequence=next(sequences), role="assistant", content="x" * 200,
                       prompt_tokens=12, completion_tokens=30, total_tokens=42, cost=Decimal("0.0001234"),
                       usage_raw={"prompt_tokens": 12}, model_used="local-echo-1", finish_reason="stop")

    def insert_orm():
        with transaction.atomic():
            reply().save(force_insert=True)

    def insert_named():
        with transaction.atomic():
            message_insert(reply())

    def history_orm():
        with transaction.atomic():
            newest = Message.objects.filter(conversation_id=conversation.pk, role__in=("user", "assistant", "system"),
                                            sequence__lt=20).order_by("-sequence").values_list("role", "content")[:10]
            return list(reversed(newest))

    def history_named():
        with transaction.atomic():
            return conversation_history(conversation_id=conversation.pk, before_sequence=20, limit=10)

    if history_orm() != history_named():
        raise RuntimeError("the named history read and the queryset read differ")
    sides = {"add": (add_orm, add_named), "open": (open_orm, open_named), "insert": (insert_orm, insert_named),
             "history": (history_orm, history_named)}
    times = {(name, way): [] for name in sides for way in ("orm", "named")}
    for _ in range(reps):
        order = [(name, way, fn) for name, pair in sides.items() for way, fn in zip(("orm", "named"), pair)]
        random.shuffle(order)
        for name, way, fn in order:
            started = time.perf_counter()
            fn()
            times[(name, way)].append((time.perf_counter() - started) * 1e6)
    rows = [[name, f"{median(times[(name, 'orm')]):.0f}", f"{median(times[(name, 'named')]):.0f}"]
            for name in sides]
    return f"{connection.vendor}, {reps} interleaved calls each, µs per call (median)\n" + table(
        rows, ["statement", "ORM", "named"])


if __name__ == "__main__":
    raise SystemExit(main())
