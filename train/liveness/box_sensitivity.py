"""How much the fused MiniFASNet live score depends on the face box, i.e. on the detector.

    /work/venv-t/bin/python train/liveness/box_sensitivity.py [--data DIR] [--frames 30]

The reference feeds the crop rule boxes from its own detector (a Caffe RetinaFace, not available
here); facegate feeds CenterFace boxes. On spoof-dev's photos T1 (live), F1, F2 (attacks) and
--frames frames of each clip (evenly spaced over the frames with a face; read in place from
--data, $FACEGATE_DATA or ../shared/data, never copied), the largest CenterFace box
(train/ref_pipeline.py) is perturbed: scaled by 0.9 / 1.1 about its centre, shifted by +-5 % of
its width along x and along y (clipped to the frame, as detector boxes are). For each
perturbation: the largest |change| of the fused score (mean of the two models' class-1
probabilities, onnxruntime on models/minifasnet-*.onnx) and how many (image, perturbation) pairs
change side of 0.5.
Prints a markdown table (train/liveness/README.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common as C  # noqa: E402
import crop as K  # noqa: E402

MODELS = [("minifasnet-v2", 2.7), ("minifasnet-v1se", 4.0)]
THRESHOLD = 0.5
PERTURB = {
    "scale 0.9": lambda b, w, h: scaled(b, 0.9),
    "scale 1.1": lambda b, w, h: scaled(b, 1.1),
    "x -5%": lambda b, w, h: b + np.array([-1, 0, -1, 0]) * 0.05 * w,
    "x +5%": lambda b, w, h: b + np.array([1, 0, 1, 0]) * 0.05 * w,
    "y -5%": lambda b, w, h: b + np.array([0, -1, 0, -1]) * 0.05 * w,
    "y +5%": lambda b, w, h: b + np.array([0, 1, 0, 1]) * 0.05 * w,
}


def scaled(b: np.ndarray, s: float) -> np.ndarray:
    c, half = (b[:2] + b[2:]) / 2, (b[2:] - b[:2]) / 2 * s
    return np.concatenate([c - half, c + half])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data")
    ap.add_argument("--frames", type=int, default=30)
    args = ap.parse_args()
    data = C.data_dir(args.data)
    if data is None:
        sys.exit("no data folder with spoof-dev/ (--data, $FACEGATE_DATA or ../shared/data): nothing to measure")
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.log_severity_level = 3
    sessions = [(ort.InferenceSession(str(C.ROOT / "models" / f"{n}.onnx"), o, providers=["CPUExecutionProvider"]), s)
                for n, s in MODELS]

    def fused(bgr, box):
        h, w = bgr.shape[:2]
        box = np.clip(box, 0, [w, h, w, h])
        bbox = K.reference_bbox(*box)
        return float(np.mean([sess.run(["probs"], {"input": K.to_input(K.crop(bgr, bbox, s))})[0][0, 1]
                              for sess, s in sessions]))

    groups: dict[str, list] = {}
    for label, kind, rgb, face in C.images(data, args.frames):
        if kind == "sample" or face is None:
            continue
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        base = np.asarray(face, np.float64)
        w = base[2] - base[0]
        s0 = fused(bgr, base)
        moved = {k: fused(bgr, f(base, w, 0)) for k, f in PERTURB.items()}
        group = label.split("#")[0]
        groups.setdefault(group, []).append((kind, s0, moved))

    cols = {"box x0.9 / x1.1": ("scale 0.9", "scale 1.1"), "x +-5 %": ("x -5%", "x +5%"), "y +-5 %": ("y -5%", "y +5%")}
    print("| images (truth) | n | fused score | live at 0.5 | " + " | ".join(f"max abs change, {c}" for c in cols)
          + " | decision flips |")
    print("|---|---|---|---|" + "---|" * len(cols) + "---|")
    for group, rows in groups.items():
        base = np.array([r[1] for r in rows])
        change = [max(abs(r[2][k] - r[1]) for r in rows for k in keys) for keys in cols.values()]
        flips = sum((r[2][k] >= THRESHOLD) != (r[1] >= THRESHOLD) for r in rows for k in PERTURB)
        flipped = sum(any((r[2][k] >= THRESHOLD) != (r[1] >= THRESHOLD) for k in PERTURB) for r in rows)
        score = f"{base[0]:.3f}" if len(rows) == 1 else f"median {np.median(base):.3f} ({base.min():.3f}-{base.max():.3f})"
        print(f"| {group} ({rows[0][0]}) | {len(rows)} | {score} | {int((base >= THRESHOLD).sum())} | "
              + " | ".join(f"{c:.3f}" for c in change)
              + f" | {flips} of {len(rows) * len(PERTURB)} ({flipped} of {len(rows)} images) |")

if __name__ == "__main__":
    main()
