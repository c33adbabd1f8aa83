"""B1's SQL accounting (statements and transactions per turn, by phase and by recorder hook, as Django logs them:
BEGIN, COMMIT, SAVEPOINT and RELEASE from its SQLite backend, and writes outside any BEGIN, which SQLite
autocommits as transactions of their own) and the unit costs of the database primitives a turn is made of."""
from __future__ import annotations

import re
import time
from collections import defaultdict

from bench.b1_phases import phase_label
from bench.b1_sides import ENGINE, KINDS
from bench.stats import median, table

def sql_kind(sql: str) -> str:
    s = sql.lstrip().upper()
    for prefix, kind in (("BEGIN", "begin"), ("COMMIT", "commit"), ("ROLLBACK TO SAVEPOINT", "rollback_sp"),
                         ("ROLLBACK", "rollback"), ("SAVEPOINT", "savepoint"), ("RELEASE SAVEPOINT", "release"),
                         ("SELECT", "select"), ("INSERT", "insert"), ("UPDATE", "update"), ("DELETE", "delete")):
        if s.startswith(prefix):
            return kind
    return "other"


_TABLE = re.compile(r'(?:FROM|INTO|UPDATE)\s+"([a-z0-9_]+)"', re.IGNORECASE)


def sql_short(sql: str) -> str:
    kind = sql_kind(sql)
    if kind in ("begin", "commit", "rollback", "savepoint", "release", "rollback_sp"):
        return sql.strip() if kind == "begin" else kind.upper().replace("_SP", " TO SAVEPOINT")
    found = _TABLE.search(sql)
    table_name = found.group(1) if found else "?"
    for prefix in ("workflows_", "conversations_", "analytics_", "audit_"):
        table_name = table_name.removeprefix(prefix)
    extra = ""
    if kind == "select" and re.search(r"\bCOUNT\(|\bMAX\(|\bSUM\(", sql, re.IGNORECASE):
        extra = " (aggregate)"
    if kind == "insert" and "ON CONFLICT" in sql.upper():
        extra = " (upsert)"
    return f"{kind.upper()} {table_name}{extra}"


def sql_tally(statements: list[str], in_tx: bool) -> tuple[dict, bool]:
    """Counts for a run of statements; `in_tx` is whether a BEGIN is open before the first one."""
    counts = defaultdict(int)
    for sql in statements:
        kind = sql_kind(sql)
        if kind == "begin":
            in_tx = True
        elif kind in ("commit", "rollback"):
            in_tx = False
        if kind in ("select", "insert", "update", "delete", "other"):
            counts["statements"] += 1
            counts["reads" if kind == "select" else "writes"] += 1
            if not in_tx and kind != "select":
                counts["autocommit writes"] += 1
        counts[kind] += 1
    return counts, in_tx


def report_sql(result: dict) -> dict:
    """Per engine case: statements and transactions by phase (they are the same every turn; the first captured
    turn is shown, and any turn that differs is reported)."""
    summary = {}
    for kind in KINDS:
        for variant in ENGINE:
            turns_sql = result["sql"][(kind, variant)]
            turns_spans = result["spans"][(kind, variant)]
            first = [sql_short(q) for q in turns_sql[0]]
            differing = sum(1 for s in turns_sql[1:] if [sql_short(q) for q in s] != first)
            statements, spans = turns_sql[0], turns_spans[0]
            by_label: dict[str, list[str]] = {}
            by_hook: dict[str, list[str]] = defaultdict(list)
            for phase, node, hook, _, q0, q1 in spans:
                label = phase_label(phase, node)
                by_label.setdefault(label, []).extend(statements[q0:q1])
                by_hook[hook if hook != "-" else f"(services: {phase})"].extend(statements[q0:q1])
            rows, in_tx, total = [], False, defaultdict(int)
            b1_total = defaultdict(int)
            for label, items in by_label.items():
                counts, in_tx = sql_tally(items, in_tx)
                for key, value in counts.items():
                    total[key] += value
                    if not label.startswith("view"):
                        b1_total[key] += value
                rows.append([label, counts["statements"], counts["reads"], counts["writes"], counts["begin"],
                             counts["commit"], counts["savepoint"], counts["autocommit writes"]])
            rows.append(["turn (B1: create + run + finish)", b1_total["statements"], b1_total["reads"],
                         b1_total["writes"], b1_total["begin"], b1_total["commit"], b1_total["savepoint"],
                         b1_total["autocommit writes"]])
            print(f"\nSQL per turn, {kind} / {variant} (captured {len(turns_sql)} turns; "
                  f"{'all identical' if not differing else f'{differing} differ from the first'}): statements "
                  f"(excluding transaction control), BEGIN...COMMIT transactions, SAVEPOINTs (nested atomic "
                  f"blocks), writes outside BEGIN (each its own autocommitted transaction)")
            print(table(rows, ["phase", "statements", "reads", "writes", "BEGIN", "COMMIT", "SAVEPOINT",
                               "autocommit writes"]))
            hook_rows = []
            in_tx = False
            for hook, items in by_hook.items():
                counts, in_tx = sql_tally(items, in_tx)
                hook_rows.append([hook, counts["statements"], counts["commit"], counts["savepoint"]])
            print(table(hook_rows, ["by recorder hook / service", "statements", "COMMIT", "SAVEPOINT"]))
            summary[(kind, variant)] = {"by_label": by_label, "total": b1_total}
    # One full statement sequence: the largest case.
    kind, variant = "tool", "continuing"
    print(f"\nStatement sequence of one turn, {kind} / {variant} (table names without the app prefix):")
    for label, items in summary[(kind, variant)]["by_label"].items():
        print(f"  [{label}] " + "; ".join(sql_short(q) for q in items))
    return summary


def micro_pass(n: int = 300) -> list[list]:
    """Median costs of the database primitives a turn is made of, on this database, through Django's public API
    (models by name): what one statement costs, to read the statement counts above against."""
    from django.apps import apps
    from django.db import connection, transaction
    from django.utils import timezone

    Execution = apps.get_model("workflows", "WorkflowExecution")
    Event = apps.get_model("workflows", "ExecutionEvent")
    execution = Execution.objects.order_by("-created_at").first()
    seq = [1_000_000]

    def timed(fn, reps=n, per=1):
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) / per)
        return median(times)

    def next_seq():
        seq[0] += 1
        return seq[0]

    def raw_begin_commit():
        with connection.cursor() as cursor:
            cursor.execute("BEGIN IMMEDIATE" if connection.vendor == "sqlite" else "BEGIN")
            cursor.execute("COMMIT")

    def empty_atomic():
        with transaction.atomic():
            pass

    def atomic_select():
        with transaction.atomic():
            Execution.objects.filter(pk=execution.pk).values_list("status").first()

    def event_create():
        with transaction.atomic():
            Event.objects.create(execution_id=execution.pk, seq=next_seq(), event="x", data={"node_id": "x"},
                                 created_at=timezone.now())

    def events_10_bulk():
        now = timezone.now()
        with transaction.atomic():
            Event.objects.bulk_create([Event(execution_id=execution.pk, seq=next_seq(), event="x",
                                             data={"node_id": "x"}, created_at=now) for _ in range(10)])

    return [
        ["raw BEGIN + COMMIT (cursor, no ORM)", timed(raw_begin_commit)],
        ["transaction.atomic(), empty", timed(empty_atomic)],
        ["atomic + SELECT of one column by pk", timed(atomic_select)],
        ["SELECT of an execution's full row by pk (JSON fields decoded)",
         timed(lambda: Execution.objects.filter(pk=execution.pk).first())],
        ["one event: atomic + ORM INSERT", timed(event_create)],
        ["10 events bulk_create in one atomic (per event)", timed(events_10_bulk, reps=n // 5, per=10)],
    ]
