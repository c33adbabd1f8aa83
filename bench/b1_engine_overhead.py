"""B1: engine overhead per sync chat turn vs invoking the same compiled graph with the same model bare,
in one process, SQLite; target ≤ 5 ms median.

Side by side, interleaved in one process (a new random order every repetition), on a fresh migrated and seeded
SQLite database with the project's own settings (WAL, synchronous=NORMAL, BEGIN IMMEDIATE, DEBUG off), the
garbage collector as a served process tunes it once its app is loaded (core.serving.tune_collector; `--collector
default` keeps Python's thresholds), the `local` model with CHATTER_LOCAL_TOKEN_DELAY_MS=0, for two messages: "What
is 12*7?" (model -> tools -> model: one tool call) and "hello there" (no tool call); every call into the project
goes through bench/chatter_calls.py:
- bare:        the compiled universal_chat graph (the very object the engine's compile cache hands out, checked)
               invoked with hooks that record nothing, the run config the engine resolves for a chat turn and
               the same user message: LangGraph + the model + the node behaviours, no database;
- bare+hist:   the same, handing the memory node the 10 messages the continuing conversation's memory reads
               (what the longer prompt alone costs the model);
- new:         a sync chat turn through the services, as POST /api/v1/chat/ runs it without HTTP, on a new
               conversation each time;
- continuing:  the same on one conversation per message kind that keeps growing (memory reads its last 10).
The B1 figure is median(new or continuing) - median(bare), per kind. Between two sides (untimed) the previous
turn's event sends are left to finish, so they do not slow whatever side comes next.

After the timed loop, outside it (instrumented passes perturb timing, so they are kept apart):
- where a turn's time goes, by phase and by recorder hook, next to the same nodes run bare (bench/b1_phases.py);
- SQL statements and transactions per turn by phase, with the statement sequence of one turn, and the unit
  costs of the database primitives (bench/b1_sql.py);
- cProfile of engine turns against bare runs (bench/b1_cprofile.py).

    .venv/bin/python -m bench.b1_engine_overhead [--reps 200] [--phase-reps 40] [--profile-turns 40] [--no-profile]
        [--collector served|default]
"""
from __future__ import annotations

import argparse
import gc
import os
import random
import time

from bench import chatter_calls
from bench.b1_cprofile import code_note, profile_report
from bench.b1_phases import phase_pass, report_phases
from bench.b1_sides import ENGINE, KINDS, VARIANTS, GcPauses, Sides
from bench.b1_sql import micro_pass, report_sql
from bench.chatter_servers import chatter_database
from bench.machine import CpuMeter, format_cpu, machine_note, threads_cpu
from bench.processes import BenchRun, log, run_main
from bench.stats import median, ms, percentile, table

TARGET_MS = 5.0


def describe_database(database) -> None:
    from django.conf import settings
    from django.db import connection

    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]
    log(f"SQLite {database.env['CHATTER_VAR_DIR']}: journal_mode={journal}, synchronous={synchronous}, "
        f"transaction_mode={settings.DATABASES['default']['OPTIONS'].get('transaction_mode')}, "
        f"DEBUG={settings.DEBUG}, token delay {settings.CHATTER_LOCAL_TOKEN_DELAY_MS} ms")


def timed_loop(sides: Sides, reps: int, gc_pauses: GcPauses) -> tuple[dict, float]:
    """Every side `reps` times, in a new random order each repetition (a rotation keeps each side behind the same
    neighbour, and what ran just before measurably changes the next side's time)."""
    order = [(kind, variant) for kind in KINDS for variant in VARIANTS]
    results: dict[tuple, list[dict]] = {side: [] for side in order}
    shuffle = random.Random(1)
    log(f"{reps} timed repetitions of {len(order)} sides, interleaved")
    gc.callbacks.append(gc_pauses)
    started = time.monotonic()
    try:
        for _ in range(reps):
            shuffle.shuffle(order)
            for side in order:
                gc_pauses.side = side
                results[side].append(sides.side(*side))
                gc_pauses.side = None
    finally:
        gc.callbacks.remove(gc_pauses)
    return results, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=200, help="timed repetitions of every side (default 200)")
    parser.add_argument("--phase-reps", type=int, default=40, help="instrumented turns per case for the phase "
                        "breakdown (default 40)")
    parser.add_argument("--profile-turns", type=int, default=40, help="cProfiled turns per engine case (default 40)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile pass")
    parser.add_argument("--collector", choices=("served", "default"), default="served",
                        help="the garbage collector as a served process tunes it once its app is loaded "
                        "(core.serving.tune_collector, what chatter_project/asgi.py calls), or Python's defaults")
    args = parser.parse_args()

    with BenchRun("b1") as run:
        database = chatter_database(run, "sqlite", CHATTER_LOCAL_TOKEN_DELAY_MS=0)
        chatter_calls.django_setup(database.env)
        describe_database(database)
        print(code_note())
        sides = Sides()
        log("warming up (compile cache, imports) and checking both sides give the same answers")
        sides.prepare()
        if args.collector == "served":
            from core.serving import tune_collector

            tune_collector()
        log(f"collector: {args.collector}, thresholds {gc.get_threshold()}, {gc.get_freeze_count()} objects frozen")

        gc_pauses = GcPauses()
        meter = CpuMeter({"this process": os.getpid()})
        meter.start()
        threads_before = threads_cpu()
        results, elapsed = timed_loop(sides, args.reps, gc_pauses)
        threads_after = threads_cpu()
        cpu = meter.stop()

        report(results, gc_pauses, args)
        engine_turns = args.reps * len(KINDS) * len(ENGINE)
        thread_rows = [[name, f"{(threads_after[name] - threads_before.get(name, 0)):.2f}",
                        ms((threads_after[name] - threads_before.get(name, 0)) / engine_turns)]
                       for name in sorted(threads_after)]
        print(f"\nCPU while timing ({elapsed:.1f} s): {format_cpu(cpu)}")
        print(table(thread_rows, ["thread of this process", "CPU s", "ms per engine turn"]))
        print(machine_note())

        log(f"instrumented pass: {args.phase_reps} turns per case with phase marks")
        report_phases(phase_pass(sides, args.phase_reps, capture=False))
        log("SQL pass: 3 turns per case with CaptureQueriesContext")
        report_sql(phase_pass(sides, 3, capture=True))
        log("unit costs")
        print("\nUnit costs on this database (median ms per operation):")
        print(table([[label, ms(seconds)] for label, seconds in micro_pass()], ["operation", "ms"]))
        if not args.no_profile:
            log(f"cProfile: {args.profile_turns} turns per engine case, and bare runs")
            profile_report(sides, args.profile_turns)
        print()
        print(machine_note())
    return 0


def report(results: dict, gc_pauses: GcPauses, args) -> None:
    print(f"\nB1: one sync chat turn through the engine vs the same compiled graph invoked bare, local model, no token "
          f"delay, SQLite; {args.reps} interleaved repetitions of each side (ms)")
    for kind, message in KINDS.items():
        base = [r["wall"] for r in results[(kind, "bare")]]
        base_hist = [r["wall"] for r in results[(kind, "bare+hist")]]
        base_cpu = [r["cpu"] for r in results[(kind, "bare")]]
        rows = []
        for variant in VARIANTS:
            items = results[(kind, variant)]
            wall = [r["wall"] for r in items]
            cpu = [r["cpu"] for r in items]
            bare = variant.startswith("bare")
            rows.append([
                variant, ms(median(wall)), ms(percentile(wall, 95)), ms(min(wall)), ms(median(cpu)),
                ms(gc_pauses.total.get((kind, variant), 0.0) / len(items)),
                "" if bare else ms(median(wall) - median(base)),
                "" if bare else ms(median([a - b for a, b in zip(wall, base)])),
                ms(median(wall) - median(base_hist)) if variant == "continuing" else "",
                "" if bare else ms(median(cpu) - median(base_cpu)),
            ])
        print(f"\n{kind}: {message!r}")
        print(table(rows, ["side", "median", "p95", "min", "CPU median", "GC mean", "overhead (median diff)",
                           "median of paired diffs", "vs bare+hist", "CPU overhead"]))
    print(f"target: overhead <= {TARGET_MS:.0f} ms median. 'CPU' is this thread's CPU time (other threads of the "
          f"project's run besides), less sensitive than wall time to other processes on the machine; 'CPU overhead' "
          f"is its median minus bare's; 'GC mean' the garbage collector's pauses per turn.")


if __name__ == "__main__":
    run_main(main)
