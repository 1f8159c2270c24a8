#!/usr/bin/env python3
"""Images per second: `facegate analyze --json --embeddings` (release binary, tract, 1 thread)
against the same three ONNX models run by onnxruntime (1 intra-op thread) from Python doing the
same work per image.

Per image, both sides: decode (EXIF-upright RGB), CenterFace at 640x480 (letterbox, run,
decode, NMS), then for every face found: the 5-point similarity alignment to 112 px and the
MobileFaceNet embedding (L2-normalised), and the alignment to 224 px at zoom 0.8 and HSE FaceRes
age/gender (BGR, mean [103.939, 116.779, 123.68], std 1). The onnxruntime side reuses
train/ref_pipeline.py (preprocess, decode, nms, align, load_rgb) so its preprocessing is the
project's numpy reference.

Note: `facegate analyze --json` computes the embedding only with `--embeddings`
(`Want { embedding: embeddings, .. }` in src/commands.rs), so the comparison runs facegate
with `--embeddings`; the plain `--json` run (no embedder) is measured too, for information.

Method (the machine is shared and noisy, so only medians of interleaved runs are quoted):
  * each round runs: facegate start-up alone (`analyze --json` on a path that does not exist:
    process start, model parse + optimise + warm-up, then one error line), then facegate on
    the image list and onnxruntime on the same list, alternating which goes first;
  * facegate is one process over the whole list; its images/s is
    n / (wall - median start-up of the same run), and a steady-state rate from the times at
    which its per-image JSON lines arrive (it flushes after each image) is kept as a check;
  * onnxruntime runs in this process with sessions made once (their creation is timed as its
    start-up); per-stage times are summed per run; medians are over rounds.

Usage (from the repository root, release binary built):
  /work/venv-a/bin/python benches/analyze_vs_onnxruntime.py [--rounds 5] [--n 100] [--seed 0]
The data folder is read in place (research-only; nothing is copied).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

# One thread for numpy's BLAS too, so the Python side does not borrow the second core.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "train"))
import ref_pipeline as ref  # noqa: E402

DATA = Path(os.environ.get("FACEGATE_DATA", ROOT.parent / "shared" / "data"))
DET_W, DET_H = 640, 480
FACERES_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
STAGES = ("decode", "det_pre", "det_run", "det_post", "align", "embed", "attr")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ------------------------------------------------------------------------------ onnxruntime

def clean_model(path: Path, input_shape=None) -> bytes:
    """The model with initializers removed from the graph inputs (so onnxruntime may
    constant-fold and fuse them; tract treats them as constants anyway) and, if given, the
    input shape pinned as facegate's build pins it. The maths is unchanged."""
    m = onnx.load(str(path))
    inits = {i.name for i in m.graph.initializer}
    keep = [i for i in m.graph.input if i.name not in inits]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    if input_shape is not None:
        dims = m.graph.input[0].type.tensor_type.shape.dim
        for d, v in zip(dims, input_shape):
            d.ClearField("dim_param")
            d.dim_value = v
    return m.SerializeToString()


def session(model, threads=1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


class OrtPipeline:
    def __init__(self):
        t = time.perf_counter()
        self.det = session(clean_model(ROOT / "models/centerface.onnx", [1, 3, DET_H, DET_W]))
        self.emb = session(clean_model(ROOT / "models/mobilefacenet.onnx"))
        self.att = session(clean_model(ROOT / "models/faceres.onnx"))
        self.det_in = self.det.get_inputs()[0].name
        self.emb_in = self.emb.get_inputs()[0].name
        self.att_in = self.att.get_inputs()[0].name
        self.att_out = [o.name for o in self.att.get_outputs()]
        # One warm-up each, as facegate does at load.
        self.det.run(None, {self.det_in: np.full((1, 3, DET_H, DET_W), 0.5, np.float32)})
        self.emb.run(None, {self.emb_in: np.full((1, 112, 112, 3), 0.5, np.float32)})
        self.att.run(None, {self.att_in: np.full((1, 224, 224, 3), 0.5, np.float32)})
        self.startup_s = time.perf_counter() - t

    def analyze(self, path: Path, times: dict) -> list:
        """Same work as facegate's Pipeline::analyze with embedding and attributes."""
        clock = time.perf_counter
        t0 = clock()
        img = ref.load_rgb(path)
        t1 = clock()
        blob, sx, sy = ref.preprocess(img, (DET_W, DET_H))
        blob = blob.astype(np.float32)
        t2 = clock()
        heat, scale, offset, lms = self.det.run(None, {self.det_in: blob})
        t3 = clock()
        boxes, lm = ref.decode(heat, scale, offset, lms, (DET_H, DET_W), ref.SCORE_THRESHOLD)
        h, w = img.shape[:2]
        faces = []
        for i in ref.nms(boxes[:, :4], boxes[:, 4], ref.NMS_IOU):
            b = boxes[i, :4].astype(np.float64) / [sx, sy, sx, sy]
            b = np.clip(b, 0, [w, h, w, h]).astype(np.float32)
            pts = (lm[i].reshape(5, 2).astype(np.float64) / [sx, sy]).astype(np.float32)
            if min(b[2] - b[0], b[3] - b[1]) >= 8.0:  # facegate's min_face
                faces.append((b, float(boxes[i, 4]), pts))
        t4 = clock()
        times["decode"] += t1 - t0
        times["det_pre"] += t2 - t1
        times["det_run"] += t3 - t2
        times["det_post"] += t4 - t3
        out = []
        for b, score, pts in faces:
            a0 = clock()
            crop112 = ref.align(img, pts, 112, 1.0)
            crop224 = np.floor(ref.align(img, pts, 224, 0.8) + 0.5).clip(0, 255)
            a1 = clock()
            x = ref.embedder_input(np.floor(crop112 + 0.5).clip(0, 255))
            e = self.emb.run(None, {self.emb_in: x})[0][0]
            e = e / np.linalg.norm(e)
            a2 = clock()
            xa = (crop224[..., ::-1] - FACERES_MEAN_BGR)[None].astype(np.float32)
            res = dict(zip(self.att_out, self.att.run(None, {self.att_in: xa})))
            p = res["age"][0]
            top = np.argsort(-p, kind="stable")[:2]
            age = 1.0 + float((p[top] * top).sum() / p[top].sum())
            male = float(res["gender"][0, 0])
            a3 = clock()
            times["align"] += a1 - a0
            times["embed"] += a2 - a1
            times["attr"] += a3 - a2
            out.append({"bbox": b.tolist(), "score": score, "embedding": e, "age": age, "male_prob": male})
        return out


def run_ort(pipe: OrtPipeline, images: list[Path]) -> dict:
    times = dict.fromkeys(STAGES, 0.0)
    results = []
    t = time.perf_counter()
    for p in images:
        results.append(pipe.analyze(p, times))
    wall = time.perf_counter() - t
    return {"wall_s": wall, "stages_s": times, "results": results}


# --------------------------------------------------------------------------------- facegate

def run_facegate(binary: Path, images: list[Path], embeddings=True) -> dict:
    cmd = [str(binary), "analyze", "--json"] + (["--embeddings"] if embeddings else [])
    cmd += [str(p) for p in images]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stamps, lines = [], []
    for line in iter(proc.stdout.readline, b""):
        stamps.append(time.perf_counter() - t0)
        lines.append(line)
    err = proc.stderr.read()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    objs = [json.loads(l) for l in lines]
    bad = [o for o in objs if "error" in o]
    if rc != 0 or bad or len(objs) != len(images):
        raise SystemExit(f"facegate failed (rc {rc}): {bad[:2]} {err.decode()[-500:]}")
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"wall_s": wall, "first_line_s": stamps[0], "steady_ips": steady, "results": objs}


def facegate_startup(binary: Path) -> float:
    """Whole-process start-up of `analyze`: models load, then one missing file is reported."""
    t0 = time.perf_counter()
    r = subprocess.run([str(binary), "analyze", "--json", "/nonexistent/facegate-bench.jpg"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if b"error" not in r.stdout:
        raise SystemExit(f"unexpected start-up run output: {r.stdout[:200]!r}")
    return wall


# ----------------------------------------------------------------------------------- checks

def agreement(fg: list, ox: list) -> dict:
    """Face counts, and for images where both found faces: embedding cosine, age and gender
    differences of the first (largest / highest-scoring) face."""
    same_count = sum(len(a["faces"]) == len(b) for a, b in zip(fg, ox))
    cos, dage, dmale = [], [], []
    for a, b in zip(fg, ox):
        if not a["faces"] or not b:
            continue
        fa = a["faces"][0]
        # facegate sorts by box area, the reference by score: pair by box overlap.
        fb = min(b, key=lambda f: float(np.abs(np.array(f["bbox"]) - np.array(fa["bbox"])).sum()))
        if "embedding" in fa:
            cos.append(float(np.dot(np.asarray(fa["embedding"], np.float32), fb["embedding"])))
        dage.append(abs(fa["age"] - fb["age"]))
        dmale.append(abs(fa["male_prob"] - fb["male_prob"]))
    return {
        "images": len(fg),
        "same_face_count": same_count,
        "faces_facegate": sum(len(a["faces"]) for a in fg),
        "faces_ort": sum(len(b) for b in ox),
        "min_embedding_cosine": min(cos) if cos else None,
        "median_embedding_cosine": median(cos) if cos else None,
        "max_age_diff_years": max(dage) if dage else None,
        "max_male_prob_diff": max(dmale) if dmale else None,
    }


def ort_detector_as_shipped(n=8) -> dict:
    """Detector run alone, onnxruntime on models/centerface.onnx as shipped (initializers listed
    as graph inputs, symbolic H/W) vs cleaned, interleaved."""
    shipped = session((ROOT / "models/centerface.onnx").read_bytes())
    cleaned = session(clean_model(ROOT / "models/centerface.onnx", [1, 3, DET_H, DET_W]))
    x = np.random.default_rng(0).integers(0, 256, (1, 3, DET_H, DET_W)).astype(np.float32)
    name = shipped.get_inputs()[0].name
    ts = {"shipped": [], "cleaned": []}
    for s in (shipped, cleaned):
        s.run(None, {name: x})
    for _ in range(n):
        for k, s in (("shipped", shipped), ("cleaned", cleaned)):
            t = time.perf_counter()
            s.run(None, {name: x})
            ts[k].append(time.perf_counter() - t)
    return {k: median(v) * 1e3 for k, v in ts.items()} | {"runs_each": n}


# ------------------------------------------------------------------------------------- main

def pick_celeba(n: int, seed: int) -> list[Path]:
    folder = DATA / "celeba-id" / "images"
    if not folder.is_dir():
        raise SystemExit(f"{folder} not found; set FACEGATE_DATA to the shared data folder")
    files = sorted(folder.glob("*.jpg"))
    return sorted(random.Random(seed).sample(files, n))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=Path, default=ROOT / "target/release/facegate")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=100, help="celeba-id images (fixed seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples-repeat", type=int, default=5,
                    help="the 4 bundled photos are listed this many times in one run")
    ap.add_argument("--no-plain", action="store_true", help="skip facegate without --embeddings")
    ap.add_argument("--out", type=Path, default=ROOT / "benches/results/analyze_vs_onnxruntime.json")
    args = ap.parse_args()

    if not args.binary.exists():
        raise SystemExit(f"{args.binary} missing: run `cargo build --release` first")
    sets = {
        "celeba-id": pick_celeba(args.n, args.seed),
        "samples": [ROOT / "assets/samples" / f for f in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")]
        * args.samples_repeat,
    }
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, python {platform.python_version()}",
          file=sys.stderr)
    pipe = OrtPipeline()
    ort_startups = [pipe.startup_s]

    raw = {k: {"facegate": [], "facegate_plain": [], "ort": [], "ort_stages": []} for k in sets}
    fg_startups = []
    checks = {}
    for r in range(args.rounds):
        fg_startups.append(facegate_startup(args.binary))
        if r > 0:  # a fresh set of sessions now and then, for the start-up median
            ort_startups.append(OrtPipeline().startup_s)
        for name, images in sets.items():
            order = ("fg", "ort") if r % 2 == 0 else ("ort", "fg")
            for who in order:
                if who == "fg":
                    fg = run_facegate(args.binary, images)
                    raw[name]["facegate"].append(fg)
                else:
                    ox = run_ort(pipe, images)
                    raw[name]["ort"].append(ox)
            if not args.no_plain:
                raw[name]["facegate_plain"].append(run_facegate(args.binary, images, embeddings=False))
            if r == 0:
                checks[name] = agreement(raw[name]["facegate"][0]["results"], raw[name]["ort"][0]["results"])
        last = {k: (len(sets[k]) / raw[k]["facegate"][-1]["wall_s"], len(sets[k]) / raw[k]["ort"][-1]["wall_s"])
                for k in sets}
        print(f"round {r + 1}/{args.rounds}: start-up {fg_startups[-1]:.3f}s; "
              + "; ".join(f"{k} fg {a:.2f} ort {b:.2f} img/s (gross)" for k, (a, b) in last.items()),
              file=sys.stderr)

    su = median(fg_startups)
    summary = {}
    for name, images in sets.items():
        n = len(images)
        fg_net = [n / max(x["wall_s"] - su, 1e-9) for x in raw[name]["facegate"]]
        fg_gross = [n / x["wall_s"] for x in raw[name]["facegate"]]
        fg_steady = [x["steady_ips"] for x in raw[name]["facegate"]]
        plain = [n / max(x["wall_s"] - su, 1e-9) for x in raw[name]["facegate_plain"]]
        ort_ips = [n / x["wall_s"] for x in raw[name]["ort"]]
        # Per-round ratio (facegate net / ort) then its median: both measured side by side.
        ratios = [a / b for a, b in zip(fg_net, ort_ips)]
        stages = {s: median([x["stages_s"][s] for x in raw[name]["ort"]]) for s in STAGES}
        total = sum(stages.values())
        summary[name] = {
            "images_per_run": n,
            "faces_per_run": checks[name]["faces_facegate"],
            "facegate_ips_net_of_startup": median(fg_net),
            "facegate_ips_gross": median(fg_gross),
            "facegate_ips_steady_from_line_times": median(fg_steady),
            "facegate_plain_json_ips_net_of_startup": median(plain) if plain else None,
            "ort_ips": median(ort_ips),
            "ratio_facegate_over_ort": median(ratios),
            "ratios_per_round": ratios,
            "ort_stage_ms_per_image": {s: 1e3 * v / n for s, v in stages.items()},
            "ort_stage_share": {s: v / total for s, v in stages.items()},
            "runs": {
                "facegate_wall_s": [x["wall_s"] for x in raw[name]["facegate"]],
                "facegate_plain_wall_s": [x["wall_s"] for x in raw[name]["facegate_plain"]],
                "ort_wall_s": [x["wall_s"] for x in raw[name]["ort"]],
            },
            "agreement_round1": checks[name],
        }
    det_cmp = ort_detector_as_shipped()
    result = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, shared and noisy; {platform.processor() or platform.machine()}",
        "rounds": args.rounds,
        "seed": args.seed,
        "binary": str(args.binary.relative_to(ROOT) if args.binary.is_relative_to(ROOT) else args.binary),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "threads": "facegate/tract single-threaded; onnxruntime intra_op=1 inter_op=1 sequential; BLAS 1 thread",
        "facegate_startup_s_median": su,
        "facegate_startup_s_runs": fg_startups,
        "ort_session_startup_s_median": median(ort_startups),
        "ort_session_startup_s_runs": ort_startups,
        "ort_detector_run_ms_shipped_vs_cleaned": det_cmp,
        "sets": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n## facegate analyze vs onnxruntime ({args.rounds} interleaved rounds, medians)\n")
    print("| set | images (faces) | facegate img/s | facegate img/s, no `--embeddings` | onnxruntime img/s | facegate / ort |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        pl = s["facegate_plain_json_ips_net_of_startup"]
        print(f"| {name} | {s['images_per_run']} ({s['faces_per_run']}) | {s['facegate_ips_net_of_startup']:.2f} "
              f"(gross {s['facegate_ips_gross']:.2f}, steady {s['facegate_ips_steady_from_line_times']:.2f}) | "
              f"{'-' if pl is None else f'{pl:.2f}'} | {s['ort_ips']:.2f} | {s['ratio_facegate_over_ort']:.2f}× |")
    print(f"\nfacegate start-up (`analyze` on a missing file, whole process): {1e3 * su:.0f} ms; "
          f"onnxruntime sessions (3 models, warm-up): {1e3 * median(ort_startups):.0f} ms\n")
    print("### onnxruntime side per stage (ms per image, share)\n")
    print("| set | " + " | ".join(STAGES) + " |")
    print("|---|" + "---|" * len(STAGES))
    for name, s in summary.items():
        print(f"| {name} | " + " | ".join(
            f"{s['ort_stage_ms_per_image'][k]:.1f} ({100 * s['ort_stage_share'][k]:.0f}%)" for k in STAGES) + " |")
    print(f"\nonnxruntime CenterFace run alone, models/centerface.onnx as shipped vs cleaned: "
          f"{det_cmp['shipped']:.1f} vs {det_cmp['cleaned']:.1f} ms")
    for name, c in checks.items():
        print(f"agreement {name}: {json.dumps(c)}")
    print(f"\nwritten {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
