#!/usr/bin/env python3
"""Age MAE and gender accuracy of `facegate analyze --json` on fixed aaf-train / utkface samples.

    python3 train/eval_attrs.py --data ../shared/data [--binary target/release/facegate] \
        [--n 500] [--seed 0] [--no-ref400] [--ref-check 40] [--reuse]

Samples (research data read in place, nothing copied):
  * `aaf`: --n photos of aaf-train (labels.csv: file,age,gender), numpy default_rng(seed)
    choice without replacement over the rows of labels.csv;
  * `utk`: --n photos of utkface/images (sorted names; AGE_GENDER_RACE_...; gender 0 = male),
    drawn from the same generator after the aaf draw;
  * `aaf400` / `utk400` (unless --no-ref400): exactly the 400 + 400 photos of
    train/export_faceres.py `eval_samples(root, 400)` (seed 0), on which models/faceres.toml
    [evaluation] was measured with the Python reference (onnxruntime, CenterFace 640x480 via
    train/ref_pipeline.py) -- a like-for-like check of the Rust pipeline.
All images go through one `facegate analyze --json` call. The largest face of each photo is
used; photos without a face are counted and left out of MAE / accuracy (also reported:
gender accuracy counting them as errors). Male = male_prob > 0.5; age = the `age` field.

--ref-check N additionally runs the Python reference (train/ref_pipeline.py detection and
alignment, onnxruntime on models/faceres.onnx, framing / normalisation / age rule from
models/faceres.toml) on the first N photos of each --n sample and compares landmarks, age and
male probability per photo with facegate's output (needs onnxruntime, onnx and Pillow).

Writes --out (default docs/eval/attrs.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_common as ec  # noqa: E402

ROOT = ec.ROOT
AGE_BANDS = [(0, 12), (13, 29), (30, 49), (50, 200)]


def all_aaf(root: Path):
    out = []
    for line in (root / "aaf-train" / "labels.csv").read_text().splitlines()[1:]:
        f, age, g = line.split(",")
        out.append((f"aaf-train/images/{f}", int(age), g.strip() == "male"))
    return out


def all_utk(root: Path):
    out = []
    for f in sorted(os.listdir(root / "utkface" / "images")):
        parts = f.split("_")
        out.append((f"utkface/images/{f}", int(parts[0]), parts[1] == "0"))
    return out


def samples(root: Path, n: int, seed: int):
    """Same construction as train/export_faceres.py eval_samples (one generator, aaf first)."""
    rng = np.random.default_rng(seed)
    aaf, utk = all_aaf(root), all_utk(root)
    a = [aaf[i] for i in sorted(rng.choice(len(aaf), n, replace=False))]
    u = [utk[i] for i in sorted(rng.choice(len(utk), n, replace=False))]
    return a, u


def score(items, res) -> dict:
    ages, pred_age, male, pmale, missed = [], [], [], [], []
    for path, age, is_male in items:
        f = ec.largest_face(res[path])
        if f is None:
            missed.append(path)
            continue
        ages.append(age)
        pred_age.append(float(f["age"]))
        male.append(is_male)
        pmale.append(float(f["male_prob"]))
    ages, pred_age = np.array(ages, float), np.array(pred_age, float)
    ok = (np.array(pmale) > 0.5) == np.array(male)
    err = np.abs(pred_age - ages)
    bands = {}
    for lo, hi in AGE_BANDS:
        m = (ages >= lo) & (ages <= hi)
        if m.any():
            bands[f"{lo}-{hi if hi < 200 else ''}".rstrip("-") + ("+" if hi >= 200 else "")] = {
                "n": int(m.sum()), "age_mae": round(float(err[m].mean()), 3),
                "gender_acc": round(float(ok[m].mean()), 4)}
    adult = ages >= 13
    return {
        "sampled": len(items), "faces_not_found": len(missed), "n": int(len(ages)),
        "age_mae": round(float(err.mean()), 3),
        "age_bias": round(float((pred_age - ages).mean()), 3),
        "age_median_abs_err": round(float(np.median(err)), 3),
        "gender_acc": round(float(ok.mean()), 4),
        "gender_acc_missing_as_error": round(float(ok.sum() / len(items)), 4),
        "n_13plus": int(adult.sum()), "gender_acc_13plus": round(float(ok[adult].mean()), 4),
        "by_age": bands, "missed_files": missed,
    }


def reference_check(root: Path, items, res, manifest: dict) -> dict:
    """Per-photo comparison with the Python reference pipeline."""
    import onnxruntime as ort
    import ref_pipeline as rp
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.log_severity_level = 3
    sess = ort.InferenceSession(str(ROOT / "models" / manifest["file"]), o,
                                providers=["CPUExecutionProvider"])
    size = int(manifest["input_size"][0])
    zoom = float(manifest["align_zoom"])
    mean = np.asarray(manifest["mean"], np.float32)
    std = np.asarray(manifest["std"], np.float32)
    bgr = manifest["colour"] == "BGR"
    rows = []
    for path, age, is_male in items:
        img = rp.load_rgb(root / path)
        dets = rp.detect(img)
        f = ec.largest_face(res[path])
        if not dets or f is None:
            rows.append({"image": path, "ref_faces": len(dets), "rust_faces": len(res[path].get("faces") or [])})
            continue
        area = lambda d: float((d[0][2] - d[0][0]) * (d[0][3] - d[0][1]))
        box, sc, lms = max(dets, key=area)
        crop = rp.align(img, lms, size, zoom)
        x = crop[..., ::-1] if bgr else crop
        x = ((x - mean) / std)[None].astype(np.float32)
        g, a, _ = sess.run(None, {manifest["input_name"]: x})
        p = a[0]
        idx = np.argsort(p, kind="stable")[::-1][:2]
        w = p[idx] / p[idx].sum()
        ref_age = float(1.0 + (idx * w).sum())
        rows.append({
            "image": path, "truth_age": age, "truth_male": is_male,
            "ref_faces": len(dets), "rust_faces": len(res[path]["faces"]),
            "landmark_max_abs_diff_px": round(float(np.abs(np.asarray(f["landmarks"]) - lms).max()), 3),
            "bbox_max_abs_diff_px": round(float(np.abs(np.asarray(f["bbox"]) - box).max()), 3),
            "ref_age": round(ref_age, 2), "rust_age": f["age"],
            "ref_male_prob": round(float(g[0, 0]), 4), "rust_male_prob": f["male_prob"],
        })
    ok = [r for r in rows if "ref_age" in r]
    lm = np.array([r["landmark_max_abs_diff_px"] for r in ok])
    da = np.array([abs(r["ref_age"] - r["rust_age"]) for r in ok])
    dp = np.array([abs(r["ref_male_prob"] - r["rust_male_prob"]) for r in ok])
    flips = sum((r["ref_male_prob"] > 0.5) != (r["rust_male_prob"] > 0.5) for r in ok)
    return {
        "photos": len(rows), "compared": len(ok),
        "face_count_differs": sum(r["ref_faces"] != r["rust_faces"] for r in rows),
        "detection_differs": [r["image"] for r in rows if "ref_age" not in r],
        "landmark_max_abs_diff_px": {"median": round(float(np.median(lm)), 3), "max": round(float(lm.max()), 3)},
        "age_abs_diff_years": {"mean": round(float(da.mean()), 3), "max": round(float(da.max()), 3)},
        "male_prob_abs_diff": {"mean": round(float(dp.mean()), 4), "max": round(float(dp.max()), 4)},
        "gender_decisions_differ": int(flips),
        "ref_age_mae": round(float(np.mean([abs(r["ref_age"] - r["truth_age"]) for r in ok])), 3),
        "rust_age_mae": round(float(np.mean([abs(r["rust_age"] - r["truth_age"]) for r in ok])), 3),
        "worst_age": sorted(ok, key=lambda r: -abs(r["ref_age"] - r["rust_age"]))[:3],
        "worst_landmarks": sorted(ok, key=lambda r: -r["landmark_max_abs_diff_px"])[:3],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="data folder (default $FACEGATE_DATA or ../shared/data)")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "facegate"))
    ap.add_argument("--n", type=int, default=500, help="photos per data set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-ref400", action="store_true",
                    help="skip the 400+400 photos of the Python reference evaluation")
    ap.add_argument("--ref-check", type=int, default=0, metavar="N",
                    help="compare the first N photos of each sample with train/ref_pipeline.py")
    ap.add_argument("--manifest", default=str(ROOT / "models" / "faceres.toml"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "eval" / "attrs.json"))
    ap.add_argument("--raw", default=str(ec.RAW_DIR / "attrs-analyze.jsonl"))
    ap.add_argument("--reuse", action="store_true", help="reuse the saved raw analyze output")
    args = ap.parse_args()

    root = ec.data_root(args.data, "aaf-train/labels.csv")
    manifest = ec.read_toml(Path(args.manifest))
    aaf, utk = samples(root, args.n, args.seed)
    sets = {"aaf": aaf, "utk": utk}
    if not args.no_ref400:
        a4, u4 = samples(root, 400, 0)
        sets.update({"aaf400": a4, "utk400": u4})
    images = sorted({p for items in sets.values() for p, _, _ in items})
    print(f"{len(images)} distinct photos ({', '.join(f'{k} {len(v)}' for k, v in sets.items())})",
          file=sys.stderr)

    res, run = ec.run_analyze(args.binary, root, images, False, Path(args.raw), args.reuse)
    unreadable = [p for p in images if "error" in res[p]]

    report: dict = {
        "what": "age / gender of facegate analyze on fixed samples; largest face per photo",
        "samples": {"aaf": f"aaf-train, {args.n} photos, numpy default_rng({args.seed}) choice over labels.csv rows",
                    "utk": f"utkface, {args.n} photos, same generator after the aaf draw, over sorted file names",
                    "aaf400/utk400": "train/export_faceres.py eval_samples(root, 400), seed 0 (the Python reference's photos)"},
        "rules": "male = male_prob > 0.5; age = `age` field; photos without a face left out of MAE/accuracy",
        "analyze_run": run, "unreadable": unreadable,
        "sets": {k: score(v, res) for k, v in sets.items()},
    }
    chosen = manifest.get("evaluation", {}).get("chosen")
    ref = None
    for fr in manifest.get("evaluation", {}).get("framings", []):
        if f"{fr['framing']} / {fr['normalisation']}" == chosen:
            ref = fr
    if ref:
        report["python_reference"] = {
            "source": f"models/faceres.toml [evaluation] '{chosen}' (onnxruntime, CenterFace via ref_pipeline, highest-score face)",
            "aaf400": {"n": ref["aaf_n"], "age_mae": ref["aaf_age_mae"], "gender_acc": ref["aaf_gender_acc"]},
            "utk400": {"n": ref["utk_n"], "age_mae": ref["utk_age_mae"], "gender_acc": ref["utk_gender_acc"]},
        }
    if args.ref_check:
        report["reference_check"] = {k: reference_check(root, sets[k][:args.ref_check], res, manifest)
                                     for k in ("aaf", "utk")}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    for k, s in report["sets"].items():
        line = (f"{k:7s} n={s['n']:3d}/{s['sampled']} (no face {s['faces_not_found']}): age MAE {s['age_mae']:.2f} "
                f"(bias {s['age_bias']:+.2f}), gender {100 * s['gender_acc']:.1f}% "
                f"(13+: {100 * s['gender_acc_13plus']:.1f}% of {s['n_13plus']})")
        if ref and k in report["python_reference"]:
            r = report["python_reference"][k]
            line += f" | Python ref n={r['n']}: MAE {r['age_mae']:.2f}, gender {100 * r['gender_acc']:.1f}%"
        print(line)
    for k, c in report.get("reference_check", {}).items():
        print(f"ref-check {k}: {c['compared']}/{c['photos']} compared, landmarks max diff median "
              f"{c['landmark_max_abs_diff_px']['median']} px / max {c['landmark_max_abs_diff_px']['max']} px, "
              f"age diff mean {c['age_abs_diff_years']['mean']} / max {c['age_abs_diff_years']['max']} y, "
              f"male_prob diff max {c['male_prob_abs_diff']['max']}, gender flips {c['gender_decisions_differ']}, "
              f"face count differs {c['face_count_differs']}")
    print(f"analyze: {run}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
