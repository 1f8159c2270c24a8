"""MiniFASNet V1 / V2 / V1SE, the passive-liveness networks of minivision-ai/Silent-Face-Anti-Spoofing
(Apache-2.0), written from the reference's `src/model_lib/MiniFASNet.py` so that the published
state dicts load with strict=True (the parameter names are the reference's).

A pruned MobileFaceNet: a channel list `keep` (the reference's keep_dict) gives every width.
Each inverted-residual block starting at index i of `keep` is
  1x1 conv keep[i] -> keep[i+1] (+BN+PReLU), 3x3 depthwise on keep[i+1] (+BN+PReLU),
  1x1 projection keep[i+2] -> keep[i+3] (+BN, no activation),
blocks 1, 16 and 37 with stride 2 and no shortcut, the rest stride 1 with a shortcut. In the SE
variants the last block of each residual stage multiplies its projection by a squeeze-excitation
gate (reduction 4) before the shortcut is added. Head: 1x1 conv to 512 (+BN+PReLU), a depthwise
conv over the whole 5x5 map (+BN), Linear 512 -> 128, BatchNorm1d, dropout, Linear 128 -> 3.

Input: [N, 3, 80, 80] BGR float 0-255, no mean or std (the reference's ToTensor has its /255
commented out). Output: logits of 3 classes; class 1 is the live face.
"""
from __future__ import annotations

import torch
from torch import nn

# The reference's keep_dict: '1.8M' for MiniFASNetV1 / V1SE, '1.8M_' for MiniFASNetV2.
KEEP_V1 = [32, 32, 103, 103, 64, 13, 13, 64, 26, 26, 64, 13, 13, 64, 52, 52, 64, 231, 231, 128,
           154, 154, 128, 52, 52, 128, 26, 26, 128, 52, 52, 128, 26, 26, 128, 26, 26, 128, 308, 308,
           128, 26, 26, 128, 26, 26, 128, 512, 512]
KEEP_V2 = [32, 32, 103, 103, 64, 13, 13, 64, 13, 13, 64, 13, 13, 64, 13, 13, 64, 231, 231, 128,
           231, 231, 128, 52, 52, 128, 26, 26, 128, 77, 77, 128, 26, 26, 128, 26, 26, 128, 308, 308,
           128, 26, 26, 128, 26, 26, 128, 512, 512]
# (first keep index, blocks) of the three residual stages conv_3, conv_4, conv_5.
STAGES = {"conv_3": (4, 4), "conv_4": (19, 6), "conv_5": (40, 2)}
# keep index of the stride-2 blocks in front of them.
DOWN = {"conv_23": 1, "conv_34": 16, "conv_45": 37}


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm2d, + PReLU unless `act` is False (the reference's Conv_block /
    Linear_block)."""

    def __init__(self, cin, cout, k=1, stride=1, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if act:
            self.prelu = nn.PReLU(cout)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.prelu(x) if hasattr(self, "prelu") else x


class SE(nn.Module):
    """Squeeze-excitation: global mean, 1x1 conv + BN + ReLU, 1x1 conv + BN, sigmoid gate."""

    def __init__(self, c, reduction=4):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // reduction, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c // reduction)
        self.fc2 = nn.Conv2d(c // reduction, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        g = torch.relu(self.bn1(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(self.bn2(self.fc2(g)))


class Block(nn.Module):
    """Inverted residual starting at `keep[i]` (the reference's Depth_Wise / Depth_Wise_SE)."""

    def __init__(self, keep, i, stride, residual, se=False):
        super().__init__()
        assert keep[i + 1] == keep[i + 2], "the 3x3 conv is depthwise"
        self.conv = ConvBN(keep[i], keep[i + 1])
        self.conv_dw = ConvBN(keep[i + 1], keep[i + 2], 3, stride, groups=keep[i + 1])
        self.project = ConvBN(keep[i + 2], keep[i + 3], act=False)
        self.residual = residual
        if se:
            self.se_module = SE(keep[i + 3])

    def forward(self, x):
        y = self.project(self.conv_dw(self.conv(x)))
        if hasattr(self, "se_module"):
            y = self.se_module(y)
        return x + y if self.residual else y


class Stage(nn.Module):
    """Residual blocks; with `se`, the last one carries the SE gate (the reference's ResidualSE)."""

    def __init__(self, keep, first, n, se):
        super().__init__()
        self.model = nn.Sequential(*(Block(keep, first + 3 * j, 1, True, se and j == n - 1) for j in range(n)))

    def forward(self, x):
        return self.model(x)


class MiniFASNet(nn.Module):
    def __init__(self, keep, se=False, input_size=(80, 80), embedding=128, classes=3, drop_p=0.0):
        super().__init__()
        # The reference's get_kernel: the head's depthwise conv covers the whole final map.
        k6 = ((input_size[0] + 15) // 16, (input_size[1] + 15) // 16)
        self.conv1 = ConvBN(3, keep[0], 3, 2)
        self.conv2_dw = ConvBN(keep[0], keep[1], 3, 1, groups=keep[1])
        for name, i in DOWN.items():
            setattr(self, name, Block(keep, i, 2, False))
        for name, (first, n) in STAGES.items():
            setattr(self, name, Stage(keep, first, n, se))
        self.conv_6_sep = ConvBN(keep[46], keep[47])
        self.conv_6_dw = nn.Module()
        self.conv_6_dw.conv = nn.Conv2d(keep[47], keep[48], k6, groups=keep[48], bias=False)
        self.conv_6_dw.bn = nn.BatchNorm2d(keep[48])
        self.linear = nn.Linear(512, embedding, bias=False)
        self.bn = nn.BatchNorm1d(embedding)
        self.drop = nn.Dropout(drop_p)
        self.prob = nn.Linear(embedding, classes, bias=False)

    def forward(self, x):
        for name in ("conv1", "conv2_dw", "conv_23", "conv_3", "conv_34", "conv_4", "conv_45", "conv_5", "conv_6_sep"):
            x = getattr(self, name)(x)
        x = self.conv_6_dw.bn(self.conv_6_dw.conv(x)).flatten(1)
        return self.prob(self.drop(self.bn(self.linear(x))))


def minifasnet_v1(**kw):
    return MiniFASNet(KEEP_V1, se=False, drop_p=0.2, **kw)


def minifasnet_v2(**kw):
    return MiniFASNet(KEEP_V2, se=False, drop_p=0.2, **kw)


def minifasnet_v1se(**kw):
    return MiniFASNet(KEEP_V1, se=True, drop_p=0.75, **kw)


def load(builder, path) -> MiniFASNet:
    """Builds the network and loads a published state dict strictly (its `module.` prefix, from
    nn.DataParallel, stripped as the reference's anti_spoof_predict.py does); eval mode."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    net = builder()
    missing, unexpected = net.load_state_dict(sd, strict=True)
    assert not missing and not unexpected, (missing, unexpected)
    return net.eval()
