"""Fixed train/val splits of ../shared/data for the multi-task model (issue #3, phase 1).

    /work/venv-t/bin/python train/mtl/splits.py [--data ../shared/data]

Writes train/mtl/splits/{aaf,utkface,celeba-id}.csv (paths relative to the data root,
labels, split = train|val) and train/mtl/splits/summary.json. Only file names and labels;
no image data enters the repository. Deterministic: same data -> byte-identical files.

Rules
  * celeba-id: every photo of every identity that appears in docs/eval/celeba-id-pairs.csv
    (the verification pair list) is VAL; so are the identities of any other celeba list under
    docs/eval/. The pair list covers all 160 identities, so ALL of celeba-id is val and none
    of it is trained on (it is only used to check verification).
  * aaf-train and utkface: about 20 % val, stratified by (age band, gender) with the bands of
    train/eval_attrs.py (0-12, 13-29, 30-49, 50+). Photos the project already evaluates the
    teachers on are forced into VAL first, so the student can later be compared with the
    teachers on exactly those photos:
      - docs/eval/attrs-aaf-300.csv, docs/eval/attrs-utkface-300.csv (facegate eval attrs),
      - train/eval_attrs.py samples (n=500, seed 0) and train/export_faceres.py
        eval_samples (n=400, seed 0; the FaceRes framing evaluation).
    Each stratum is then topped up at random (random.Random(SEED)) to round(0.2 * its size).
    The forced photos are themselves uniform random samples, so val stays close to a random
    20 % of each stratum.
Caveats: UTKFace and AAF have no identity labels, so a person may appear in both train and
val of the same set; UTKFace is part of FaceRes's (the age/gender teacher's) training data.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "splits"
SEED = 0
VAL_FRACTION = 0.2
AGE_BANDS = [(0, 12), (13, 29), (30, 49), (50, 200)]


def data_root(arg):
    for c in [arg, os.environ.get("FACEGATE_DATA"), ROOT.parent / "shared" / "data"]:
        if c and (Path(c) / "celeba-id").is_dir():
            return Path(c).resolve()
    raise SystemExit("data folder not found: pass --data or set FACEGATE_DATA")


def band(age: int) -> int:
    return next(i for i, (lo, hi) in enumerate(AGE_BANDS) if lo <= age <= hi)


def all_aaf(root):
    out = []
    with open(root / "aaf-train" / "labels.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            out.append({"path": f"aaf-train/images/{r['file'].strip()}", "age": int(r["age"]),
                        "gender": r["gender"].strip()})
    return out


def all_utk(root):
    out = []
    for f in sorted(os.listdir(root / "utkface" / "images")):
        p = f.split("_")
        race = p[2] if len(p) >= 4 and p[2].isdigit() else ""
        out.append({"path": f"utkface/images/{f}", "age": int(p[0]),
                    "gender": "male" if p[1] == "0" else "female", "race": race})
    return out


def seeded_np_samples(aaf, utk, n, seed):
    """train/eval_attrs.py samples() == train/export_faceres.py eval_samples() (aaf first)."""
    rng = np.random.default_rng(seed)
    a = {aaf[i]["path"] for i in rng.choice(len(aaf), n, replace=False)}
    u = {utk[i]["path"] for i in rng.choice(len(utk), n, replace=False)}
    return a, u


def read_paths(csv_path: Path, cols=("path",)):
    if not csv_path.exists():
        return set()
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {r[c] for r in rows for c in cols if c in r}


def stratified(items, forced, rng):
    strata = {}
    for i, it in enumerate(items):
        strata.setdefault((band(it["age"]), it["gender"]), []).append(i)
    val = set()
    for key in sorted(strata):
        idx = strata[key]
        f = [i for i in idx if items[i]["path"] in forced]
        rest = [i for i in idx if items[i]["path"] not in forced]
        want = round(VAL_FRACTION * len(idx))
        val.update(f)
        if want > len(f):
            val.update(rng.sample(rest, want - len(f)))
    for i, it in enumerate(items):
        it["split"] = "val" if i in val else "train"
    return items


def write(path: Path, rows, cols):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([r[c] for c in cols])


def counts(rows):
    out = {}
    for s in ("train", "val"):
        rs = [r for r in rows if r["split"] == s]
        out[s] = {"photos": len(rs)}
        if rs and "age" in rs[0]:
            out[s]["by_band_gender"] = {
                f"{AGE_BANDS[b][0]}-{AGE_BANDS[b][1] if AGE_BANDS[b][1] < 200 else ''}/{g}":
                    sum(1 for r in rs if band(r["age"]) == b and r["gender"] == g)
                for b in range(len(AGE_BANDS)) for g in ("female", "male")}
        if rs and "identity" in rs[0]:
            out[s]["identities"] = len({r["identity"] for r in rs})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data")
    args = ap.parse_args()
    root = data_root(args.data)
    OUT.mkdir(parents=True, exist_ok=True)
    ev = ROOT / "docs" / "eval"

    aaf, utk = all_aaf(root), all_utk(root)
    a500, u500 = seeded_np_samples(aaf, utk, 500, 0)
    a400, u400 = seeded_np_samples(aaf, utk, 400, 0)
    lists = sorted(p.name for p in ev.glob("*.csv"))
    forced_aaf = a500 | a400 | read_paths(ev / "attrs-aaf-300.csv")
    forced_utk = u500 | u400 | read_paths(ev / "attrs-utkface-300.csv")
    # any other list under docs/eval naming aaf/utk photos is forced into val as well
    for name in lists:
        ps = read_paths(ev / name, ("path", "path_a", "path_b"))
        forced_aaf |= {p for p in ps if p.startswith("aaf-train/")}
        forced_utk |= {p for p in ps if p.startswith("utkface/")}
    stratified(aaf, forced_aaf, random.Random(SEED))
    stratified(utk, forced_utk, random.Random(SEED + 1))

    ids = {}
    with open(root / "celeba-id" / "identities.csv", newline="") as fh:
        cel = [{"path": f"celeba-id/images/{r['file'].strip()}", "identity": r["identity"].strip(),
                "gender": r["gender"].strip()} for r in csv.DictReader(fh)]
    for r in cel:
        ids[r["path"]] = r["identity"]
    eval_paths = set()
    for name in lists:
        eval_paths |= {p for p in read_paths(ev / name, ("path", "path_a", "path_b")) if p.startswith("celeba-id/")}
    unknown = sorted(p for p in eval_paths if p not in ids)
    if unknown:
        raise SystemExit(f"{len(unknown)} celeba-id paths in docs/eval lists are not in identities.csv: {unknown[:3]}")
    val_ids = {ids[p] for p in eval_paths}
    for r in cel:
        r["split"] = "val" if r["identity"] in val_ids else "train"

    write(OUT / "aaf.csv", aaf, ["path", "age", "gender", "split"])
    write(OUT / "utkface.csv", utk, ["path", "age", "gender", "race", "split"])
    write(OUT / "celeba-id.csv", cel, ["path", "identity", "gender", "split"])
    summary = {
        "seed": SEED, "val_fraction": VAL_FRACTION, "age_bands": AGE_BANDS,
        "docs_eval_lists_read": lists,
        "forced_into_val": {"aaf": len(forced_aaf), "utkface": len(forced_utk),
                            "celeba-id_photos_in_eval_lists": len(eval_paths),
                            "celeba-id_identities_in_eval_lists": len(val_ids)},
        "aaf": counts(aaf), "utkface": counts(utk), "celeba-id": counts(cel),
        "note": "celeba-id: every identity is in the verification pair list, so all of it is val",
    }
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for k in ("aaf", "utkface", "celeba-id"):
        print(k, {s: v["photos"] for s, v in summary[k].items()})
    print("forced into val:", summary["forced_into_val"])


if __name__ == "__main__":
    main()
