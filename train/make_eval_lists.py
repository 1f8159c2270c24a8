#!/usr/bin/env python3
"""Fixed inputs of the development evaluation with `facegate eval` / `facegate calibrate`.

    python3 train/make_eval_lists.py [--data ../shared/data] [--n 300] [--seed 0] \
        [--tree /tmp/facegate-celeba-id]

Standard library only; no image is copied into the repository.

  * docs/eval/attrs-utkface-300.csv, docs/eval/attrs-aaf-300.csv (`path,age,gender`, paths
    relative to the data folder): --n photos of each set, random.Random(seed).sample over the
    sorted utkface file names (age and gender from the name, 0 = male) and over the rows of
    aaf-train/labels.csv; rows in sorted order.
  * with --tree DIR, folder-per-person symbolic links to the celeba-id photos (outside the
    repository, research data read in place):
      DIR/all/ID/*.jpg         every photo of every identity (`calibrate --people-dir`);
      DIR/gallery/ID/*.jpg     the enrolled identities' first photo (sorted by file name);
      DIR/probes/ID/*.jpg      their other photos (mated probes);
      DIR/distractors/ID/*.jpg every photo of the identities held out (non-mated probes).
    The 160 identities, sorted numerically, are shuffled with random.Random(seed); the first
    100 are enrolled and the other 60 held out.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENROLLED = 100


def data_root(arg: str | None) -> Path:
    for cand in (arg, os.environ.get("FACEGATE_DATA"), str(ROOT.parent / "shared" / "data")):
        if cand and (Path(cand) / "celeba-id" / "identities.csv").exists():
            return Path(cand).resolve()
    sys.exit("celeba-id/identities.csv not found: pass --data or set FACEGATE_DATA")


def write_labels(path: Path, rows: list[tuple[str, int, str]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "age", "gender"])
        w.writerows(rows)
    print(f"wrote {path.relative_to(ROOT)} ({len(rows)} photos)")


def attr_lists(root: Path, n: int, seed: int) -> None:
    utk = []
    for f in sorted(os.listdir(root / "utkface" / "images")):
        parts = f.split("_")
        utk.append((f"utkface/images/{f}", int(parts[0]), "male" if parts[1] == "0" else "female"))
    aaf = []
    with open(root / "aaf-train" / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            aaf.append((f"aaf-train/images/{row['file'].strip()}", int(row["age"]), row["gender"].strip()))
    rng = random.Random(seed)
    out = ROOT / "docs" / "eval"
    write_labels(out / f"attrs-utkface-{n}.csv", [utk[i] for i in sorted(rng.sample(range(len(utk)), n))])
    write_labels(out / f"attrs-aaf-{n}.csv", [aaf[i] for i in sorted(rng.sample(range(len(aaf)), n))])


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        dst.symlink_to(src)


def ident_tree(root: Path, tree: Path, seed: int) -> None:
    ids: dict[str, list[str]] = defaultdict(list)
    with open(root / "celeba-id" / "identities.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            ids[row["identity"].strip()].append(row["file"].strip())
    order = sorted(ids, key=lambda s: (int(s) if s.isdigit() else 0, s))
    random.Random(seed).shuffle(order)
    images = root / "celeba-id" / "images"
    for k, ident in enumerate(order):
        files = sorted(set(ids[ident]))
        for f in files:
            link(images / f, tree / "all" / ident / f)
        if k < ENROLLED:
            link(images / files[0], tree / "gallery" / ident / files[0])
            for f in files[1:]:
                link(images / f, tree / "probes" / ident / f)
        else:
            for f in files:
                link(images / f, tree / "distractors" / ident / f)
    print(f"{tree}: {ENROLLED} enrolled identities (first photo), {len(order) - ENROLLED} held out")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tree", type=Path, help="write the celeba-id folder-per-person links here")
    args = ap.parse_args()
    root = data_root(args.data)
    attr_lists(root, args.n, args.seed)
    if args.tree:
        ident_tree(root, args.tree, args.seed)


if __name__ == "__main__":
    main()
