"""PyTorch MobileFaceNet mirroring models/mobilefacenet.onnx, with weights loaded from it.

    from train.mtl.mobilefacenet import MobileFaceNet, load_from_onnx
    net = load_from_onnx("models/mobilefacenet.onnx")     # eval-mode, float32
    emb = net(x)          # x: [N,3,112,112] float, RGB, (pixel - 127.5) / 128 -> [N,192], L2-normalised

The ONNX (train/export_models.py) is the sirius-ai MobileFaceNet_TF graph with batch norm
folded into each convolution (every Conv has a bias, there is no BN to learn here) and PReLU
written as x + (alpha - 1) * min(x, 0). This module reproduces it op by op:

  stem     conv 3x3 s2 3->64 + PReLU; depthwise 3x3 64 + PReLU; pointwise 1x1 64->64 (linear)
  stage2   5 inverted-residual blocks 64 -(x2)-> 64, first stride 2 (no skip), others skip
  stage3   1 block 64 -> 128 (expand 256), stride 2
  stage4   6 blocks 128 (expand 256), all with skip
  stage5   1 block 128 -> 128 (expand 512), stride 2
  stage6   2 blocks 128 (expand 256), skip
  conv7    1x1 128->512 + PReLU                         -> feature map [N,512,7,7]
  gdc      depthwise 7x7 512 (global depthwise conv, linear) -> [N,512,1,1]
  linear   1x1 512->512 (linear), 1x1 512->192 (linear), flatten, L2 normalise (eps 1e-10)
  block    = 1x1 expand + PReLU, depthwise 3x3 + PReLU, 1x1 project (linear) [+ input]

Stride-2 convolutions pad like TensorFlow's SAME: 0 before, 1 after (F.pad(x, (0,1,0,1))).
The input is NCHW here; the ONNX takes NHWC and transposes first (nhwc=True in forward).

`features(x)` returns the 7x7x512 map after conv7 and `embed_head(f)` the rest, so the
multi-task model (train/mtl/model.py) can attach heads to the shared features.

Equivalence with onnxruntime on real aligned crops: train/mtl/check_mobilefacenet.py.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PReLU(nn.Module):
    """x + (alpha - 1) * min(x, 0), the ONNX's spelling; stores beta = alpha - 1."""

    def __init__(self, c: int):
        super().__init__()
        self.beta = nn.Parameter(torch.full((c, 1, 1), -0.75))

    def forward(self, x):
        return x + torch.clamp(x, max=0.0) * self.beta


class ConvUnit(nn.Module):
    """Conv (+bias: folded BN) with optional PReLU and TF-SAME padding for stride 2."""

    def __init__(self, cin, cout, k=1, stride=1, groups=1, act=True):
        super().__init__()
        self.stride, self.k = stride, k
        pad = k // 2 if (stride == 1 and k == 3) else 0
        self.conv = nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=True)
        self.act = PReLU(cout) if act else None

    def forward(self, x):
        if self.stride == 2:
            x = F.pad(x, (0, 1, 0, 1))
        x = self.conv(x)
        return self.act(x) if self.act is not None else x


class Block(nn.Module):
    def __init__(self, cin, cout, expand, stride, skip):
        super().__init__()
        self.expand = ConvUnit(cin, expand, 1)
        self.dw = ConvUnit(expand, expand, 3, stride, groups=expand)
        self.project = ConvUnit(expand, cout, 1, act=False)
        self.skip = skip

    def forward(self, x):
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.skip else y


def stage(cin, cout, expand, n, stride, first_skip=False):
    return nn.Sequential(*[Block(cin if i == 0 else cout, cout, expand, stride if i == 0 else 1,
                                 skip=(i > 0 or first_skip)) for i in range(n)])


class MobileFaceNet(nn.Module):
    def __init__(self, emb_dim: int = 192):
        super().__init__()
        self.conv1 = ConvUnit(3, 64, 3, 2)
        self.dw1 = ConvUnit(64, 64, 3, 1, groups=64)
        self.pw1 = ConvUnit(64, 64, 1, act=False)
        self.stage2 = stage(64, 64, 128, 5, 2)
        self.stage3 = stage(64, 128, 256, 1, 2)
        self.stage4 = stage(128, 128, 256, 6, 1, first_skip=True)
        self.stage5 = stage(128, 128, 512, 1, 2)
        self.stage6 = stage(128, 128, 256, 2, 1, first_skip=True)
        self.conv7 = ConvUnit(128, 512, 1)
        self.gdc = ConvUnit(512, 512, 7, groups=512, act=False)
        self.linear1 = ConvUnit(512, 512, 1, act=False)
        self.linear2 = ConvUnit(512, emb_dim, 1, act=False)

    def features(self, x, nhwc: bool = False):
        if nhwc:
            x = x.permute(0, 3, 1, 2)
        x = self.pw1(self.dw1(self.conv1(x)))
        for s in (self.stage2, self.stage3, self.stage4, self.stage5, self.stage6):
            x = s(x)
        return self.conv7(x)

    def embed_head(self, f, normalise: bool = True):
        e = torch.flatten(self.linear2(self.linear1(self.gdc(f))), 1)
        if not normalise:
            return e
        n = torch.sqrt(torch.clamp((e * e).sum(1, keepdim=True), min=1e-10))
        return e / n

    def forward(self, x, nhwc: bool = False):
        return self.embed_head(self.features(x, nhwc))


def onnx_params(path):
    """Conv (weight, bias) pairs and PReLU betas of the ONNX, in graph order."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    convs, betas = [], []
    for n in m.graph.node:
        if n.op_type == "Conv":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            convs.append((inits[n.input[1]], inits[n.input[2]], attrs))
        elif n.op_type == "Mul" and n.input[1] in inits and n.input[1].endswith("alpha_minus_1"):
            betas.append(inits[n.input[1]])
    return convs, betas


def load_from_onnx(path="models/mobilefacenet.onnx", net: MobileFaceNet | None = None) -> MobileFaceNet:
    net = net or MobileFaceNet()
    convs, betas = onnx_params(path)
    units = [m for m in net.modules() if isinstance(m, ConvUnit)]
    prelus = [m for m in net.modules() if isinstance(m, PReLU)]
    assert len(units) == len(convs), (len(units), len(convs))
    assert len(prelus) == len(betas), (len(prelus), len(betas))
    for u, (w, b, a) in zip(units, convs):
        assert tuple(u.conv.weight.shape) == w.shape, (u.conv.weight.shape, w.shape)
        assert u.conv.groups == a.get("group", 1) and list(u.conv.stride) == list(a["strides"])
        pads = list(a.get("pads", [0, 0, 0, 0]))
        expect = [0, 0, 1, 1] if u.stride == 2 else [u.conv.padding[0]] * 4
        assert pads == expect, (pads, expect)
        with torch.no_grad():
            u.conv.weight.copy_(torch.from_numpy(w.copy()))
            u.conv.bias.copy_(torch.from_numpy(b.copy()))
    for p, beta in zip(prelus, betas):
        assert tuple(p.beta.shape) == beta.shape
        with torch.no_grad():
            p.beta.copy_(torch.from_numpy(beta.copy()))
    return net.eval()
