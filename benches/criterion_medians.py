#!/usr/bin/env python3
"""Markdown table of criterion medians from target/criterion (after `cargo bench`).

    python3 benches/criterion_medians.py [GROUP_PREFIX ...] [--json OUT.json]

For every benchmark whose group starts with one of the prefixes (all if none): the median of
the sample (criterion's `median` point estimate, per iteration) with its 95 % interval, and,
inside a group, the ratio to the group's first benchmark (in the order they ran). Standard library only.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRIT = ROOT / "target" / "criterion"


def fmt(ns: float) -> str:
    for unit, k in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= k:
            return f"{ns / k:.3g} {unit}"
    return f"{ns:.3g} ns"


def load():
    rows = []
    for bench in sorted(CRIT.glob("**/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        med = est["median"]
        rows.append({
            "group": meta["group_id"],
            "bench": meta.get("function_id") or meta.get("value_str") or "",
            "median_ns": med["point_estimate"],
            "lo_ns": med["confidence_interval"]["lower_bound"],
            "hi_ns": med["confidence_interval"]["upper_bound"],
            "mtime": bench.stat().st_mtime,
        })
    return rows


def main():
    args = sys.argv[1:]
    out = None
    if "--json" in args:
        i = args.index("--json")
        out = Path(args[i + 1])
        del args[i:i + 2]
    rows = [r for r in load() if not args or any(r["group"].startswith(p) for p in args)]
    rows.sort(key=lambda r: r["mtime"])  # the order the benchmarks ran in
    order = {}
    for r in rows:
        order.setdefault(r["group"], []).append(r)
    print("| group | benchmark | median | 95% CI of median | × first in group |")
    print("|---|---|---|---|---|")
    for group, rs in order.items():
        base = rs[0]["median_ns"]
        for r in rs:
            print(f"| {group} | {r['bench']} | {fmt(r['median_ns'])} | {fmt(r['lo_ns'])} – {fmt(r['hi_ns'])} "
                  f"| {r['median_ns'] / base:.2f} |")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
