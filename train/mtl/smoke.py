"""Smoke test of the multi-task pipeline end to end on a few photos (CI runs it).

    python train/mtl/smoke.py [--data ../shared/data] [--photos 24] [--keep DIR]

Runs the real scripts in order on a small sample, in a temporary folder (research-only pixels
never enter the repository): train/make_eval_lists.py and train/mtl/splits.py (the split lists
are git-ignored), make_crops.py on the first --photos photos of aaf-train and utkface,
train.py for 2 epochs, and export.py to float and int8 ONNX (its own checks: onnxruntime vs
PyTorch, embedding vs the teacher). Then checks: every loss finite, the total training loss
lower in epoch 2 than in epoch 1, the face head trained (its loss fell), and both exported
models load in onnxruntime and give an L2-normalised embedding. Exits 0 with "SKIPPED" when
the data folder is absent. About 3 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FACEGATE_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--keep", type=Path, help="work here instead of a temporary folder")
    args = ap.parse_args()
    if not (args.data / "aaf-train").is_dir() or not (args.data / "utkface").is_dir():
        print(f"SKIPPED: train/mtl smoke test: {args.data} has no aaf-train/utkface")
        return 0
    with tempfile.TemporaryDirectory(prefix="mtl-smoke-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = str(args.data)
        run("train/make_eval_lists.py", "--data", data)
        run("train/mtl/splits.py", "--data", data)
        run("train/mtl/make_crops.py", "--data", data, "--out", str(work), "--sets", "aaf,utkface",
            "--limit", str(args.photos), "--workers", "2")
        run("train/mtl/train.py", "--cache", str(work), "--epochs", "2", "--batch", "16", "--name", "smoke",
            "--results-dir", str(work))
        log = json.loads((work / "smoke.json").read_text())
        losses = [e["train_loss"] for e in log["epochs"]]
        print("train losses per epoch:", losses)
        assert all(math.isfinite(v) for l in losses for v in l.values()), losses
        assert losses[1]["total"] < losses[0]["total"], "the joint loss did not fall"
        assert losses[1]["face"] < losses[0]["face"], "the face head did not learn"
        run("train/mtl/export.py", "--cache", str(work), "--run", "smoke", "--skip-eval", "--calib", "32",
            "--out-dir", str(work / "models"))
        import numpy as np
        import onnxruntime as ort
        x = np.zeros((1, 112, 112, 3), np.float32)
        for name in ("mtl.onnx", "mtl-int8.onnx"):
            sess = ort.InferenceSession(str(work / "models" / name), providers=["CPUExecutionProvider"])
            emb, male, age, face = sess.run(None, {"input": x})
            assert emb.shape == (1, 192) and abs(float(np.linalg.norm(emb)) - 1) < 1e-4, name
            assert age.shape == (1, 101) and abs(float(age.sum()) - 1) < 1e-4, name
            assert 0 <= male[0, 0] <= 1 and 0 <= face[0, 0] <= 1, name
        print("train/mtl smoke test: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
