"""Multiply-accumulate counts of ONNX graphs and PyTorch modules (convolutions, MatMul/Gemm, Linear).

    /work/venv-t/bin/python train/mtl/macs.py [models/mobilefacenet.onnx models/faceres.onnx ...]

ONNX: shapes from onnx.shape_inference (the inputs' declared shapes, batch 1); a Conv costs
prod(output shape) * (C_in / group) * kh * kw MACs, MatMul/Gemm M*N*K. Bias adds, activations,
pooling, element-wise ops and normalisation are not MACs; they are listed as element counts
("other_elementwise") for completeness. PyTorch: forward hooks on nn.Conv2d / nn.Linear with the
same rule (torch_macs(module, input)).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def onnx_macs(path) -> dict:
    import onnx
    from onnx import numpy_helper, shape_inference
    m = shape_inference.infer_shapes(onnx.load(str(path)))
    g = m.graph
    shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for k, v in inits.items():
        shapes[k] = list(v.shape)
    conv = mm = other = 0
    by_op = {}
    params = int(sum(v.size for v in inits.values()))
    for n in g.node:
        out = shapes.get(n.output[0])
        if out is None:
            raise RuntimeError(f"no inferred shape for {n.output[0]} ({n.op_type})")
        if n.op_type == "Conv":
            w = shapes[n.input[1]]
            macs = int(np.prod(out)) * int(np.prod(w[1:]))  # w: [O, I/group, kh, kw]
            conv += macs
        elif n.op_type in ("MatMul", "Gemm"):
            a, b = shapes[n.input[0]], shapes[n.input[1]]
            k = a[-1] if not (n.op_type == "Gemm" and any(at.name == "transA" and at.i for at in n.attribute)) else a[0]
            macs = int(np.prod(out)) * int(k)
            mm += macs
        else:
            macs = 0
            other += int(np.prod(out))
        by_op[n.op_type] = by_op.get(n.op_type, 0) + macs
    return {"model": str(path), "params": params, "macs": conv + mm, "mmac": round((conv + mm) / 1e6, 2),
            "conv_macs": conv, "matmul_macs": mm, "other_elementwise": other,
            "by_op": {k: v for k, v in by_op.items() if v}}


def torch_macs(module, *inputs) -> dict:
    import torch
    import torch.nn as nn
    total = {"conv": 0, "linear": 0}
    per = {}
    hooks = []

    def hook(name):
        def f(mod, inp, out):
            if isinstance(mod, nn.Conv2d):
                macs = out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
                total["conv"] += macs
            else:
                macs = out.numel() // out.shape[0] * mod.in_features
                total["linear"] += macs
            per[name] = per.get(name, 0) + macs
        return f

    for name, mod in module.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            hooks.append(mod.register_forward_hook(hook(name)))
    with torch.no_grad():
        module(*inputs)
    for h in hooks:
        h.remove()
    return {"macs": total["conv"] + total["linear"], "mmac": round((total["conv"] + total["linear"]) / 1e6, 2),
            "per_module": per}


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    paths = sys.argv[1:] or [root / "models" / "mobilefacenet.onnx", root / "models" / "faceres.onnx",
                             root / "models" / "centerface.onnx"]
    for p in paths:
        try:
            r = onnx_macs(p)
        except Exception as e:  # noqa: BLE001
            print(json.dumps({"model": str(p), "error": str(e)}))
            continue
        print(json.dumps({k: r[k] for k in ("model", "params", "mmac", "conv_macs", "matmul_macs", "by_op")}))
