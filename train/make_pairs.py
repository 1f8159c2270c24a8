#!/usr/bin/env python3
"""Build the fixed celeba-id verification pair list (LFW-style 10 folds).

    python3 train/make_pairs.py [--data ../shared/data] [--seed 0]

Reads <data>/celeba-id/identities.csv (file,identity,gender) in place and writes
docs/eval/celeba-id-pairs.csv with the header `fold,path_a,path_b,same`; paths are relative
to the data folder (e.g. `celeba-id/images/000114.jpg`), same = 1 (same person) / 0.

Protocol:
  * The 160 identities (sorted numerically) are shuffled with random.Random(seed) and cut
    into 10 groups of 16; fold f holds group f. Identities are disjoint across folds, so a
    threshold chosen on 9 folds never saw the test fold's people.
  * Genuine pairs (300 per fold): the fold's identities are visited round-robin in a
    seeded order and each visit draws one not-yet-used pair of two distinct photos of that
    identity, until 300; an identity whose pairs are used up is skipped. This spreads the
    pairs over the 16 people instead of letting the 30-photo identities dominate.
  * Impostor pairs (300 per fold): a seeded random pair of distinct identities of the fold,
    then a random photo of each; repeats are redrawn.
  * A pair is stored with its two paths in sorted order; no pair appears twice.

Only the standard library is used, so the list is reproducible on any Python 3.
No images are copied: the output is file names and labels only.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import random
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_FOLDS = 10
PER_FOLD = 300


def data_root(arg: str | None) -> Path:
    for cand in (arg, os.environ.get("FACEGATE_DATA"), str(ROOT.parent / "shared" / "data")):
        if cand and (Path(cand) / "celeba-id" / "identities.csv").exists():
            return Path(cand)
    sys.exit("celeba-id/identities.csv not found: pass --data or set FACEGATE_DATA")


def load(root: Path) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = defaultdict(list)
    with open(root / "celeba-id" / "identities.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            ids[row["identity"].strip()].append(f"celeba-id/images/{row['file'].strip()}")
    return {k: sorted(set(v)) for k, v in ids.items()}


def genuine_pairs(rng: random.Random, group: list[str], ids: dict[str, list[str]]) -> list[tuple]:
    # every possible pair per identity, shuffled once; then round-robin draws
    pools = {}
    for ident in group:
        p = list(itertools.combinations(ids[ident], 2))
        rng.shuffle(p)
        pools[ident] = p
    total = sum(len(p) for p in pools.values())
    if total < PER_FOLD:
        sys.exit(f"fold has only {total} genuine pairs, need {PER_FOLD}")
    order = list(group)
    rng.shuffle(order)
    out: list[tuple] = []
    while len(out) < PER_FOLD:
        for ident in order:
            if pools[ident] and len(out) < PER_FOLD:
                a, b = pools[ident].pop()
                out.append((a, b, 1))
    return out


def impostor_pairs(rng: random.Random, group: list[str], ids: dict[str, list[str]]) -> list[tuple]:
    seen: set[tuple[str, str]] = set()
    out: list[tuple] = []
    while len(out) < PER_FOLD:
        i1, i2 = rng.sample(group, 2)
        a, b = sorted((rng.choice(ids[i1]), rng.choice(ids[i2])))
        if (a, b) in seen:
            continue
        seen.add((a, b))
        out.append((a, b, 0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="data folder holding celeba-id/ (default $FACEGATE_DATA or ../shared/data)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "eval" / "celeba-id-pairs.csv"))
    args = ap.parse_args()

    root = data_root(args.data)
    ids = load(root)
    idents = sorted(ids, key=lambda s: (int(s) if s.isdigit() else 0, s))
    if len(idents) % N_FOLDS:
        sys.exit(f"{len(idents)} identities do not split into {N_FOLDS} equal folds")
    rng = random.Random(args.seed)
    rng.shuffle(idents)
    size = len(idents) // N_FOLDS
    groups = [idents[f * size:(f + 1) * size] for f in range(N_FOLDS)]

    rows = []
    for f, group in enumerate(groups):
        gen = genuine_pairs(rng, group, ids)
        imp = impostor_pairs(rng, group, ids)
        pairs = [(min(a, b), max(a, b), s) for a, b, s in gen + imp]
        assert len({(a, b) for a, b, _ in pairs}) == len(pairs), "duplicate pair"
        rows += [(f, a, b, s) for a, b, s in pairs]

    # sanity: identities disjoint across folds, pair labels consistent
    file_id = {p: i for i, ps in ids.items() for p in ps}
    fold_of = {i: f for f, g in enumerate(groups) for i in g}
    for f, a, b, s in rows:
        assert fold_of[file_id[a]] == f and fold_of[file_id[b]] == f
        assert (file_id[a] == file_id[b]) == bool(s) and a != b
    assert len({(a, b) for _, a, b, _ in rows}) == len(rows)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["fold", "path_a", "path_b", "same"])
        w.writerows(rows)
    n_img = len({p for _, a, b, _ in rows for p in (a, b)})
    per_id = defaultdict(int)
    for _, a, _b, s in rows:
        if s:
            per_id[file_id[a]] += 1
    print(f"wrote {out}: {len(rows)} pairs ({N_FOLDS} folds x {PER_FOLD} genuine + {PER_FOLD} "
          f"impostor), {n_img} distinct images, {len(idents)} identities; genuine pairs per "
          f"identity {min(per_id.values())}-{max(per_id.values())}")


if __name__ == "__main__":
    main()
