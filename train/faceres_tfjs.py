"""Read a TensorFlow.js graph model (model JSON + weight shards) and rebuild the HSE FaceRes
network (MobileNet v1, 224x224, age/gender heads) as an ONNX graph with onnx.helper.

Used by train/export_faceres.py; kept separate so the conversion can be read on its own.

tfjs graph (human-models 3.0.4 models/faceres.json), op -> ONNX mapping:

    Placeholder input_1 [-1,224,224,3] NHWC   -> graph input `input` [1,224,224,3] + Transpose(0,3,1,2)
    Conv2D (HWIO, BN scale already folded)     -> Conv (OIHW), explicit TF-"SAME" pads
      + Add (BN shift)                         ->   folded into the Conv bias
    DepthwiseConv2dNative (HWC1)               -> Conv group=C (C,1,H,W)
      + Mul (BN scale) + Add (BN shift)        ->   folded into the depthwise weights and bias
    Relu -> Minimum(6) -> Maximum(0)           -> Clip(0, 6)   (ReLU6)
    Mean over axes [1,2], keep_dims=False      -> GlobalAveragePool + Flatten   (output `descriptor`)
    _FusedMatMul [BiasAdd(, Relu)]             -> MatMul + Add (+ Relu)
    Sigmoid / Softmax                          -> Sigmoid (`gender`) / Softmax axis=-1 (`age`)

There is no PReLU and no BatchNorm left in this graph, so none is emitted.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TF_GENDER = "gender_pred/Sigmoid"
TF_AGE = "age_pred/Softmax"
TF_DESCRIPTOR = "global_pooling/Mean"


# --------------------------------------------------------------------------- tfjs reading

def _np_dtype(name: str):
    return {"float32": np.float32, "int32": np.int32, "bool": np.bool_,
            "float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}[name]


def load_tfjs_graph(model_json: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (model JSON, weights by name as numpy). Honours the manifest's quantization
    metadata: float16 -> float32 exactly; uint8/uint16 affine (scale, min) -> float32."""
    model = json.loads(Path(model_json).read_text())
    weights: dict[str, np.ndarray] = {}
    for group in model["weightsManifest"]:
        buf = b"".join((Path(model_json).parent / p).read_bytes() for p in group["paths"])
        off = 0
        for spec in group["weights"]:
            shape = [int(d) for d in spec["shape"]]
            count = int(np.prod(shape)) if shape else 1
            q = spec.get("quantization")
            if q:
                qdt = np.dtype(_np_dtype(q["dtype"]))
                raw = np.frombuffer(buf, dtype=qdt.newbyteorder("<"), count=count, offset=off)
                off += count * qdt.itemsize
                if q["dtype"] == "float16":
                    arr = raw.astype(np.float32)
                elif "scale" in q:
                    arr = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
                else:
                    raise ValueError(f"{spec['name']}: unsupported quantization {q}")
                arr = arr.astype(_np_dtype(q.get("original_dtype", spec["dtype"])))
            else:
                dt = np.dtype(_np_dtype(spec["dtype"]))
                arr = np.frombuffer(buf, dtype=dt.newbyteorder("<"), count=count, offset=off).copy()
                off += count * dt.itemsize
            weights[spec["name"]] = arr.reshape(shape)
        if off != len(buf):
            raise ValueError(f"weight shards hold {len(buf)} bytes, manifest describes {off}")
    return model, weights


def _attr(node: dict, key: str):
    a = node.get("attr", {}).get(key)
    if a is None:
        return None
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        return []
    for k in ("b", "i", "f"):
        if k in a:
            return a[k]
    return a


# --------------------------------------------------------------------------- ONNX building

def _same_pads(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TensorFlow 'SAME' padding: (out, pad_begin, pad_end) for one spatial axis."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def build_onnx(model: dict, weights: dict[str, np.ndarray], *, opset: int = 13,
               keep_descriptor: bool = True) -> onnx.ModelProto:
    nodes = model["modelTopology"]["node"]
    by_name = {n["name"]: n for n in nodes}
    consumers: dict[str, list[str]] = {}
    for n in nodes:
        for i in n.get("input", []):
            consumers.setdefault(i.split(":")[0], []).append(n["name"])

    def const(name: str) -> np.ndarray:
        if by_name[name]["op"] != "Const":
            raise ValueError(f"{name} is not a Const")
        return weights[name]

    def sole_consumer(name: str, op: str) -> dict | None:
        c = consumers.get(name, [])
        if len(c) == 1 and by_name[c[0]]["op"] == op:
            return by_name[c[0]]
        return None

    onnx_nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    alias: dict[str, str] = {}        # tf tensor name -> onnx tensor name
    spatial: dict[str, tuple[int, int]] = {}
    consumed: set[str] = set()        # tf nodes folded into an earlier ONNX node
    mapping: list[str] = []           # human-readable record of what became what

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def clean(name: str) -> str:
        return name.replace("/", "_")

    graph_input = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 224, 224, 3])
    outputs: dict[str, str] = {}

    for n in nodes:
        name, op = n["name"], n["op"]
        if op == "Const" or name in consumed:
            continue
        ins = [i.split(":")[0] for i in n.get("input", [])]
        if op == "Placeholder":
            dims = [int(d["size"]) for d in n["attr"]["shape"]["shape"]["dim"]]
            if dims[1:] != [224, 224, 3]:
                raise ValueError(f"unexpected input shape {dims}")
            out = "input_nchw"
            onnx_nodes.append(helper.make_node("Transpose", ["input"], [out], perm=[0, 3, 1, 2],
                                               name="to_nchw"))
            alias[name] = out
            spatial[name] = (224, 224)
            mapping.append(f"Placeholder {name} -> input [1,224,224,3] NHWC + Transpose")
        elif op in ("Conv2D", "DepthwiseConv2dNative"):
            if _attr(n, "data_format") != "NHWC" or _attr(n, "dilations") != [1, 1, 1, 1]:
                raise ValueError(f"{name}: unsupported data_format/dilations")
            x, wname = ins
            w = const(wname).astype(np.float32)
            kh, kw = w.shape[:2]
            strides = _attr(n, "strides")
            sh, sw = strides[1], strides[2]
            h, wd = spatial[x]
            pad = _attr(n, "padding")
            if pad == "SAME":
                oh, pt, pb = _same_pads(h, kh, sh)
                ow, pl, pr = _same_pads(wd, kw, sw)
            elif pad == "VALID":
                oh, ow, pt, pb, pl, pr = (h - kh) // sh + 1, (wd - kw) // sw + 1, 0, 0, 0, 0
            else:
                raise ValueError(f"{name}: padding {pad}")
            if op == "Conv2D":
                wt = w.transpose(3, 2, 0, 1)              # HWIO -> OIHW
                group = 1
            else:
                cin, mult = w.shape[2], w.shape[3]
                wt = w.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)  # HWCM -> (C*M)1HW
                group = cin
            bias = np.zeros(wt.shape[0], np.float32)
            tail, folded = name, []
            mul = sole_consumer(tail, "Mul")
            if mul is not None:
                other = [i.split(":")[0] for i in mul["input"] if i.split(":")[0] != tail][0]
                scale = const(other).astype(np.float32)
                if scale.size not in (1, wt.shape[0]):
                    raise ValueError(f"{mul['name']}: scale shape {scale.shape}")
                wt = wt * scale.reshape(-1, 1, 1, 1)
                bias = bias * scale.reshape(-1)
                consumed.add(mul["name"]); folded.append(f"Mul {other}")
                tail = mul["name"]
            add = sole_consumer(tail, "Add") or sole_consumer(tail, "BiasAdd")
            if add is not None:
                other = [i.split(":")[0] for i in add["input"] if i.split(":")[0] != tail][0]
                if by_name[other]["op"] == "Const":
                    shift = const(other).astype(np.float32)
                    bias = bias + np.broadcast_to(shift.reshape(-1), bias.shape)
                    consumed.add(add["name"]); folded.append(f"Add {other}")
                    tail = add["name"]
            base = clean(name)
            onnx_nodes.append(helper.make_node(
                "Conv", [alias[x], init(base + "_W", wt.astype(np.float32)),
                         init(base + "_B", bias.astype(np.float32))],
                [base + "_out"], name=base, kernel_shape=[kh, kw], strides=[sh, sw],
                pads=[pt, pl, pb, pr], group=group, dilations=[1, 1]))
            alias[tail] = base + "_out"
            spatial[tail] = (oh, ow)
            mapping.append(f"{op} {name} (+ {', '.join(folded) or 'nothing'}) -> Conv "
                           f"k{kh}x{kw} s{sh} group={group} pads={[pt, pl, pb, pr]}")
        elif op == "Relu":
            x = ins[0]
            mn = sole_consumer(name, "Minimum")
            mx = sole_consumer(mn["name"], "Maximum") if mn is not None else None
            if mn is not None and mx is not None:
                hi = float(const([i for i in mn["input"] if i != name][0]))
                lo = float(const([i for i in mx["input"] if i != mn["name"]][0]))
                if lo != 0.0 or hi <= 0.0:
                    raise ValueError(f"{name}: clip pattern with lo={lo} hi={hi}")
                base = clean(mx["name"])
                onnx_nodes.append(helper.make_node(
                    "Clip", [alias[x], init(base + "_min", np.array(lo, np.float32)),
                             init(base + "_max", np.array(hi, np.float32))],
                    [base + "_out"], name=base))
                consumed.update([mn["name"], mx["name"]])
                alias[mx["name"]] = base + "_out"
                spatial[mx["name"]] = spatial[x]
                mapping.append(f"Relu+Minimum({hi:g})+Maximum({lo:g}) {name} -> Clip({lo:g},{hi:g})")
            else:
                base = clean(name)
                onnx_nodes.append(helper.make_node("Relu", [alias[x]], [base + "_out"], name=base))
                alias[name] = base + "_out"
                spatial[name] = spatial.get(x)
                mapping.append(f"Relu {name} -> Relu")
        elif op == "Mean":
            x, axes_name = ins
            axes = sorted(int(a) for a in np.atleast_1d(const(axes_name)))
            if axes != [1, 2] or _attr(n, "keep_dims"):
                raise ValueError(f"{name}: Mean over {axes}")
            base = clean(name)
            onnx_nodes.append(helper.make_node("GlobalAveragePool", [alias[x]], [base + "_gap"], name=base))
            onnx_nodes.append(helper.make_node("Flatten", [base + "_gap"], ["descriptor"], axis=1,
                                               name=base + "_flatten"))
            alias[name] = "descriptor"
            mapping.append(f"Mean {name} axes [1,2] -> GlobalAveragePool + Flatten")
        elif op == "_FusedMatMul":
            x, wname, bname = ins[:3]
            fused = _attr(n, "fused_ops")
            if _attr(n, "transpose_a") or _attr(n, "transpose_b") or fused[0] != "BiasAdd":
                raise ValueError(f"{name}: unsupported _FusedMatMul {fused}")
            base = clean(name)
            onnx_nodes.append(helper.make_node(
                "MatMul", [alias[x], init(base + "_W", const(wname).astype(np.float32))],
                [base + "_mm"], name=base + "_matmul"))
            onnx_nodes.append(helper.make_node(
                "Add", [base + "_mm", init(base + "_B", const(bname).astype(np.float32))],
                [base + "_out"], name=base + "_bias"))
            out = base + "_out"
            for extra in fused[1:]:
                if extra != "Relu":
                    raise ValueError(f"{name}: fused op {extra}")
                onnx_nodes.append(helper.make_node("Relu", [out], [base + "_relu"], name=base + "_relu"))
                out = base + "_relu"
            alias[name] = out
            mapping.append(f"_FusedMatMul {name} [{', '.join(fused)}] -> MatMul + Add"
                           + (" + Relu" if "Relu" in fused else ""))
        elif op in ("Sigmoid", "Softmax"):
            x = ins[0]
            out = {TF_GENDER: "gender", TF_AGE: "age"}.get(name, clean(name) + "_out")
            kw = {"axis": -1} if op == "Softmax" else {}
            onnx_nodes.append(helper.make_node(op, [alias[x]], [out], name=clean(name), **kw))
            alias[name] = out
            mapping.append(f"{op} {name} -> {op} ({out})")
        else:
            raise ValueError(f"unsupported tfjs op {op} at {name}")

    outs = [helper.make_tensor_value_info("gender", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("age", TensorProto.FLOAT, [1, 100])]
    if keep_descriptor:
        outs.append(helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, [1, 1024]))
    graph = helper.make_graph(onnx_nodes, "faceres", [graph_input], outs, initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="facegate train/export_faceres.py")
    m.ir_version = 8
    m.doc_string = "\n".join(mapping)
    onnx.checker.check_model(m, full_check=True)
    return m
