"""Convert the passive-liveness models MiniFASNetV2 (crop scale 2.7) and MiniFASNetV1SE (crop
scale 4.0) of minivision-ai/Silent-Face-Anti-Spoofing (Apache-2.0) to ONNX, with checks.

    /work/venv-t/bin/python train/liveness/export_liveness.py [--weights DIR] [--data DIR] [--out-dir models]

1. Checks the sha256 of the published state dicts (--weights, default ../shared/models/minifasnet),
   builds the networks (train/liveness/minifasnet.py) and loads them with strict=True.
2. Exports each with its softmax in the graph: opset 13, TorchScript exporter, constant folding,
   batch 1; input `input` [1,3,80,80] float32 BGR 0-255 (NCHW, no mean or std), output `probs`
   [1,3]. The exporter folds every BatchNorm2d into its conv; the head's BatchNorm1d is folded into
   the 512 -> 128 linear here (the exporter keeps it). onnx.checker (full) must pass and the graph
   may only use ALLOWED_OPS. -> models/minifasnet-v2.onnx, models/minifasnet-v1se.onnx
3. Runs onnxruntime and PyTorch (the unfolded network on the published state dict) on real crops:
   the largest CenterFace face (train/ref_pipeline.py detect_auto) of each sample photo in
   assets/samples and, when the data folder is there (--data, $FACEGATE_DATA or ../shared/data;
   read in place, never copied), of spoof-dev's photos T1/F1/F2 and FRAMES_PER_CLIP frames of each
   clip, cropped for each model's scale by train/liveness/crop.py. Fails if any probability differs
   by more than TOLERANCE.
4. Writes the manifests models/minifasnet-*.toml (numbers under [conversion]), the golden files
   models/golden/minifasnet-*.{toml,input.u8,probs*.f32} (the astronaut.png crops) and
   models/golden/liveness-crops.json (crop-rule cases and the sample photos' crops and scores).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import PIL
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common as C  # noqa: E402
import crop as K  # noqa: E402
import minifasnet as M  # noqa: E402
from toml_out import write_toml  # noqa: E402  (train/, put on the path by common)

ROOT = C.ROOT
REPO = "minivision-ai/Silent-Face-Anti-Spoofing"
COMMIT = "b6d5f04ad78778917853b25c778acef6d5626d15"
SPECS = [
    dict(name="minifasnet-v2", arch="MiniFASNetV2", build=M.minifasnet_v2, scale=2.7, keep="1.8M_",
         pth="2.7_80x80_MiniFASNetV2.pth",
         sha256="a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0"),
    dict(name="minifasnet-v1se", arch="MiniFASNetV1SE", build=M.minifasnet_v1se, scale=4.0, keep="1.8M",
         pth="4_0_0_80x80_MiniFASNetV1SE.pth",
         sha256="84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990"),
]
# Largest |onnxruntime - PyTorch| allowed on any probability (float32 throughout; measured at most 4.1e-6).
TOLERANCE = 1e-5
FRAMES_PER_CLIP = 20
ALLOWED_OPS = {"Conv", "Min", "Add", "Mul", "Identity", "GlobalAveragePool", "Relu", "Sigmoid", "MatMul", "Gemm",
               "Softmax", "Flatten", "Reshape"}
# A PNG (the same pixels for every decoder) on which neither model is saturated (live 0.82 and
# 0.88), so the golden test compares all three probabilities at useful sizes.
GOLDEN_IMAGE = "astronaut.png"
TRAINING_DATA = ("not documented in detail: the repository's README describes only the layout of the authors' own "
                 "(Minivision) anti-spoofing training set (3 class folders; whole-frame and face patches at crop "
                 "scales 1, 2.7 and 4 around RetinaFace boxes; Fourier-spectrum auxiliary supervision); no data set "
                 "is named or published")
CLASSES = "softmax over 3 classes; index 1 = live (the reference's 'real face'), 0 and 2 = attacks"


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class PReLUAsMin(nn.Module):
    """PReLU written as y + (alpha - 1) * min(y, 0), as train/export_models.py writes
    MobileFaceNet's: the form that facegate's 1x1 kernel fuses into the convolution before it
    (src/kernels.rs `prelu_after`). tract runs ONNX PRelu as three element-wise passes (GT, Iff,
    MulByScalar): 57 % of the run time of these models before this rewrite (op_profile)."""

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.register_buffer("alpha_m1", (prelu.weight.detach() - 1).view(1, -1, 1, 1))
        self.register_buffer("zero", torch.zeros(()))

    def forward(self, y):
        return y + self.alpha_m1 * torch.minimum(y, self.zero)


def rewrite_prelu(module: nn.Module):
    for name, child in module.named_children():
        if isinstance(child, nn.PReLU):
            setattr(module, name, PReLUAsMin(child))
        else:
            rewrite_prelu(child)


class Exported(nn.Module):
    """The network with its head's BatchNorm1d folded into the linear before it, PReLU as
    `PReLUAsMin`, softmax out."""

    def __init__(self, net: M.MiniFASNet):
        super().__init__()
        net = copy.deepcopy(net)
        rewrite_prelu(net)
        bn, lin = net.bn, net.linear
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        folded = nn.Linear(lin.in_features, lin.out_features, bias=True)
        with torch.no_grad():
            folded.weight.copy_(lin.weight * s[:, None])
            folded.bias.copy_(bn.bias - bn.running_mean * s)
        net.linear, net.bn = folded, nn.Identity()
        self.net = net.eval()

    def forward(self, x):
        return torch.softmax(self.net(x), 1)


def export(net: M.MiniFASNet, spec: dict, path: Path) -> list[str]:
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
    torch.onnx.export(Exported(net).eval(), torch.zeros(1, 3, 80, 80), str(path), input_names=["input"],
                      output_names=["probs"], opset_version=13, dynamo=False, do_constant_folding=True)
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    ops = sorted({n.op_type for n in m.graph.node})
    assert set(ops) <= ALLOWED_OPS, f"{path.name}: unexpected ops {set(ops) - ALLOWED_OPS}"
    m.producer_name = "facegate train/liveness/export_liveness.py"
    m.doc_string = f"{spec['arch']} from {REPO} @ {COMMIT} : resources/anti_spoof_models/{spec['pth']}"
    onnx.save(m, str(path))
    return ops


def session(path: Path) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.log_severity_level = 3
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def torch_probs(net: M.MiniFASNet, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(x)), 1).numpy()


def synthetic_cases() -> list[dict]:
    """Crop-rule cases for the Rust port of new_box (expected from crop.new_box)."""
    cases = [
        ("inside, x2", 640, 480, [200, 100, 100, 100], 2.0),
        ("inside, 2.7", 640, 480, [270, 190, 100, 100], 2.7),
        ("inside, 4.0, 720p", 1280, 720, [600, 300, 80, 80], 4.0),
        ("inside, odd sizes: half-pixel centre, fractional sides truncated", 640, 480, [101, 51, 57, 33], 2.7),
        ("inside, fractional sides truncated", 640, 480, [100, 100, 33, 33], 2.7),
        ("scale clamped by the height", 640, 480, [220, 140, 200, 200], 4.0),
        ("scale clamped by the width (portrait frame)", 480, 640, [140, 220, 200, 200], 4.0),
        ("box larger than the frame", 320, 240, [-10, -10, 400, 300], 2.7),
        ("left overflow: shifted right", 640, 480, [10, 200, 100, 100], 2.7),
        ("top overflow: shifted down", 640, 480, [300, 5, 100, 100], 2.7),
        ("right overflow: shifted left", 640, 480, [580, 200, 50, 60], 2.7),
        ("bottom overflow: shifted up", 640, 480, [300, 430, 50, 40], 2.7),
        ("top-left corner", 640, 480, [0, 0, 100, 100], 2.7),
        ("top-right corner", 640, 480, [590, 0, 50, 50], 4.0),
        ("bottom-left corner", 640, 480, [0, 440, 40, 40], 4.0),
        ("bottom-right corner", 640, 480, [600, 440, 40, 40], 4.0),
        ("wide frame, scale clamped by the height", 1920, 200, [900, 50, 100, 120], 2.7),
        ("tall frame, scale clamped by the width", 200, 1920, [50, 900, 120, 100], 2.7),
        ("tiny 1x1 box", 640, 480, [320, 240, 1, 1], 2.7),
        ("tiny 2x3 box at the top-left pixel", 640, 480, [0, 0, 2, 3], 4.0),
        ("box touching the right and bottom edges", 640, 480, [540, 380, 100, 100], 2.7),
        ("box touching the left edge, scale 1", 640, 480, [0, 200, 80, 80], 1.0),
        ("box with a negative x (partly outside)", 640, 480, [-7, 20, 60, 60], 2.7),
        ("box entirely right of the frame", 640, 480, [700, 100, 40, 40], 2.7),
        ("float truncation: left ends at -3.6e-15 after the shifts, int() gives 0 (floor would give -1)",
         57, 480, [28, 100, 41, 50], 4.0),
        ("float truncation: top ends at -3.6e-15 after the shifts, int() gives 0 (floor would give -1)",
         1000, 57, [100, 10, 50, 41], 4.0),
        ("VGA, typical face at 4.0: clamped", 640, 480, [250, 150, 140, 170], 4.0),
    ]
    return [dict(note=n, src_w=w, src_h=h, bbox=b, scale=s, expected=list(K.new_box(w, h, b, s)))
            for n, w, h, b, s in cases]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=ROOT.parent / "shared" / "models" / "minifasnet")
    ap.add_argument("--data", help="data folder holding spoof-dev/ (default $FACEGATE_DATA, ../shared/data)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "models")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out, golden = args.out_dir, args.out_dir / "golden"
    golden.mkdir(parents=True, exist_ok=True)
    reference = f"PyTorch {torch.__version__} on the published state dict"

    nets, sessions, ops = {}, {}, {}
    for spec in SPECS:
        pth = args.weights / spec["pth"]
        got = sha256(pth.read_bytes())
        if got != spec["sha256"]:
            sys.exit(f"{pth}: sha256 {got}, expected {spec['sha256']}")
        nets[spec["name"]] = M.load(spec["build"], pth)
        onnx_path = out / f"{spec['name']}.onnx"
        ops[spec["name"]] = export(nets[spec["name"]], spec, onnx_path)
        sessions[spec["name"]] = session(onnx_path)
        print(f"{onnx_path}: ops {ops[spec['name']]}")

    # --- onnxruntime vs PyTorch on real crops
    data = C.data_dir(args.data)
    if data is None:
        print("no spoof-dev data folder: checking on assets/samples only")
    rows = []  # one per image with a face
    for label, kind, rgb, face in C.images(data, FRAMES_PER_CLIP):
        if face is None:
            print(f"{label}: no face, skipped")
            continue
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        bbox = K.reference_bbox(*face)
        row = dict(label=label, kind=kind, shape=rgb.shape, face=face, bbox=bbox, models={})
        for spec in SPECS:
            name = spec["name"]
            c = K.crop(bgr, bbox, spec["scale"])
            x = K.to_input(c)
            pt = torch_probs(nets[name], x)[0]
            rt = sessions[name].run(["probs"], {"input": x})[0][0]
            row["models"][name] = dict(crop=c, box=K.new_box(bgr.shape[1], bgr.shape[0], bbox, spec["scale"]),
                                       torch=pt, ort=rt, diff=float(np.abs(pt - rt).max()))
        row["fused"] = float(np.mean([m["torch"][1] for m in row["models"].values()]))
        rows.append(row)
        print(f"{label:28s} {kind:7s} live " + " ".join(f"{m['torch'][1]:.4f}" for m in row["models"].values())
              + f"  fused {row['fused']:.4f}  |ort-torch| "
              + " ".join(f"{m['diff']:.1e}" for m in row["models"].values()))

    crops_used = (f"{sum(r['kind'] == 'sample' for r in rows)} assets/samples photos"
                  + (f", spoof-dev photos T1/F1/F2 and {FRAMES_PER_CLIP} frames of each of live.mjpeg and "
                     "replay-attack.mjpeg, evenly spaced over the frames with a face (shared/data, read in place)" if data else "")
                  + "; the largest CenterFace face (train/ref_pipeline.py detect_auto), cropped by "
                    "train/liveness/crop.py at the model's crop_scale")
    failed = []
    for spec in SPECS:
        name = spec["name"]
        diffs = [r["models"][name]["diff"] for r in rows]
        live = [abs(float(r["models"][name]["torch"][1] - r["models"][name]["ort"][1])) for r in rows]
        worst = float(max(diffs))
        print(f"{name}: max |onnxruntime - PyTorch| over {len(rows)} crops: {worst:.2e} (tolerance {TOLERANCE:.0e})")
        if worst > TOLERANCE:
            failed.append(name)
        onnx_path = out / f"{name}.onnx"
        manifest = dict(
            name=name, task="liveness", file=onnx_path.name, sha256=sha256(onnx_path.read_bytes()),
            source=f"{REPO} @ {COMMIT} : resources/anti_spoof_models/{spec['pth']}, converted by "
                   "train/liveness/export_liveness.py",
            licence=f"Apache-2.0 ({REPO})", training_data=TRAINING_DATA, precision="float32",
            input_name="input", layout="NCHW", colour="BGR", mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0],
            input_size=[80, 80], crop_scale=float(spec["scale"]), live_class=1,
            conversion=dict(
                reference=reference, architecture=f"{spec['arch']} (keep_dict '{spec['keep']}', conv_6_dw kernel 5x5), "
                "train/liveness/minifasnet.py; state dict loaded with strict=True (0 missing, 0 unexpected keys)",
                pth_sha256=spec["sha256"], exporter=f"torch.onnx.export (TorchScript, dynamo=False) {torch.__version__}, "
                "opset 13, constant folding; BatchNorm2d folded into the convs by the exporter, the head's "
                "BatchNorm1d into the 512->128 linear by the script; softmax appended",
                ops=ops[name], onnxruntime=ort.__version__, tolerance=TOLERANCE, crops=len(rows),
                max_abs_diff_probs=worst, max_abs_diff_live=float(max(live)), crops_used=crops_used),
            outputs=[dict(name="probs", shape=[1, 3], meaning=CLASSES)],
        )
        write_toml(out / f"{name}.toml", manifest,
                   header=f"{spec['arch']} passive liveness (float32); written by train/liveness/export_liveness.py, "
                          "do not edit by hand.")
    if failed:
        sys.exit(f"onnxruntime differs from PyTorch by more than {TOLERANCE} on {failed}")

    # --- golden files: the GOLDEN_IMAGE crops
    g = next(r for r in rows if r["label"] == GOLDEN_IMAGE)
    for spec in SPECS:
        name, m = spec["name"], g["models"][spec["name"]]
        (golden / f"{name}.input.u8").write_bytes(np.ascontiguousarray(m["crop"].transpose(2, 0, 1)).tobytes())
        (golden / f"{name}.probs.f32").write_bytes(m["torch"].astype("<f4").tobytes())
        (golden / f"{name}.probs.ort.f32").write_bytes(m["ort"].astype("<f4").tobytes())
        write_toml(golden / f"{name}.toml", dict(
            model=f"{name}.onnx", image=f"assets/samples/{GOLDEN_IMAGE}", input_file=f"{name}.input.u8",
            input_shape=[1, 3, 80, 80], input_dtype="u8", bbox=g["bbox"], crop_box=list(m["box"]),
            outputs=[dict(name="probs", shape=[1, 3], file=f"{name}.probs.f32", reference=reference),
                     dict(name="probs", shape=[1, 3], file=f"{name}.probs.ort.f32",
                          reference=f"onnxruntime {ort.__version__} on the exported ONNX")]),
            header=f"{name} golden: the largest CenterFace face of {GOLDEN_IMAGE} (train/ref_pipeline.py detect_auto),\n"
                   f"cropped at crop_scale {spec['scale']} by train/liveness/crop.py (the reference's CropImage, "
                   f"cv2.resize INTER_LINEAR),\nBGR, NCHW planar u8; written by train/liveness/export_liveness.py.")

    # --- crop-rule reference numbers for the Rust tests
    photos = []
    for r in rows:
        if r["kind"] != "sample":
            continue
        per = {}
        for spec in SPECS:
            m = r["models"][spec["name"]]
            raw = np.ascontiguousarray(m["crop"]).tobytes()
            per[spec["name"]] = dict(scale=spec["scale"], crop_box=list(m["box"]), crop_sha256=sha256(raw),
                                     crop_first_48=list(raw[:48]), probs=[float(v) for v in m["torch"]])
        photos.append(dict(image=f"assets/samples/{r['label']}", width=int(r["shape"][1]), height=int(r["shape"][0]),
                           face=[float(v) for v in r["face"]], bbox=r["bbox"], crops=per, fused_live=r["fused"]))
    doc = dict(
        about="Reference numbers for the MiniFASNet crop rule (train/liveness/crop.py, a port of CropImage in "
              f"{REPO} src/generate_patches.py @ c3e2048); written by train/liveness/export_liveness.py.",
        conventions=dict(
            bbox="[x, y, w, h] = [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)] of the float detector box, "
                 "float64 arithmetic on the float32 corners, int() truncates toward zero",
            crop_box="[left, top, right, bottom], right and bottom inclusive, float64 arithmetic, int() truncation",
            crop="img[top:bottom+1, left:right+1] resized to 80x80 by cv2.resize (INTER_LINEAR), "
                 f"opencv-python-headless {cv2.__version__}; bytes are HWC BGR uint8",
            face="the largest CenterFace box of train/ref_pipeline.py detect_auto on the RGB image "
                 "(x0, y0, x1, y1, float32 values written exactly)",
            decoder=f"PIL {PIL.__version__} (the same pixels as cv2.imread on these files); "
                    "astronaut.png is lossless, the JPEG crops depend on the decoder's output",
            probs=f"{reference}; fused_live = mean of the two models' class-1 probabilities"),
        cases=synthetic_cases(),
        photos=photos,
    )
    (golden / "liveness-crops.json").write_text(json.dumps(doc, indent=1) + "\n")
    print("wrote manifests, golden files and liveness-crops.json")


if __name__ == "__main__":
    main()
