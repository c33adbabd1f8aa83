"""B1's cProfile pass (engine turns against bare runs: self time by area and the extra per turn, our functions
by cumulative time; cProfile inflates Python-heavy code more than C, so read it for proportions), and which
code was measured."""
from __future__ import annotations

import cProfile
import hashlib
import pstats
import subprocess
from collections import defaultdict
from pathlib import Path

from bench import chatter_calls
from bench.b1_sides import ENGINE, KINDS, Sides
from bench.processes import ROOT
from bench.stats import ms, table


def area_of(filename: str, funcname: str) -> str:
    if filename == "~":
        if "sqlite" in funcname.lower():
            return "sqlite3 C calls (execute, commit, fetch; the GIL is released in them)"
        if "_socket.socket" in funcname:
            return "socket.send: waking an event loop (call_soon_threadsafe), GIL hand-off included"
        return "C builtins (isinstance, getattr, dict, re, ...)"
    path = filename
    for marker in ("site-packages/",):
        if marker in path:
            rest = path.split(marker, 1)[1]
            pkg = rest.split("/", 1)[0]
            if pkg == "django":
                sub = rest.split("/")
                if sub[1] == "db":
                    if len(sub) > 2 and sub[2] == "models":
                        return "Django ORM (django/db/models: querysets, compiler, model init)"
                    return "Django db backend + transaction (django/db/backends, transaction.py, utils.py)"
                if sub[1] == "dispatch":
                    return "Django signals (django/dispatch)"
                return f"Django other (django/{sub[1]})"
            return pkg.removesuffix(".py")
    if path.startswith(str(ROOT)) and "/.venv/" not in path:
        rel = path[len(str(ROOT)) + 1:]
        return f"ours: {rel}"
    name = Path(path).name
    if path.startswith("<"):
        return "other (<frozen>, <string>)"
    return f"stdlib: {name}"


def profile_turns(sides: Sides, variants: tuple[str, ...], turns: int) -> tuple[pstats.Stats, int]:
    profiler = cProfile.Profile()
    count = 0
    for _ in range(turns):
        for kind in KINDS:
            for variant in variants:
                profiler.enable()
                sides.side(kind, variant)
                profiler.disable()
                count += 1
    return pstats.Stats(profiler), count


def profile_report(sides: Sides, turns: int) -> None:
    engine_stats, engine_n = profile_turns(sides, ENGINE, turns)
    bare_stats, bare_n = profile_turns(sides, ("bare", "bare+hist", "bare", "bare+hist"), turns // 2 or 1)

    def by_area(stats, n):
        acc: dict[str, float] = defaultdict(float)
        total = 0.0
        for (filename, _, funcname), (_, _, tottime, _, _) in stats.stats.items():
            acc[area_of(filename, funcname)] += tottime
            total += tottime
        return {k: v / n for k, v in acc.items()}, total / n

    engine_area, engine_total = by_area(engine_stats, engine_n)
    bare_area, bare_total = by_area(bare_stats, bare_n)
    print(f"\ncProfile: {engine_n} engine turns (new and continuing, both kinds) vs {bare_n} bare runs (the same "
          f"mix of kinds); self time by area, ms per turn. Profiled totals: engine {ms(engine_total)}, bare "
          f"{ms(bare_total)}, extra {ms(engine_total - bare_total)} (cProfile inflates Python-heavy code: read it "
          f"for proportions, the timed loop for figures)")
    areas = sorted(set(engine_area) | set(bare_area), key=lambda a: -(engine_area.get(a, 0) - bare_area.get(a, 0)))
    rows = []
    for area in areas:
        extra = engine_area.get(area, 0) - bare_area.get(area, 0)
        if abs(extra) < 0.00002 and engine_area.get(area, 0) < 0.00005:
            continue
        rows.append([area, ms(bare_area.get(area, 0)), ms(engine_area.get(area, 0)), ms(extra),
                     f"{extra / (engine_total - bare_total) * 100:.0f}%"])
    print(table(rows[:28], ["area (self time)", "bare", "engine", "extra", "share of extra"]))

    def ours(stats, n):
        found = []
        for (filename, line, funcname), (cc, nc, tottime, cumtime, _) in stats.stats.items():
            if filename.startswith(str(ROOT)) and "/.venv/" not in filename:
                rel = filename[len(str(ROOT)) + 1:]
                found.append((f"{rel}:{line} {funcname}", nc / n, tottime / n, cumtime / n))
        return sorted(found, key=lambda r: -r[3])

    rows = [[name, f"{calls:.1f}", ms(cum), ms(tot)] for name, calls, tot, cum in ours(engine_stats, engine_n)
            if not name.startswith("engine/") or "runtime.py" in name or "compile.py" in name][:34]
    print("\ncProfile, engine turns: our functions by cumulative time (ms per turn; the engine package's node "
          "behaviours left out except runtime/compile, they run bare too)")
    print(table(rows, ["function", "calls/turn", "cumulative", "self"]))

    library = []
    for (filename, line, funcname), (cc, nc, tottime, cumtime, _) in engine_stats.stats.items():
        if "django/" in filename or filename == "~":
            label = funcname if filename == "~" else f"{filename.split('site-packages/')[-1]}:{line} {funcname}"
            library.append((label, nc / engine_n, tottime / engine_n, cumtime / engine_n))
    rows = [[label, f"{calls:.1f}", ms(tot), ms(cum)] for label, calls, tot, cum in
            sorted(library, key=lambda r: -r[2])[:16]]
    print("\ncProfile, engine turns: Django and C functions by self time (ms per turn)")
    print(table(rows, ["function", "calls/turn", "self", "cumulative"]))
    picks = ("atomic", "__enter__", "__exit__", "execute_sql", "as_sql", "send", "_commit", "save", "update",
             "create", "__init__")
    rows = [[label, f"{calls:.1f}", ms(cum)] for label, calls, tot, cum in sorted(library, key=lambda r: -r[3])
            if "django/" in label and any(p in label.rsplit(" ", 1)[-1] for p in picks)][:14]
    print("\ncProfile, engine turns: Django entry points by cumulative time (ms per turn)")
    print(table(rows, ["function", "calls/turn", "cumulative"]))


def code_note() -> str:
    """The commit, and the files on the turn's path that differ from it (others edit them while we measure)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=False).stdout.strip()
    changed = subprocess.run(["git", "diff", "--name-only", "HEAD", "--", *chatter_calls.RUN_PATH_FILES], cwd=ROOT,
                             capture_output=True,
                             text=True, check=False).stdout.split()
    digests = [f"{name} {hashlib.sha1((ROOT / name).read_bytes()).hexdigest()[:8]}" for name in changed]
    return f"code: HEAD {head}; working-tree changes on the turn's path: {', '.join(digests) or 'none'}"
