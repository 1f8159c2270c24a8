#!/usr/bin/env python3
"""Images per second: `facegate analyze --json --embeddings` (release binary, tract, 1 thread)
against the same three ONNX models run by onnxruntime (1 intra-op thread) from Python doing the
same work per image.

Per image, both sides: decode (EXIF-upright RGB), CenterFace (letterbox, run, decode, NMS),
then for every face found: the 5-point similarity alignment to 112 px and the MobileFaceNet
embedding (L2-normalised), and the alignment to 224 px at zoom 0.8 and HSE FaceRes age/gender
(BGR, mean [103.939, 116.779, 123.68], std 1). The onnxruntime side reuses train/ref_pipeline.py
(preprocess, decode, nms, align, load_rgb, pick_size) so its preprocessing is the project's
numpy reference. Two detector settings, each run on both sides:
  * fixed-640x480: facegate `--detector-size 640x480`, onnxruntime at 640x480;
  * per-image-size: facegate's default (the smallest of 256x256, 320x320, 640x480, 480x640
    that holds the image, `DetectorConfig::size_for`), onnxruntime at `ref.pick_size`, one
    pinned session per size (all made at start; facegate makes its largest plan at start and
    the others on first use, which its timed run then includes).

`facegate analyze --json` computes the embedding only with `--embeddings`
(`Want { embedding: embeddings, .. }` in src/commands.rs), so facegate runs with it, and with
`--threads 1` (analyze otherwise runs images on all cores) to match onnxruntime's one thread;
one more facegate run per case with its default thread count is reported beside, for
information (onnxruntime stays on one thread).

Method (the machine is shared and noisy, so only medians of interleaved runs are quoted):
  * each round runs: facegate start-up alone for each detector setting (`analyze --json` on a
    path that does not exist: process start, models parsed, optimised and warmed up, one
    error line), then for every (image set, detector setting) facegate on the list and
    onnxruntime on the same list, alternating which goes first from round to round;
  * facegate is one process over the whole list; its images/s is
    n / (wall - median start-up for that setting), and a steady-state rate from the times at
    which its per-image JSON lines arrive (it flushes after each image) is kept as a check;
  * onnxruntime runs in this process with sessions made once (their creation is timed as its
    start-up); per-stage times are summed per run; medians are over rounds.

Also: each model's run alone, tract vs onnxruntime, interleaved (tract through the
`op_profile` bench executable with `--plain`), and onnxruntime's profiler shares per op type.

Usage (from the repository root, release binary and the op_profile bench built):
  cargo build --release && cargo bench --bench op_profile --no-run
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
    def __init__(self, threads=1):
        t = time.perf_counter()
        # One detector session per input size, pinned as facegate pins a plan per size; all
        # made here (facegate makes its largest at start and the others on first use).
        sizes = {(DET_W, DET_H), *ref.AUTO_SIZES}
        # threads=0: onnxruntime's default, one intra-op thread per physical core.
        self.det = {(w, h): session(clean_model(ROOT / "models/centerface.onnx", [1, 3, h, w]), threads)
                    for w, h in sizes}
        self.emb = session(clean_model(ROOT / "models/mobilefacenet.onnx"), threads)
        self.att = session(clean_model(ROOT / "models/faceres.onnx"), threads)
        self.det_in = self.det[(DET_W, DET_H)].get_inputs()[0].name
        self.emb_in = self.emb.get_inputs()[0].name
        self.att_in = self.att.get_inputs()[0].name
        self.att_out = [o.name for o in self.att.get_outputs()]
        # One warm-up each, as facegate does at load.
        for (w, h), det in self.det.items():
            det.run(None, {self.det_in: np.full((1, 3, h, w), 0.5, np.float32)})
        self.emb.run(None, {self.emb_in: np.full((1, 112, 112, 3), 0.5, np.float32)})
        self.att.run(None, {self.att_in: np.full((1, 224, 224, 3), 0.5, np.float32)})
        self.startup_s = time.perf_counter() - t

    def analyze(self, path: Path, times: dict, auto: bool) -> list:
        """Same work as facegate's Pipeline::analyze with embedding and attributes; the
        detector at 640x480, or (`auto`) at the size facegate picks for the image."""
        clock = time.perf_counter
        t0 = clock()
        img = ref.load_rgb(path)
        t1 = clock()
        h, w = img.shape[:2]
        size = ref.pick_size(w, h) if auto else (DET_W, DET_H)
        blob, sx, sy = ref.preprocess(img, size)
        blob = blob.astype(np.float32)
        t2 = clock()
        heat, scale, offset, lms = self.det[size].run(None, {self.det_in: blob})
        t3 = clock()
        boxes, lm = ref.decode(heat, scale, offset, lms, (size[1], size[0]), ref.SCORE_THRESHOLD)
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


def run_ort(pipe: OrtPipeline, images: list[Path], auto: bool) -> dict:
    times = dict.fromkeys(STAGES, 0.0)
    results = []
    t = time.perf_counter()
    for p in images:
        results.append(pipe.analyze(p, times, auto))
    wall = time.perf_counter() - t
    return {"wall_s": wall, "stages_s": times, "results": results}



def detector_flags(auto: bool) -> list[str]:
    # The onnxruntime side runs the teachers (MobileFaceNet + FaceRes), so facegate does too:
    # its default per-face model is now the multi-task network (one run instead of two).
    return ["--face-model", "teachers"] + ([] if auto else ["--detector-size", f"{DET_W}x{DET_H}"])


def thread_flags(binary: Path, threads: int | None) -> list[str]:
    """`--threads N` where this build has it (analyze runs images on all cores by default)."""
    if threads is None:
        return []
    help_text = subprocess.run([str(binary), "analyze", "--help"], stdout=subprocess.PIPE).stdout
    return ["--threads", str(threads)] if b"--threads" in help_text else []


def run_facegate(binary: Path, images: list[Path], auto: bool, threads: int | None = 1) -> dict:
    cmd = [str(binary), *detector_flags(auto), "analyze", *thread_flags(binary, threads), "--json", "--embeddings"]
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


def facegate_startup(binary: Path, auto: bool) -> float:
    """Whole-process start-up of `analyze`: models load, then one missing file is reported."""
    t0 = time.perf_counter()
    r = subprocess.run([str(binary), *detector_flags(auto), "analyze", "--json", "/nonexistent/facegate-bench.jpg"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if b"error" not in r.stdout:
        raise SystemExit(f"unexpected start-up run output: {r.stdout[:200]!r}")
    return wall



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


# label (as the op_profile bench prints it) -> (model file, input shape)
MODEL_SHAPES = {
    "centerface@640x480": ("centerface", [1, 3, DET_H, DET_W]),
    "centerface@480x640": ("centerface", [1, 3, 640, 480]),
    "centerface@256x256": ("centerface", [1, 3, 256, 256]),
    "mobilefacenet": ("mobilefacenet", [1, 112, 112, 3]),
    "faceres": ("faceres", [1, 224, 224, 3]),
}


def op_profile_binary():
    """The newest `op_profile` bench executable (`cargo bench --bench op_profile --no-run`)."""
    exes = [p for p in (ROOT / "target/release/deps").glob("op_profile-*") if p.suffix == "" and os.access(p, os.X_OK)]
    return max(exes, key=lambda p: p.stat().st_mtime) if exes else None


def models_side_by_side(rounds: int, runs: int = 7) -> dict:
    """Each model's run alone, tract (the embedded NNEF through the op_profile bench, `--plain`)
    and onnxruntime (1 thread, cleaned models), interleaved per round; medians over rounds of
    the per-round medians. Input: constant 0.5 tensors of the pinned shapes."""
    exe = op_profile_binary()
    if exe is None:
        return {"skipped": "build it with `cargo bench --bench op_profile --no-run`"}
    sessions = {m: session(clean_model(ROOT / f"models/{f}.onnx", shape)) for m, (f, shape) in MODEL_SHAPES.items()}
    # tract: the plan the binary runs (facegate's kernels substituted); tract_own: tract's plan alone.
    tract, tract_own, ortt = ({m: [] for m in MODEL_SHAPES} for _ in range(3))

    def ort_round():
        for m, s in sessions.items():
            x = np.full(MODEL_SHAPES[m][1], 0.5, np.float32)
            name = s.get_inputs()[0].name
            s.run(None, {name: x})
            ts = []
            for _ in range(runs):
                t = time.perf_counter()
                s.run(None, {name: x})
                ts.append(time.perf_counter() - t)
            ortt[m].append(1e3 * median(ts))

    def tract_round(plan: str, into: dict):
        env = {**os.environ, "FACEGATE_PLAN": plan}
        out = subprocess.run([str(exe), "--plain", str(runs)], check=True, stdout=subprocess.PIPE, env=env).stdout
        for line in out.decode().splitlines():
            r = json.loads(line)
            if r["model"] in into:
                into[r["model"]].append(r["median_ms"])

    ours = lambda: tract_round("facegate", tract)
    theirs = lambda: tract_round("tract", tract_own)
    for r in range(rounds):
        for f in ((ours, ort_round, theirs) if r % 2 == 0 else (theirs, ort_round, ours)):
            f()
    return {m: {"tract_ms": median(tract[m]), "tract_own_plan_ms": median(tract_own[m]), "ort_ms": median(ortt[m]),
                "tract_over_ort": median([a / b for a, b in zip(tract[m], ortt[m])]),
                "tract_own_plan_over_ort": median([a / b for a, b in zip(tract_own[m], ortt[m])])}
            for m in MODEL_SHAPES}


def ort_op_shares(runs: int = 5) -> dict:
    """onnxruntime's own profiler: share of kernel time per op type, per model."""
    import tempfile
    shares = {}
    for m, (f, shape) in MODEL_SHAPES.items():
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"facegate-ortprof-{m}")
        s = ort.InferenceSession(clean_model(ROOT / f"models/{f}.onnx", shape), opts, providers=["CPUExecutionProvider"])
        x = np.full(shape, 0.5, np.float32)
        for _ in range(runs):
            s.run(None, {s.get_inputs()[0].name: x})
        prof = Path(s.end_profiling())
        agg = {}
        for e in json.loads(prof.read_text()):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                op = e["args"].get("op_name", "?")
                agg[op] = agg.get(op, 0) + e["dur"]
        prof.unlink()
        total = sum(agg.values()) or 1
        shares[m] = {k: v / total for k, v in sorted(agg.items(), key=lambda kv: -kv[1]) if v / total >= 0.005}
    return shares



def pick_celeba(n: int, seed: int) -> list[Path]:
    folder = DATA / "celeba-id" / "images"
    if not folder.is_dir():
        raise SystemExit(f"{folder} not found; set FACEGATE_DATA to the shared data folder")
    files = sorted(folder.glob("*.jpg"))
    return sorted(random.Random(seed).sample(files, n))


MODES = {"fixed-640x480": False, "per-image-size": True}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=Path, default=ROOT / "target/release/facegate")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=100, help="celeba-id images (fixed seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples-repeat", type=int, default=5,
                    help="the 4 bundled photos are listed this many times in one run")
    ap.add_argument("--no-all-cores", action="store_true",
                    help="skip the extra facegate run with its default thread count (all cores)")
    ap.add_argument("--out", type=Path, default=ROOT / "benches/results/analyze_vs_onnxruntime.json")
    args = ap.parse_args()

    if not args.binary.exists():
        raise SystemExit(f"{args.binary} missing: run `cargo build --release` first")
    sets = {
        "celeba-id": pick_celeba(args.n, args.seed),
        "samples": [ROOT / "assets/samples" / f for f in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")]
        * args.samples_repeat,
    }
    cases = [(name, mode) for name in sets for mode in MODES]
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, python {platform.python_version()}",
          file=sys.stderr)
    pipe = OrtPipeline()
    pipe_all = None if args.no_all_cores else OrtPipeline(threads=0)
    ort_startups = [pipe.startup_s]

    raw = {c: {"facegate": [], "ort": [], "facegate_all_cores": [], "ort_all_cores": []} for c in cases}
    fg_startups = {mode: [] for mode in MODES}
    checks = {}
    for r in range(args.rounds):
        for mode, auto in MODES.items():
            fg_startups[mode].append(facegate_startup(args.binary, auto))
        if r > 0:  # a fresh set of sessions each round, for the start-up median
            ort_startups.append(OrtPipeline().startup_s)
        for case in cases:
            name, mode = case
            auto = MODES[mode]
            for who in (("fg", "ort") if r % 2 == 0 else ("ort", "fg")):
                if who == "fg":
                    raw[case]["facegate"].append(run_facegate(args.binary, sets[name], auto))
                else:
                    raw[case]["ort"].append(run_ort(pipe, sets[name], auto))
            if not args.no_all_cores:
                # Both at their defaults: facegate one image per core, onnxruntime all cores
                # inside each model run; order alternated like the 1-thread pair.
                for who in (("fg", "ort") if r % 2 == 0 else ("ort", "fg")):
                    if who == "fg":
                        raw[case]["facegate_all_cores"].append(run_facegate(args.binary, sets[name], auto, threads=None))
                    else:
                        raw[case]["ort_all_cores"].append(run_ort(pipe_all, sets[name], auto))
            if r == 0:
                checks[case] = agreement(raw[case]["facegate"][0]["results"], raw[case]["ort"][0]["results"])
        print(f"round {r + 1}/{args.rounds}: start-up "
              + ", ".join(f"{m} {v[-1]:.3f}s" for m, v in fg_startups.items()) + "; "
              + "; ".join(f"{n}/{m} fg {len(sets[n]) / raw[(n, m)]['facegate'][-1]['wall_s']:.2f} "
                          f"ort {len(sets[n]) / raw[(n, m)]['ort'][-1]['wall_s']:.2f}" for n, m in cases)
              + " img/s (gross)", file=sys.stderr)

    summary = {}
    for case in cases:
        name, mode = case
        n = len(sets[name])
        su = median(fg_startups[mode])
        fg_net = [n / max(x["wall_s"] - su, 1e-9) for x in raw[case]["facegate"]]
        ort_ips = [n / x["wall_s"] for x in raw[case]["ort"]]
        # Per-round ratio (facegate net / ort) then its median: both measured side by side.
        ratios = [a / b for a, b in zip(fg_net, ort_ips)]
        all_cores = [n / max(x["wall_s"] - su, 1e-9) for x in raw[case]["facegate_all_cores"]]
        stages = {s: median([x["stages_s"][s] for x in raw[case]["ort"]]) for s in STAGES}
        total = sum(stages.values())
        summary[f"{name}/{mode}"] = {
            "set": name,
            "detector": mode,
            "images_per_run": n,
            "faces_per_run": checks[case]["faces_facegate"],
            "facegate_ips_net_of_startup": median(fg_net),
            "facegate_ips_gross": median([n / x["wall_s"] for x in raw[case]["facegate"]]),
            "facegate_ips_steady_from_line_times": median([x["steady_ips"] for x in raw[case]["facegate"]]),
            "facegate_all_cores_ips_net_of_startup": median(all_cores) if all_cores else None,
            "ort_all_cores_ips": median([n / x["wall_s"] for x in raw[case]["ort_all_cores"]])
            if raw[case]["ort_all_cores"] else None,
            "ratio_all_cores": median([a / (n / b["wall_s"]) for a, b in zip(all_cores, raw[case]["ort_all_cores"])])
            if raw[case]["ort_all_cores"] else None,
            "ort_ips": median(ort_ips),
            "ratio_facegate_over_ort": median(ratios),
            "ratios_per_round": ratios,
            "ort_stage_ms_per_image": {s: 1e3 * v / n for s, v in stages.items()},
            "ort_stage_share": {s: v / total for s, v in stages.items()},
            "runs": {
                "facegate_wall_s": [x["wall_s"] for x in raw[case]["facegate"]],
                "ort_wall_s": [x["wall_s"] for x in raw[case]["ort"]],
                "facegate_all_cores_wall_s": [x["wall_s"] for x in raw[case]["facegate_all_cores"]],
            },
            "agreement_round1": checks[case],
        }
    def guarded(f, *a):  # a failing side measurement must not lose the rounds above
        try:
            return f(*a)
        except Exception as e:  # noqa: BLE001
            print(f"{f.__name__} failed: {e!r}", file=sys.stderr)
            return {"skipped": repr(e)}

    det_cmp = guarded(ort_detector_as_shipped)
    per_model = guarded(models_side_by_side, args.rounds)
    op_shares = guarded(ort_op_shares)
    result = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, shared and noisy; {platform.processor() or platform.machine()}",
        "rounds": args.rounds,
        "seed": args.seed,
        "binary": str(args.binary.relative_to(ROOT) if args.binary.is_relative_to(ROOT) else args.binary),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "threads": "facegate/tract single-threaded; onnxruntime intra_op=1 inter_op=1 sequential; BLAS 1 thread",
        "facegate_startup_s_median": {m: median(v) for m, v in fg_startups.items()},
        "facegate_startup_s_runs": fg_startups,
        "ort_session_startup_s_median": median(ort_startups),
        "ort_session_startup_s_runs": ort_startups,
        "ort_detector_run_ms_shipped_vs_cleaned": det_cmp,
        "model_run_ms_tract_vs_ort": per_model,
        "ort_op_type_shares": op_shares,
        "sets": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n## facegate analyze vs onnxruntime ({args.rounds} interleaved rounds, medians)\n")
    print("| set | detector input | images (faces) | facegate img/s, 1 thread | onnxruntime img/s, 1 thread "
          "| facegate / ort | facegate img/s, all cores | onnxruntime img/s, all cores | facegate / ort, all cores |")
    print("|---|---|---|---|---|---|---|---|---|")
    def fmt(v, unit=""):
        return "-" if v is None else f"{v:.2f}{unit}"

    for s in summary.values():
        ac = s["facegate_all_cores_ips_net_of_startup"]
        print(f"| {s['set']} | {s['detector']} | {s['images_per_run']} ({s['faces_per_run']}) | "
              f"{s['facegate_ips_net_of_startup']:.2f} (gross {s['facegate_ips_gross']:.2f}, "
              f"steady {s['facegate_ips_steady_from_line_times']:.2f}) | {s['ort_ips']:.2f} | "
              f"{s['ratio_facegate_over_ort']:.2f}× | {fmt(ac)} | {fmt(s['ort_all_cores_ips'])} | "
              f"{fmt(s['ratio_all_cores'], '×')} |")
    print("\nfacegate start-up (`analyze` on a missing file, whole process): "
          + ", ".join(f"{m} {1e3 * median(v):.0f} ms" for m, v in fg_startups.items())
          + f"; onnxruntime sessions (3 models, {len(pipe.det)} detector sizes, warm-up): "
          f"{1e3 * median(ort_startups):.0f} ms\n")
    print("### onnxruntime side per stage (ms per image, share)\n")
    print("| set | detector input | " + " | ".join(STAGES) + " |")
    print("|---|---|" + "---|" * len(STAGES))
    for s in summary.values():
        print(f"| {s['set']} | {s['detector']} | " + " | ".join(
            f"{s['ort_stage_ms_per_image'][k]:.1f} ({100 * s['ort_stage_share'][k]:.0f}%)" for k in STAGES) + " |")
    if "skipped" not in det_cmp:
        print(f"\nonnxruntime CenterFace 640x480 run alone, models/centerface.onnx as shipped vs cleaned: "
              f"{det_cmp['shipped']:.1f} vs {det_cmp['cleaned']:.1f} ms")
    if "skipped" not in per_model:
        print("\n### Model run alone, tract (embedded NNEF) vs onnxruntime, medians of interleaved rounds\n")
        print("| model | facegate's plan ms (tract + own kernels) | tract's own plan ms | onnxruntime ms "
              "| facegate / ort | tract's own / ort |\n|---|---|---|---|---|---|")
        for m, r in per_model.items():
            print(f"| {m} | {r['tract_ms']:.1f} | {r['tract_own_plan_ms']:.1f} | {r['ort_ms']:.1f} "
                  f"| {r['tract_over_ort']:.2f}× | {r['tract_own_plan_over_ort']:.2f}× |")
    if "skipped" not in op_shares:
        print("\nonnxruntime kernel time by op type: " + "; ".join(
            f"{m}: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in sh.items()) for m, sh in op_shares.items()))
    for (name, mode), c in checks.items():
        print(f"agreement {name}/{mode}: {json.dumps(c)}")
    print(f"\nwritten {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
