"""Equivalence of train/mtl/mobilefacenet.py (PyTorch, weights from the ONNX) with
models/mobilefacenet.onnx in onnxruntime, on real aligned crops; also MAC counts.

    /work/venv-t/bin/python train/mtl/check_mobilefacenet.py [--n 200] [--cache /work/cache/mtl]
        [--data ../shared/data] [--write train/mtl/check_mobilefacenet.json]

Crops: the first --n face crops (kind 0) of OUT/celeba-id.npz from train/mtl/make_crops.py
(uint8, as the student sees them); without that file, the first --n celeba-id photos of the
split list are detected and aligned here with train/ref_pipeline.py. Both runtimes get the
same input ((x - 127.5) / 128, RGB); onnxruntime runs batch 1, PyTorch batches of 50.
Reports max |diff| per element, cosine mean/min, and (cache only) the cosine between the
teacher on the float crop (stored teacher_emb) and on the uint8-rounded crop, i.e. what
storing crops as uint8 costs. Fails if max |diff| > 1e-4 or min cosine < 0.9999.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "train"))
from mobilefacenet import load_from_onnx  # noqa: E402
from macs import onnx_macs, torch_macs  # noqa: E402


def crops_from_data(n, data):
    import csv
    import make_crops as mc
    root = mc.data_root(data)
    with open(HERE / "splits" / "celeba-id.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        if len(out) == n:
            break
        img = mc.rp.load_rgb(root / r["path"])
        dets = mc.rp.detect_auto(img)
        if dets:
            lm = max(dets, key=lambda d: float((d[0][2] - d[0][0]) * (d[0][3] - d[0][1])))[2]
            out.append(np.clip(np.floor(mc.rp.align(img, lm, 112) + 0.5), 0, 255).astype(np.uint8))
    return np.stack(out), None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--cache", default="/work/cache/mtl")
    ap.add_argument("--data")
    ap.add_argument("--write", default=str(HERE / "check_mobilefacenet.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    cache = Path(args.cache) / "celeba-id.npz"
    if cache.exists():
        d = np.load(cache)
        face = d["kind"] == 0
        crops, t_float = d["crops"][face][:args.n], d["teacher_emb"][face][:args.n]
        source = f"{cache} (first {len(crops)} face crops, celeba-id val)"
    else:
        crops, t_float = crops_from_data(args.n, args.data)
        source = f"first {len(crops)} celeba-id photos with a face, aligned here"
    x = ((crops.astype(np.float32) - 127.5) / 128.0)

    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = 2
    o.log_severity_level = 3
    sess = ort.InferenceSession(str(ROOT / "models" / "mobilefacenet.onnx"), o, providers=["CPUExecutionProvider"])
    t0 = time.time()
    ref = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    t_ort = time.time() - t0

    net = load_from_onnx(ROOT / "models" / "mobilefacenet.onnx")
    t0 = time.time()
    with torch.no_grad():
        got = np.concatenate([net(torch.from_numpy(x[i:i + 50]), nhwc=True).numpy() for i in range(0, len(x), 50)])
    t_torch = time.time() - t0
    diff = np.abs(got - ref)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    res = {
        "crops": source, "n": int(len(x)),
        "torch": torch.__version__, "onnxruntime": ort.__version__,
        "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
        "seconds_onnxruntime_batch1_2threads": round(t_ort, 2), "seconds_torch_batch50_2threads": round(t_torch, 2),
    }
    if t_float is not None:
        c2 = (t_float * ref).sum(1)
        res["teacher_float_vs_uint8_crop_cosine"] = {"mean": float(c2.mean()), "min": float(c2.min())}
    res["macs"] = {
        "mobilefacenet_onnx": onnx_macs(ROOT / "models" / "mobilefacenet.onnx")["macs"],
        "mobilefacenet_torch": torch_macs(net, torch.zeros(1, 3, 112, 112))["macs"],
        "faceres_onnx": onnx_macs(ROOT / "models" / "faceres.onnx")["macs"],
        "params_torch": int(sum(p.numel() for p in net.parameters())),
    }
    print(json.dumps(res, indent=1))
    if args.write:
        Path(args.write).write_text(json.dumps(res, indent=1) + "\n")
    if res["max_abs_diff"] > 1e-4 or res["cosine_min"] < 0.9999:
        raise SystemExit("FAIL: PyTorch MobileFaceNet differs from onnxruntime")


if __name__ == "__main__":
    main()
