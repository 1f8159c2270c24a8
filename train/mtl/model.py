"""The joint multi-task network: MobileFaceNet trunk (teacher weights) + 4 task heads.

    from train.mtl.model import MultiTask
    net = MultiTask(fork="stage4", freeze="trunk")       # teacher weights loaded from models/mobilefacenet.onnx
    out = net(x)   # x [N,3,112,112], RGB, (pixel - 127.5) / 128
    out["emb"] [N,192] L2-normalised; out["gender"] [N] logit (male); out["age"] [N,101] logits over
    ages 0..100 (DLDL); out["face"] [N] logit (face vs non-face)

Where the heads attach (--fork):
  * "stage4" (default): the trunk stem..stage4 (112 -> 14x14x128) is shared by all tasks. The
    identity path continues through the teacher's stage5, stage6, conv7 and GDC/linear layers
    (192-d embedding). The attribute path is a copy of the teacher's stage5 + stage6 + conv7
    (initialised from the same weights, then free to learn age/gender/face cues that the
    identity layers are trained to discard: age and pose are nuisance factors for identity)
    ending in a 7x7x512 map, from which three small heads each take
    1x1 conv 512->128 + PReLU, GDC (depthwise 7x7) -> 128-d, linear -> outputs.
    Extra cost over the teacher embedder: the copied tail (~20 MMAC) + heads (~10 MMAC).
  * "conv7": everything shared; the three heads sit on the teacher's 7x7x512 conv7 map.
    Cheapest (~10 MMAC extra), but gender/age/face must live in features trained for identity.

What is frozen (--freeze):
  * "trunk" (default for the first runs): the shared trunk and the whole identity path are
    frozen (eval-mode, no gradients), so the embedding stays the teacher's exactly
    (cosine 1, same verification accuracy) and only the attribute branch + heads learn. Reason:
    the embedding target (verification within 0.2 points of the teacher) is the strictest,
    and the training crops here (AAF + UTKFace train splits, ~13 k faces, no identity labels;
    celeba-id is all validation) are far too few to re-learn identity features; the joint
    loss's embedding term is then 0 and serves as a guard for the next setting.
  * "early": stem + stage2 frozen, the rest trainable; the embedding distillation term keeps
    the identity output near the teacher while stage3/stage4 adapt to all tasks.
  * "none": everything trainable (needs a small learning rate for the shared part).
Whether unfreezing pays must be shown on the val splits (phase 2 ablation).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mobilefacenet import MobileFaceNet, PReLU, load_from_onnx  # noqa: E402

ROOT = HERE.parents[1]
AGES = 101  # bins 0..100 years


class Head(nn.Module):
    def __init__(self, cin=512, mid=128, out=1):
        super().__init__()
        self.reduce = nn.Conv2d(cin, mid, 1, bias=True)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act = PReLU(mid)
        self.gdc = nn.Conv2d(mid, mid, 7, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.fc = nn.Linear(mid, out)
        nn.init.constant_(self.act.beta, -0.75)

    def forward(self, f):
        h = self.bn2(self.gdc(self.act(self.bn1(self.reduce(f)))))
        return self.fc(torch.flatten(h, 1))


class MultiTask(nn.Module):
    def __init__(self, fork="stage4", freeze="trunk", onnx_path=ROOT / "models" / "mobilefacenet.onnx"):
        super().__init__()
        assert fork in ("stage4", "conv7") and freeze in ("trunk", "early", "none")
        self.fork, self.freeze_mode = fork, freeze
        self.teacher_net = load_from_onnx(onnx_path, MobileFaceNet())
        t = self.teacher_net
        if fork == "stage4":
            self.attr_tail = nn.Sequential(copy.deepcopy(t.stage5), copy.deepcopy(t.stage6), copy.deepcopy(t.conv7))
        else:
            self.attr_tail = nn.Identity()
        self.gender = Head(out=1)
        self.age = Head(out=AGES)
        self.face = Head(out=1)
        self.apply_freeze()

    def frozen_modules(self):
        t = self.teacher_net
        if self.freeze_mode == "trunk":
            return [t]
        if self.freeze_mode == "early":
            return [t.conv1, t.dw1, t.pw1, t.stage2]
        return []

    def apply_freeze(self):
        for m in self.frozen_modules():
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()  # no BN in the trunk (folded), but keep frozen parts in eval anyway
        return self

    def trunk(self, x):
        """Shared trunk output [N,128,14,14] and the identity path's 7x7x512 map."""
        t = self.teacher_net
        grad = torch.is_grad_enabled()
        with torch.set_grad_enabled(grad and self.freeze_mode == "none"):
            h = t.stage2(t.pw1(t.dw1(t.conv1(x))))
        with torch.set_grad_enabled(grad and self.freeze_mode != "trunk"):
            h = t.stage4(t.stage3(h))
            f_id = t.conv7(t.stage6(t.stage5(h)))
            emb = t.embed_head(f_id)
        return h, f_id, emb

    def heads(self, h, f_id, emb):
        f_attr = self.attr_tail(h) if self.fork == "stage4" else f_id
        return {"emb": emb, "gender": self.gender(f_attr)[:, 0], "age": self.age(f_attr),
                "face": self.face(f_attr)[:, 0]}

    def forward(self, x):
        return self.heads(*self.trunk(x))


def age_expectation(logits):
    p = torch.softmax(logits, 1)
    return (p * torch.arange(logits.shape[1], dtype=p.dtype, device=p.device)).sum(1)


def load_run(cache, run):
    """The trained network of train.py run `run` (OUT/runs/<run>/model.pt), in eval mode, and
    the run's arguments."""
    ck = torch.load(Path(cache) / "runs" / run / "model.pt", weights_only=False)
    net = MultiTask(fork=ck["args"]["fork"], freeze=ck["args"]["freeze"])
    net.load_state_dict(ck["state_dict"])
    return net.eval(), ck["args"]
