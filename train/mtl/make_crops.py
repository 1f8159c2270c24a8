"""Aligned 112x112 face crops, face/non-face negatives and teacher targets for train/mtl.

    /work/venv-t/bin/python train/mtl/make_crops.py [--data ../shared/data] [--out /work/cache/mtl]
        [--sets aaf,utkface,celeba-id] [--limit N] [--workers 2]

Input: the split lists train/mtl/splits/*.csv (train/mtl/splits.py). Output (OUTSIDE the repo,
research-only pixels): OUT/<set>.npz per set and OUT/<set>.json with the counts. Each npz row
is one 112x112 RGB uint8 crop:
  crops   uint8 [N,112,112,3]   kind  int8 [N]: 0 face, 1 background, 2 badly aligned
  src     str [N]  photo path relative to the data root       split str [N]: train | val
  age int16 (-1 unknown), male int8 (1/0, -1 unknown), identity int32 (-1 unknown)
  lm      float32 [N,5,2]  the landmarks the crop was aligned with (image pixels)
  det_score float32 (faces; NaN otherwise)   perturb str [N] (negatives: what was done)
  teacher_emb   float32 [N,192]  models/mobilefacenet.onnx on the float crop (NaN for negatives)
  teacher_male  float32 [N]      models/faceres.onnx gender output (P(male)); NaN for negatives
  teacher_age_p float32 [N,100]  models/faceres.onnx age softmax (bin k = k+1 years)
  teacher_age   float32 [N]      FaceRes age by the manifest's rule (1 + top-2 renormalised expectation)

Faces: train/ref_pipeline.py (the numpy+onnxruntime port of facegate's detector and aligner,
checked against the Rust code by tests/pipeline.rs): detect_auto (facegate's input-size
choice, pick_size), largest box, align(img, lm, 112). The stored crop is the aligner's float
output rounded to uint8; the teachers see the float crop, as in the product. FaceRes gets its
own crop as models/faceres.toml says: align(img, lm, 224, zoom 0.8), BGR, minus the VGG mean.
MobileFaceNet: RGB, (x - 127.5) / 128 (models/mobilefacenet.toml).

Negatives, per photo with a face (seeded per photo: numpy default_rng([SEED, photo index])):
  background  up to --bg-per-photo crops: the same similarity warp (align() on a 5-point set)
              with the ArcFace template placed on a random square (side 12-70 % of the
              shorter image side, log-uniform; rotation +-30 deg) whose rotated footprint
              lies >= 70 % inside the image and does not overlap any detected face box
              enlarged by 25 % per side. 40 tries per crop; a photo may give none (tight
              UTKFace crops rarely have room).
  misaligned  --bad-per-photo crops: the face's alignment M composed with a strong
              perturbation P in crop space (landmarks = (P M)^-1(template), so align()
              reproduces P M): one of shift (0.35-0.75 of the crop, any direction), rotate
              (50-180 deg), zoom_in (x2.0-3.5 about a point up to 20 px off centre) or
              zoom_out (x0.30-0.45), each with a small jitter of the others.
Detection misses are counted and give no rows.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "train"))
import ref_pipeline as rp  # noqa: E402

SEED = 1234
SETS = {"aaf": "aaf.csv", "utkface": "utkface.csv", "celeba-id": "celeba-id.csv"}
FACERES_MEAN = np.array([103.939, 116.779, 123.68], np.float32)  # models/faceres.toml, BGR order
KIND = {"face": 0, "background": 1, "misaligned": 2}


def data_root(arg):
    for c in [arg, os.environ.get("FACEGATE_DATA"), ROOT.parent / "shared" / "data"]:
        if c and (Path(c) / "celeba-id").is_dir():
            return Path(c).resolve()
    raise SystemExit("data folder not found: pass --data or set FACEGATE_DATA")


def check_manifests():
    """Fail loudly if the manifests no longer say what this script assumes."""
    import tomllib
    m = tomllib.loads((ROOT / "models" / "mobilefacenet.toml").read_text())
    assert m["layout"] == "NHWC" and m["colour"] == "RGB" and m["mean"] == [127.5] * 3 and m["std"] == [128.0] * 3
    f = tomllib.loads((ROOT / "models" / "faceres.toml").read_text())
    assert f["colour"] == "BGR" and f["std"] == [1, 1, 1] and f["align_zoom"] == 0.8 and f["input_size"] == [224, 224]
    assert np.allclose(f["mean"], FACERES_MEAN)
    assert f["age_rule"] == "top2-renormalised-expectation+1"


_S = {}


def sessions():
    if not _S:
        import onnxruntime as ort
        o = ort.SessionOptions()
        o.intra_op_num_threads = 1
        o.inter_op_num_threads = 1
        o.log_severity_level = 3
        for k in ("mobilefacenet", "faceres"):
            _S[k] = ort.InferenceSession(str(ROOT / "models" / f"{k}.onnx"), o, providers=["CPUExecutionProvider"])
    return _S


def teacher_emb(crop112_f32):
    s = sessions()["mobilefacenet"]
    return s.run(None, {"input": rp.embedder_input(crop112_f32)})[0][0]


def faceres_age(p):
    idx = np.argsort(p, kind="stable")[::-1][:2]
    w = p[idx] / p[idx].sum()
    return float(1.0 + (idx * w).sum())


def teacher_attrs(img, lm):
    crop = rp.align(img, lm, 224, 0.8)
    x = (crop[..., ::-1] - FACERES_MEAN)[None].astype(np.float32)
    g, a, _ = sessions()["faceres"].run(None, {"input": x})
    return float(g[0, 0]), a[0].astype(np.float32)


def sim(scale, theta, tx, ty):
    c, s = scale * math.cos(theta), scale * math.sin(theta)
    return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]], np.float64)


def apply(m, pts):
    return pts @ m[:2, :2].T + m[:2, 2]


def background_landmarks(rng, w, h, boxes):
    """5 template points on a random face-free square, or None."""
    tpl = rp.template(112)
    short = min(w, h)
    forbid = []
    for b in boxes:
        bw, bh = b[2] - b[0], b[3] - b[1]
        forbid.append((b[0] - 0.25 * bw, b[1] - 0.25 * bh, b[2] + 0.25 * bw, b[3] + 0.25 * bh))
    for _ in range(40):
        side = short * math.exp(rng.uniform(math.log(0.12), math.log(0.70)))
        th = math.radians(rng.uniform(-30, 30))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        # crop (u,v) -> image: centre + R * (u - 56, v - 56) * side / 112
        m = sim(side / 112, th, 0, 0)
        corners = apply(m, np.array([[-56, -56], [56, -56], [56, 56], [-56, 56]], float)) + [cx, cy]
        x0, y0 = corners.min(0)
        x1, y1 = corners.max(0)
        inside = max(0, min(x1, w) - max(x0, 0)) * max(0, min(y1, h) - max(y0, 0)) / ((x1 - x0) * (y1 - y0))
        if inside < 0.7:
            continue
        if any(x0 < f[2] and f[0] < x1 and y0 < f[3] and f[1] < y1 for f in forbid):
            continue
        return apply(m, tpl - 56.0) + [cx, cy], f"bg side={side:.0f} rot={math.degrees(th):.0f}"
    return None


def misaligned_landmarks(rng, lm):
    tpl = rp.template(112)
    a = rp.umeyama(lm, tpl)
    mface = np.vstack([a, [0, 0, 1]])
    kind = ["shift", "rotate", "zoom_in", "zoom_out"][rng.integers(4)]
    d = rng.uniform(0.35, 0.75) * 112 if kind == "shift" else rng.uniform(0, 8)
    phi = rng.uniform(0, 2 * math.pi)
    th = math.radians(rng.choice([-1, 1]) * rng.uniform(50, 180)) if kind == "rotate" else math.radians(rng.uniform(-10, 10))
    sc = (rng.uniform(2.0, 3.5) if kind == "zoom_in" else rng.uniform(0.30, 0.45) if kind == "zoom_out"
          else rng.uniform(0.85, 1.15))
    off = rng.uniform(-20, 20, 2) if kind == "zoom_in" else (rng.uniform(-15, 15, 2) if kind == "zoom_out" else np.zeros(2))
    # P: about the crop centre (56,56)+off: scale and rotate, then shift by d in direction phi
    c = np.array([56.0, 56.0]) + off
    p = (sim(1, 0, c[0] + d * math.cos(phi), c[1] + d * math.sin(phi)) @ sim(sc, th, 0, 0)
         @ sim(1, 0, -c[0], -c[1]))
    pm = p @ mface
    lm2 = apply(np.linalg.inv(pm), tpl)
    desc = f"{kind} d={d:.0f} rot={math.degrees(th):.0f} scale={sc:.2f}"
    return lm2, desc


def process(job):
    """One photo -> list of row dicts."""
    idx, root, row, set_name, n_bg, n_bad = job
    rng = np.random.default_rng([SEED, idx])
    img = rp.load_rgb(Path(root) / row["path"])
    h, w = img.shape[:2]
    dets = rp.detect_auto(img)
    if not dets:
        return idx, [], {"no_face": 1}
    area = lambda d: float((d[0][2] - d[0][0]) * (d[0][3] - d[0][1]))
    box, score, lm = max(dets, key=area)
    lm = lm.astype(np.float64)
    base = {"src": row["path"], "split": row["split"],
            "age": int(row["age"]) if row.get("age", "") != "" else -1,
            "male": {"male": 1, "female": 0}.get(row.get("gender", ""), -1),
            "identity": int(row["identity"]) if row.get("identity", "") != "" else -1}
    crop = rp.align(img, lm, 112)
    g, ap = teacher_attrs(img, lm)
    rows = [dict(base, kind=0, crop=np.clip(np.floor(crop + 0.5), 0, 255).astype(np.uint8), lm=lm,
                 det_score=score, perturb="", emb=teacher_emb(crop), tmale=g, tage_p=ap, tage=faceres_age(ap))]
    boxes = [d[0] for d in dets]
    for _ in range(n_bg):
        r = background_landmarks(rng, w, h, boxes)
        if r is None:
            break
        l2, desc = r
        c2 = rp.align(img, l2, 112)
        rows.append(dict(base, kind=1, crop=np.clip(np.floor(c2 + 0.5), 0, 255).astype(np.uint8), lm=l2, perturb=desc))
    for _ in range(n_bad):
        l2, desc = misaligned_landmarks(rng, lm)
        c2 = rp.align(img, l2, 112)
        rows.append(dict(base, kind=2, crop=np.clip(np.floor(c2 + 0.5), 0, 255).astype(np.uint8), lm=l2, perturb=desc))
    return idx, rows, {"no_face": 0, "faces_in_photo": len(dets)}


def pack(rows):
    n = len(rows)
    nan = float("nan")
    out = {
        "crops": np.stack([r["crop"] for r in rows]) if n else np.zeros((0, 112, 112, 3), np.uint8),
        "kind": np.array([r["kind"] for r in rows], np.int8),
        "src": np.array([r["src"] for r in rows]),
        "split": np.array([r["split"] for r in rows]),
        "age": np.array([r["age"] for r in rows], np.int16),
        "male": np.array([r["male"] for r in rows], np.int8),
        "identity": np.array([r["identity"] for r in rows], np.int32),
        "lm": np.array([r["lm"] for r in rows], np.float32).reshape(n, 5, 2),
        "det_score": np.array([r.get("det_score", nan) for r in rows], np.float32),
        "perturb": np.array([r["perturb"] for r in rows]),
        "teacher_emb": np.stack([r.get("emb", np.full(192, nan, np.float32)) for r in rows]).astype(np.float32),
        "teacher_male": np.array([r.get("tmale", nan) for r in rows], np.float32),
        "teacher_age_p": np.stack([r.get("tage_p", np.full(100, nan, np.float32)) for r in rows]).astype(np.float32),
        "teacher_age": np.array([r.get("tage", nan) for r in rows], np.float32),
    }
    return out


def counts(d, photos, no_face):
    c = {"photos": photos, "no_face": no_face}
    for s in ("train", "val"):
        m = d["split"] == s
        c[s] = {k: int(((d["kind"] == v) & m).sum()) for k, v in KIND.items()}
        c[s]["photos"] = int(len(set(d["src"][m & (d["kind"] == 0)])))
    per = {}
    for p in d["perturb"][d["kind"] == 2]:
        per[p.split()[0]] = per.get(p.split()[0], 0) + 1
    c["misaligned_by_type"] = per
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data")
    ap.add_argument("--out", default="/work/cache/mtl")
    ap.add_argument("--sets", default="aaf,utkface,celeba-id")
    ap.add_argument("--limit", type=int, default=0, help="first N photos of each set (smoke test)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bg-per-photo", type=int, default=1)
    ap.add_argument("--bad-per-photo", type=int, default=1)
    args = ap.parse_args()
    check_manifests()
    root = data_root(args.data)
    out = Path(args.out)
    if out.resolve().is_relative_to(ROOT):
        raise SystemExit("--out must be outside the repository (research-only pixels)")
    out.mkdir(parents=True, exist_ok=True)
    for set_name in args.sets.split(","):
        with open(HERE / "splits" / SETS[set_name], newline="") as fh:
            rows = list(csv.DictReader(fh))
        if args.limit:
            rows = rows[:args.limit]
        jobs = [(i, str(root), r, set_name, args.bg_per_photo, args.bad_per_photo) for i, r in enumerate(rows)]
        t0 = time.time()
        results = {}
        no_face = 0
        if args.workers > 1:
            import multiprocessing as mp
            with mp.get_context("fork").Pool(args.workers) as pool:
                for k, (i, rs, info) in enumerate(pool.imap_unordered(process, jobs, chunksize=8)):
                    results[i] = rs
                    no_face += info["no_face"]
                    if (k + 1) % 500 == 0:
                        print(f"  {set_name}: {k + 1}/{len(jobs)} photos, {time.time() - t0:.0f} s", flush=True)
        else:
            for k, job in enumerate(jobs):
                i, rs, info = process(job)
                results[i] = rs
                no_face += info["no_face"]
                if (k + 1) % 500 == 0:
                    print(f"  {set_name}: {k + 1}/{len(jobs)} photos, {time.time() - t0:.0f} s", flush=True)
        flat = [r for i in sorted(results) for r in results[i]]
        d = pack(flat)
        np.savez(out / f"{set_name}.npz", **d)
        c = counts(d, len(rows), no_face)
        c["seconds"] = round(time.time() - t0, 1)
        c["no_face_photos"] = [r["path"] for i, r in enumerate(rows) if not results.get(i)][:50]
        (out / f"{set_name}.json").write_text(json.dumps(c, indent=1) + "\n")
        print(set_name, json.dumps({k: v for k, v in c.items() if k != "no_face_photos"}), flush=True)


if __name__ == "__main__":
    main()
