"""The single-task heads deployed together, as one ONNX for timing beside the multi-task model.

    /work/venv-t/bin/python train/mtl/export_single.py [--cache /work/cache/mtl] [--out /tmp/single-task.onnx]

Takes the gender branch and head of run `single-gender`, the age ones of `single-age` and the
face ones of `single-face` (train.py with one task's lambda set), on the shared frozen trunk
and identity path (the teacher's): one graph with the same input and outputs as
models/mtl.onnx, each task through its own copy of stage 5..conv7. Not shipped: the ablation
table's "single-task heads" timing (benches/per_face.rs with PER_FACE_EXTRA_ONNX).
"""
import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import load_run  # noqa: E402


class SingleTasks(torch.nn.Module):
    def __init__(self, g, a, f):
        super().__init__()
        self.g, self.a, self.f = g, a, f

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)
        h, f_id, emb = self.g.trunk(x)  # the frozen trunk is the teacher's in all three runs
        gender = self.g.gender(self.g.attr_tail(h))[:, 0]
        age = self.a.age(self.a.attr_tail(h))
        face = self.f.face(self.f.attr_tail(h))[:, 0]
        return emb, torch.sigmoid(gender)[:, None], torch.softmax(age, 1), torch.sigmoid(face)[:, None]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path("/work/cache/mtl"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/single-task.onnx"))
    args = ap.parse_args()
    net = SingleTasks(*(load_run(args.cache, f"single-{t}")[0] for t in ("gender", "age", "face"))).eval()
    torch.onnx.export(net, torch.zeros(1, 112, 112, 3), str(args.out), input_names=["input"],
                      output_names=["embedding", "gender", "age", "faceness"], opset_version=13, dynamo=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
