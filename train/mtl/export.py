"""Export the trained multi-task model to ONNX, float and int8, with manifests and golden files.

    /work/venv-t/bin/python train/mtl/export.py [--run first] [--cache /work/cache/mtl]
        [--calib 512] [--skip-eval] [--out-dir models]

1. Loads OUT/runs/<run>/model.pt (train.py) and exports the network with its output activations
   inside the graph: input `input` [N,112,112,3] NHWC RGB, (pixel - 127.5) / 128, aligned to the
   ArcFace template like models/mobilefacenet.onnx; outputs `embedding` [N,192] L2-normalised,
   `gender` [N,1] P(male), `age` [N,101] softmax over 0..100 years, `faceness` [N,1] P(face).
   Opset 13, TorchScript exporter. -> models/mtl.onnx
2. int8: onnxruntime static quantisation, QOperator format (QLinearConv: tract runs integer
   kernels for it; QDQ would run in f32), Conv only (tract does not run onnxruntime's contrib
   QLinear* ops), weights int8 per output channel (symmetric), activations uint8 per tensor,
   MinMax calibration with a moving average on --calib train-split crops (faces, with 1 in 8
   negatives; seeded), never on val. Only the 1x1 (pointwise) convolutions are quantised: the
   first conv, every depthwise conv (GDC included) and the embedding's linear layers stay
   float. Measured on 256 AAF val faces, int8-vs-float embedding cosine mean / min: every conv
   0.89 / 0.62 (percentile calibration 0.93 / 0.73); depthwise only 0.93 / 0.78; pointwise
   only 0.990 / 0.969, with the moving average 0.995 / 0.984. -> models/mtl-int8.onnx
3. Checks (they fail the export): onnxruntime vs PyTorch on 256 val crops (max |diff| of every
   output < 1e-4); the float embedding vs models/mobilefacenet.onnx (the identity path is the
   frozen teacher: cosine >= 0.99999 on every crop).
4. Unless --skip-eval: every val row (train.py's evaluate: celeba-id verification, embedding
   cosine, AAF/UTK gender and age, face head) for the float and the int8 ONNX in onnxruntime,
   plus int8-vs-float agreement. -> train/mtl/results/export-<run>.json
5. Manifests models/mtl.toml and models/mtl-int8.toml (--out-dir: somewhere else, for the smoke test) (the embedder's template, threshold and
   calibration are the teacher's: same embedding space), golden files models/golden/mtl*.f32 on
   the committed MobileFaceNet golden input (obama.jpg, aligned).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from model import MultiTask, load_run  # noqa: E402
from toml_out import write_toml  # noqa: E402
import train as T  # noqa: E402

MODELS = ROOT / "models"
GOLDEN = MODELS / "golden"
OUTPUTS = ("embedding", "gender", "age", "faceness")


class Exported(torch.nn.Module):
    """NHWC input, probabilities out: what the binary reads."""

    def __init__(self, net: MultiTask):
        super().__init__()
        self.net = net

    def forward(self, x):
        o = self.net(x.permute(0, 3, 1, 2))
        return (o["emb"], torch.sigmoid(o["gender"])[:, None], torch.softmax(o["age"], 1),
                torch.sigmoid(o["face"])[:, None])


def session(path: Path, threads: int = 2) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.log_severity_level = 3
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def nhwc(crops_u8: np.ndarray) -> np.ndarray:
    return (crops_u8.astype(np.float32) - 127.5) / 128.0


class OrtNet:
    """An exported ONNX behind train.py's net interface (logits out), for train.evaluate."""

    def __init__(self, path: Path):
        self.sess = session(path)

    def eval(self):
        return self

    def __call__(self, x):
        e, g, a, f = self.sess.run(None, {"input": x.permute(0, 2, 3, 1).contiguous().numpy()})
        logit = lambda p: torch.logit(torch.from_numpy(p[:, 0]).double().clamp(1e-7, 1 - 1e-7)).float()  # noqa: E731
        return {"emb": torch.from_numpy(e), "gender": logit(g), "face": logit(f),
                "age": torch.log(torch.from_numpy(a).clamp_min(1e-30))}


def quantize(fp32: Path, out: Path, calib: np.ndarray) -> tuple[int, int]:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(nhwc(calib[i:i + 1]) for i in range(len(calib)))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}

    convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]
    keep_float = [convs[0]] + [c for c in convs if "/dw" in c or "gdc" in c or "linear" in c]
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QOperator,
                    op_types_to_quantize=["Conv"], per_channel=True, nodes_to_exclude=keep_float,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"CalibMovingAverage": True})
    n_int8, n_all = len(convs) - len(keep_float), len(convs)
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    ops = sorted({n.op_type for n in m.graph.node})
    assert not any(o.startswith("QLinear") and o != "QLinearConv" for o in ops), ops
    onnx.save(m, str(out))
    return n_int8, n_all


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="first")
    ap.add_argument("--cache", default="/work/cache/mtl")
    ap.add_argument("--calib", type=int, default=512)
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--out-dir", type=Path, default=MODELS, help="ONNX, manifests, golden/ and results go here")
    args = ap.parse_args()
    out_dir, golden_dir = args.out_dir, args.out_dir / "golden"
    golden_dir.mkdir(parents=True, exist_ok=True)
    results_dir = HERE / "results" if out_dir == MODELS else out_dir
    torch.set_num_threads(2)
    cache = Path(args.cache)
    net, targs = load_run(cache, args.run)
    wrapped = Exported(net).eval()

    f32_path, i8_path = out_dir / "mtl.onnx", out_dir / "mtl-int8.onnx"
    torch.onnx.export(wrapped, torch.zeros(1, 112, 112, 3), str(f32_path), input_names=["input"],
                      output_names=list(OUTPUTS), opset_version=13, dynamo=False,
                      dynamic_axes={"input": {0: "N"}, **{o: {0: "N"} for o in OUTPUTS}})
    m = onnx.load(str(f32_path))
    onnx.checker.check_model(m, full_check=True)
    m.producer_name, m.doc_string = "facegate train/mtl/export.py", f"multi-task run {args.run}"
    onnx.save(m, str(f32_path))

    t0 = time.time()
    D = T.load(cache)
    print(f"crops loaded in {time.time() - t0:.0f} s", flush=True)
    rng = np.random.default_rng(7)
    tr = np.nonzero(D["split"] == "train")[0]
    faces, negs = tr[D["kind"][tr] == 0], tr[D["kind"][tr] != 0]
    n_neg = min(args.calib // 8, len(negs))
    args.calib = min(args.calib, len(faces) + n_neg)
    calib_rows = np.sort(np.concatenate([rng.choice(faces, args.calib - n_neg, replace=False),
                                         rng.choice(negs, n_neg, replace=False)]))
    n_int8, n_all = quantize(f32_path, i8_path, D["crops"][calib_rows])

    # --- checks: onnxruntime vs torch, float embedding vs the teacher ONNX
    va = np.nonzero(D["split"] == "val")[0]
    check_rows = np.sort(rng.choice(va, min(256, len(va)), replace=False))
    x = nhwc(D["crops"][check_rows])
    with torch.no_grad():
        ref = [t.numpy() for t in wrapped(torch.from_numpy(x))]
    f32s, i8s = session(f32_path), session(i8_path)
    got = f32s.run(None, {"input": x})
    diffs = {n: float(np.abs(a - b).max()) for n, a, b in zip(OUTPUTS, got, ref)}
    teacher = session(MODELS / "mobilefacenet.onnx")
    t_emb = np.concatenate([teacher.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    cos_t = (got[0] * t_emb).sum(1)
    q = i8s.run(None, {"input": x})
    cos_q = (q[0] * got[0]).sum(1)
    checks = {"crops": len(x), "ort_vs_torch_max_abs_diff": diffs,
              "float_embedding_vs_teacher_cosine_min": float(cos_t.min()),
              "int8_embedding_vs_float_cosine_mean": float(cos_q.mean()),
              "int8_embedding_vs_float_cosine_min": float(cos_q.min())}
    print(json.dumps(checks), flush=True)
    assert max(diffs.values()) < 1e-4, diffs
    assert cos_t.min() >= 0.99999, cos_t.min()

    results = {"run": args.run, "train_args": targs, "checks": checks,
               "calibration_rows": int(len(calib_rows)), "convs_int8": n_int8, "convs": n_all, "onnxruntime": ort.__version__,
               "torch": torch.__version__}
    if not args.skip_eval:
        pairs = T.read_pairs()
        _, val_rows = T.select_rows(D, *(targs.get(k, 0) for k in ("limit_train", "limit_val", "max_train_neg", "max_val_neg")))
        for name, path in (("float", f32_path), ("int8", i8_path)):
            t0 = time.time()
            results[name] = T.evaluate(OrtNet(path), D, val_rows, pairs)
            print(name, json.dumps(results[name]), f"({time.time() - t0:.0f} s)", flush=True)
        # int8 against float on every val face
        face = val_rows[D["kind"][val_rows] == 0]
        pf = T.predict(OrtNet(f32_path), D["crops"][face])
        pq = T.predict(OrtNet(i8_path), D["crops"][face])
        cos = (pf["emb"] * pq["emb"]).sum(1)
        results["int8_vs_float"] = {
            "faces": int(len(face)), "embedding_cosine_mean": round(float(cos.mean()), 5),
            "embedding_cosine_min": round(float(cos.min()), 5),
            "gender_agreement": round(float(((pf["gender"] > 0) == (pq["gender"] > 0)).mean()), 4),
            "age_abs_diff_mean": round(float(np.abs(pf["age"] - pq["age"]).mean()), 3),
            "faceness_agreement": round(float(((pf["face"] > 0.5) == (pq["face"] > 0.5)).mean()), 4)}
        print(json.dumps(results["int8_vs_float"]), flush=True)
    (results_dir / f"export-{args.run}.json").write_text(json.dumps(results, indent=1) + "\n")

    # --- manifests: the teacher's embedding space, template, threshold and calibration
    teacher_m = tomllib.loads((MODELS / "mobilefacenet.toml").read_text())
    data_note = ("trained on research-only data (shared/data: AAF, UTKFace crops; see MODEL_CARD.md); "
                 "identity path = MobileFaceNet (MS1M, research terms)")
    for name, path, kind in (("mtl", f32_path, "float32"), ("mtl-int8", i8_path, "int8 (QOperator, QLinearConv)")):
        manifest = {
            "name": name, "task": "multitask", "file": path.name, "sha256": sha256(path),
            "source": f"train/mtl/train.py run {args.run!r}, exported by train/mtl/export.py",
            "licence": "Apache-2.0 (MobileFaceNet weights); research-only training data",
            "training_data": data_note, "precision": kind, "input_name": "input",
            "layout": "NHWC", "colour": "RGB", "mean": [127.5] * 3, "std": [128.0] * 3,
            "input_size": [112, 112], "embedding_dim": 192, "normalised": True,
            "match_threshold": teacher_m["match_threshold"], "template": teacher_m["template"],
            "age_rule": "expectation", "face_threshold": 0.5,
            "embedding_space": {"name": "mobilefacenet", "sha256": teacher_m["sha256"],
                                "note": "the identity path is MobileFaceNet's, frozen: galleries are shared with the teacher"},
            "outputs": [
                {"name": "embedding", "shape": [1, 192], "meaning": "identity embedding, L2-normalised"},
                {"name": "gender", "shape": [1, 1], "meaning": "probability that the face is male"},
                {"name": "age", "shape": [1, 101], "meaning": "softmax over ages 0..100 years; age = expectation"},
                {"name": "faceness", "shape": [1, 1], "meaning": "probability that the crop is a well-aligned face"},
            ],
            "calibration": teacher_m["calibration"],
        }
        write_toml(out_dir / f"{name}.toml", manifest,
                   f"Multi-task face model ({kind}); written by train/mtl/export.py, do not edit by hand.")

    # --- golden: the committed MobileFaceNet golden input (obama.jpg aligned, normalised)
    gx = np.fromfile(GOLDEN / "mobilefacenet.input.f32", "<f4").reshape(1, 112, 112, 3)
    outs = []
    for name, sess, ref in (("mtl", f32s, f"onnxruntime {ort.__version__}"), ("mtl-int8", i8s, f"onnxruntime {ort.__version__}")):
        ys = sess.run(None, {"input": gx})
        entries = []
        for o, y in zip(OUTPUTS, ys):
            f = f"{name}.{o}.f32"
            (golden_dir / f).write_bytes(np.ascontiguousarray(y, "<f4").tobytes())
            entries.append({"name": o, "shape": list(y.shape), "file": f, "reference": f"{ref} on the exported ONNX"})
        outs.append(ys)
        write_toml(golden_dir / f"{name}.toml", {
            "model": f"{name}.onnx", "image": "assets/samples/obama.jpg",
            "input_file": "mobilefacenet.input.f32", "input_shape": [1, 112, 112, 3], "input_dtype": "f32",
            "outputs": entries}, f"{name} golden: the MobileFaceNet golden input (obama.jpg aligned by "
                                 "train/ref_pipeline.py, (x - 127.5) / 128, NHWC).")
    print("golden obama: float age %.2f male %.3f face %.3f; int8 age %.2f male %.3f face %.3f; emb cos %.5f" % (
        (outs[0][2] * np.arange(101)).sum(), outs[0][1][0, 0], outs[0][3][0, 0],
        (outs[1][2] * np.arange(101)).sum(), outs[1][1][0, 0], outs[1][3][0, 0], float((outs[0][0] * outs[1][0]).sum())))


if __name__ == "__main__":
    main()
