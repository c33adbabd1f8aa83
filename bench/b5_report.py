"""B5's report: the side-by-side table, the ratios to the fair peer, CPU, PostgreSQL activity and database work
per HTTP turn."""
from __future__ import annotations

from bench.machine import format_cpu
from bench.pg_stats import format_pg_activity
from bench.stats import median, percentile, table

PEER = "langgraph-pg"
REFERENCE = "langgraph-dev"
THROUGHPUT_TARGET = 2.0  # at least 2x the peer's turns/s
SEQUENTIAL_RATIO_TARGET = 0.5  # at most half the peer's sequential median
SEQUENTIAL_TARGET_S = 0.020


def summarize(results: dict) -> dict[str, dict]:
    summary = {}
    for name, res in results.items():
        seq = [x for r in res["seq"] for x in r["latencies"]]
        conc = [x for r in res["conc"] for x in r["latencies"]]
        paired = [x for r in res["paired"] for x in r["latencies"]]
        rates = [r["turns"] / r["elapsed"] for r in res["conc"]]
        summary[name] = {"seq": median(seq), "seq_p95": percentile(seq, 95), "rates": rates, "rate": median(rates),
                         "paired": median(paired) if paired else None,
                         "paired_p95": percentile(paired, 95) if paired else None,
                         "paired_rounds": [x for r in res["paired"] for x in r["latencies"]],
                         "conc": median(conc), "conc_p95": percentile(conc, 95),
                         "failures": sum(r["failures"] for r in res["seq"] + res["conc"] + res["paired"]),
                         "examples": [e for r in res["seq"] + res["conc"] + res["paired"]
                                      for e in r["failure_examples"]][:3]}
    return summary


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def report(results: dict, variants: dict, idle: dict, args, *, statements_counted: bool) -> None:
    summary = summarize(results)
    print(f"\nB5: sync chat turns over HTTP, 2 server processes each, PostgreSQL + Redis; load from a separate "
          f"process; message 'hello there' (no tool call); {args.reps} interleaved repetition(s); sequential: "
          f"{args.seq_count} turns from 1 client; concurrent: {args.clients} clients for {args.duration:g} s")
    rows = [[name, _ms(s["paired"]), _ms(s["paired_p95"]), f"{s['seq'] * 1000:.1f}", f"{s['seq_p95'] * 1000:.1f}",
             " / ".join(f"{r:.1f}" for r in s["rates"]), f"{s['rate']:.1f}", f"{s['conc'] * 1000:.1f}",
             f"{s['conc_p95'] * 1000:.1f}", s["failures"]]
            for name, s in summary.items()]
    print(table(rows, ["variant", "seq interleaved median ms", "p95 ms", "seq block median ms", "p95 ms",
                       "turns/s per rep", "turns/s (median)", "latency median ms", "p95 ms", "failed"]))
    print("(seq interleaved: one client per variant, one turn to each per round; seq block: the variant's own "
          f"{args.seq_count} turns before its concurrent phase)")
    for name, s in summary.items():
        if s["failures"]:
            print(f"  {name} failures, e.g.: {s['examples']}")
    notes = [f"{v.name}: {v.note}" for v in variants.values() if v.note]
    if notes:
        print("settings: " + "; ".join(notes))

    print()
    for name, mine in summary.items():
        if not name.startswith("chatter"):
            continue
        for other, label in ((PEER, "the fair peer"), (REFERENCE, "the in-memory reference")):
            if other not in summary:
                continue
            peer = summary[other]
            throughput = mine["rate"] / peer["rate"] if peer["rate"] else float("nan")
            mine_seq, peer_seq = (mine["paired"], peer["paired"]) if mine["paired"] and peer["paired"] else (
                mine["seq"], peer["seq"])
            latency = mine_seq / peer_seq if peer_seq else float("nan")
            line = (f"{name} vs {other} ({label}): throughput x{throughput:.2f} ({mine['rate']:.1f} vs "
                    f"{peer['rate']:.1f} turns/s); sequential latency x{latency:.2f} ({mine_seq * 1000:.1f} vs "
                    f"{peer_seq * 1000:.1f} ms{', interleaved' if mine['paired'] and peer['paired'] else ''}; "
                    f"in blocks x{mine['seq'] / peer['seq']:.2f})")
            if mine["paired_rounds"] and len(mine["paired_rounds"]) == len(peer["paired_rounds"]):
                ratios = [a / b for a, b in zip(mine["paired_rounds"], peer["paired_rounds"])]
                line += f"; per round, median x{median(ratios):.2f}"
            if other == PEER:
                line += (f"; target throughput >= x{THROUGHPUT_TARGET:g}: "
                         f"{'met' if throughput >= THROUGHPUT_TARGET else 'not met'}, sequential <= "
                         f"x{SEQUENTIAL_RATIO_TARGET:g}: {'met' if latency <= SEQUENTIAL_RATIO_TARGET else 'not met'}")
            print(line)
        for label, value in (("interleaved", mine["paired"]), ("in its block", mine["seq"])):
            if value is not None:
                verdict = "meets" if value <= SEQUENTIAL_TARGET_S else "misses"
                print(f"{name}: sequential median ({label}) {value * 1000:.1f} ms {verdict} the 20 ms target")

    print("\nDatabase work per HTTP turn (first sequential phase, warm-up turns included; PostgreSQL's counters for "
          "the variant's own database, less its idle background work over the same time):")
    rows = []
    for name, res in results.items():
        works = res["work"]
        if not works:
            continue
        statements = f"{median([w['statements'] for w in works]):.1f}" if statements_counted else "n/a"
        fk_checks = f"{median([w['fk_checks'] for w in works]):.1f}" if statements_counted else "n/a"
        rows.append([name, variants[name].database, statements, fk_checks,
                     f"{median([w['transactions'] for w in works]):.1f}",
                     f"{median([w['sessions'] for w in works]):.2f}"])
    print(table(rows, ["variant", "database", "statements", "PostgreSQL's foreign-key checks", "transactions",
                       "new connections"]))
    if idle:
        print("idle background work, with no request in flight, per second: " + "; ".join(
            f"{db}: {w['statements']:.1f} statements, {w['transactions']:.1f} transactions" for db, w in idle.items()))

    print("\nCPU while the clients ran (median over repetitions):")
    others = []
    for name, res in results.items():
        merged = {k: median([c[k] for c in res["cpu"]]) for k in res["cpu"][0]}
        others += [c["others"] for c in res["cpu"]]
        merged["load generator"] = median([r["loadgen_cpu_share"] for r in res["conc"]])
        print(f"  {name}: {format_cpu(merged)}")
    print(f"machine load: other processes used {median(others) * 100:.0f}% of a core (median over the concurrent "
          f"phases; min {min(others) * 100:.0f}%, max {max(others) * 100:.0f}%)")
    print("\nPostgreSQL while the clients ran (first repetition):")
    for name, res in results.items():
        if res["pg"]:
            print(f"  {name}: {format_pg_activity(res['pg'][0])}")
