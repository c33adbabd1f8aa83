"""Statistics and tables for the benchmarks' reports."""
from __future__ import annotations


def percentile(values, p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def median(values) -> float:
    return percentile(values, 50)


def ms(seconds: float, places: int = 2) -> str:
    return f"{seconds * 1000:.{places}f}"


def table(rows: list[list], header: list[str]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
