"""Joint training of the multi-task model (train/mtl/model.py) on the crops of make_crops.py.

    /work/venv-t/bin/python train/mtl/train.py [--cache /work/cache/mtl] [--epochs 3]
        [--fork stage4] [--freeze trunk] [--lambdas 1,1,1,1] [--weighting fixed|uncertainty]
        [--neg-ratio 1.0] [--batch 64] [--lr 1e-3] [--name first]
        [--max-train-neg N] [--max-val-neg N] [--limit-train N] [--limit-val N]

Data: OUT/{aaf,utkface,celeba-id}.npz. Train = rows with split "train" (AAF + UTKFace train
splits: faces, background and badly aligned crops; celeba-id has no train rows). Each epoch
takes every train face and a seeded random draw of neg-ratio x as many negatives from the
negative pool (at most --max-train-neg per negative kind, drawn once with seed SEED).
Val = rows with split "val" (all faces; at most --max-val-neg crops per negative kind).
With --freeze trunk (default) the frozen trunk's outputs are computed once per used crop
(FrozenCache) and each step runs only the trainable branch; the time is logged separately.
The outputs are saved as OUT/trunk-<key>.pt (key: the rows, the fork and the embedder's bytes)
and read back by later runs over the same rows.

Loss  L = l_emb*L_emb + l_gender*L_gender + l_age*L_age + l_face*L_face  (--lambdas in that order)
  L_emb     1 - cos(student embedding, teacher embedding) on face crops (teacher: stored
            MobileFaceNet output); identically 0 while the identity path is frozen.
  L_gender  binary cross-entropy on face crops with a gender label.
  L_age     DLDL: KL(N(age, sigma=--age-sigma) over 0..100 || softmax) + --age-l1 * |E[age] - age|
            (years) on face crops with an age (clipped to 0..100).
  L_face    binary cross-entropy, face crops 1, background / badly aligned crops 0.
  --weighting uncertainty: L = sum_i exp(-s_i) * L_i + s_i with learned s_i (Kendall et al.
  2018), the lambdas then multiply the L_i inside.
Optimiser AdamW (weight decay 1e-4), cosine learning-rate decay, no augmentation except an
optional horizontal flip (--flip; the embedding term skips flipped crops, whose teacher
target was not computed). Seeds: torch.manual_seed(SEED), numpy default_rng(SEED + epoch).

Val metrics (each epoch; the teachers' numbers on the same crops beside them):
  * celeba-id verification on docs/eval/celeba-id-pairs.csv: 10-fold accuracy (threshold
    chosen on the other 9 folds, as train/eval_verify.py), by dot product of the largest
    faces' embeddings; a pair with a photo without a face is rejected at every threshold.
  * embedding cosine to the teacher on all val faces (mean / min).
  * AAF val / UTK val: gender accuracy (male if logit > 0; teacher: P(male) > 0.5), age MAE
    (student: expectation over 0..100; teacher: the manifest's top-2 rule).
  * face head accuracy at 0.5 on val faces, background and badly aligned crops.
Writes OUT/runs/<name>/{model.pt,log.json} (outside the repo) and <results-dir>/<name>.json
(default train/mtl/results/).
Torch uses 2 threads (torch.set_num_threads(2)).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from model import AGES, MultiTask, age_expectation  # noqa: E402
from macs import torch_macs  # noqa: E402

SEED = 3
SETS = ("aaf", "utkface", "celeba-id")


def load(cache: Path):
    parts = {}
    for s in SETS:
        p = cache / f"{s}.npz"
        if p.exists():
            d = dict(np.load(p))
            d["set"] = np.array([s] * len(d["kind"]))
            parts[s] = d
    keys = [k for k in next(iter(parts.values())) if k != "set"] + ["set"]
    return {k: np.concatenate([parts[s][k] for s in parts]) for k in keys}


def to_input(crops_u8, flip=None):
    x = torch.from_numpy(crops_u8).permute(0, 3, 1, 2).float()
    x = (x - 127.5) / 128.0
    if flip is not None and flip.any():
        x[flip] = torch.flip(x[flip], dims=[3])
    return x


def age_targets(age, sigma):
    a = torch.arange(AGES, dtype=torch.float32)[None]
    t = torch.exp(-0.5 * ((a - age[:, None]) / sigma) ** 2)
    return t / t.sum(1, keepdim=True)


def losses(out, b, args):
    face = b["kind"] == 0
    L = {}
    m = face & b["use_emb"]
    if m.any():
        cos = (out["emb"][m] * b["temb"][m]).sum(1)
        L["emb"] = (1 - cos).mean()
    else:
        L["emb"] = out["emb"].sum() * 0
    m = face & (b["male"] >= 0)
    L["gender"] = F.binary_cross_entropy_with_logits(out["gender"][m], b["male"][m].float()) if m.any() else out["gender"].sum() * 0
    m = face & (b["age"] >= 0)
    if m.any():
        age = b["age"][m].float().clamp(0, AGES - 1)
        logp = torch.log_softmax(out["age"][m], 1)
        t = age_targets(age, args.age_sigma)
        kl = (t * (torch.log(t.clamp_min(1e-12)) - logp)).sum(1).mean()
        L["age"] = kl + args.age_l1 * (age_expectation(out["age"][m]) - age).abs().mean()
    else:
        L["age"] = out["age"].sum() * 0
    L["face"] = F.binary_cross_entropy_with_logits(out["face"], face.float())
    return L


STAGE4 = "MobileFaceNet/MobileFaceNet/Conv2d_4_InvResBlock_5/Add"


def trunk_session():
    """models/mobilefacenet.onnx with a free batch dim and the stage4 map as an extra output."""
    import onnx
    import onnxruntime as ort
    m = onnx.load(str(ROOT / "models" / "mobilefacenet.onnx"))
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    m.graph.output.insert(0, onnx.helper.make_tensor_value_info(STAGE4, onnx.TensorProto.FLOAT, None))
    o = ort.SessionOptions()
    o.intra_op_num_threads = torch.get_num_threads()
    o.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"])


class FrozenCache:
    """With --freeze trunk the trunk is fixed: its outputs are computed once per crop
    (float16 stage4 map [128,14,14], float32 embedding; the conv7 map for --fork conv7)
    so that each step runs only the trainable branch."""

    def __init__(self, net, crops, rows, batch=16, backend="ort"):
        t0 = time.time()
        self.h, self.f, self.e = [], [], []
        self.pos = np.full(len(crops), -1, np.int64)
        self.pos[rows] = np.arange(len(rows))
        net.eval()
        if backend == "ort" and net.fork == "stage4":
            # the frozen trunk IS models/mobilefacenet.onnx (check_mobilefacenet.py: max diff
            # ~5e-7); onnxruntime ran it faster than torch here (35 vs 28 crops/s on the busy 2-core machine)
            sess = trunk_session()
            for i in range(0, len(rows), 32):
                x = (crops[rows[i:i + 32]].astype(np.float32) - 127.5) / 128.0
                h, e = sess.run(None, {"input": x})
                self.h.append(torch.from_numpy(h).half())
                self.f.append(torch.zeros(len(h), 1))
                self.e.append(torch.from_numpy(e))
            self.h, self.f, self.e = torch.cat(self.h), torch.cat(self.f), torch.cat(self.e)
            self.seconds = time.time() - t0
            return
        with torch.no_grad():
            for i in range(0, len(rows), batch):
                h, f, e = net.trunk(to_input(crops[rows[i:i + batch]]))
                self.h.append(h.half() if net.fork == "stage4" else torch.zeros(len(h), 1))
                self.f.append(f.half() if net.fork == "conv7" else torch.zeros(len(h), 1))
                self.e.append(e)
        self.h, self.f, self.e = torch.cat(self.h), torch.cat(self.f), torch.cat(self.e)
        self.seconds = time.time() - t0

    def run(self, net, idx):
        i = torch.from_numpy(self.pos[np.asarray(idx)])
        assert (i >= 0).all()
        return net.heads(self.h[i].float(), self.f[i].float(), self.e[i])


def predict(net, crops, batch=200, cache=None, rows=None):
    net.eval()
    outs = {"emb": [], "gender": [], "age": [], "face": []}
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            o = cache.run(net, rows[i:i + batch]) if cache is not None else net(to_input(crops[i:i + batch]))
            outs["emb"].append(o["emb"].numpy())
            outs["gender"].append(o["gender"].numpy())
            outs["age"].append(age_expectation(o["age"]).numpy())
            outs["face"].append(torch.sigmoid(o["face"]).numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in outs.items()}


def kfold_accuracy(scores, same, folds):
    """10-fold accuracy: threshold that maximises accuracy on 9 folds, applied to the 10th.
    scores may be -inf (no face: rejected at every threshold)."""
    accs = []
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        cand = np.unique(scores[tr & np.isfinite(scores)])
        cand = np.concatenate([cand - 1e-9, [np.inf]])
        acc_tr = [((scores[tr] >= t) == same[tr]).mean() for t in cand]
        t = cand[int(np.argmax(acc_tr))]
        accs.append(((scores[te] >= t) == same[te]).mean())
    return float(np.mean(accs)), float(np.std(accs))


def verification(emb_by_path, pairs):
    s = np.array([float(emb_by_path[a] @ emb_by_path[b]) if a in emb_by_path and b in emb_by_path else -np.inf
                  for a, b in zip(pairs["a"], pairs["b"])])
    acc, sd = kfold_accuracy(s, pairs["same"], pairs["fold"])
    return {"acc_10fold": round(acc, 4), "std": round(sd, 4), "pairs_without_face": int(np.isinf(s).sum())}


def evaluate(net, D, val_idx, pairs, cache=None):
    t0 = time.time()
    v = {k: D[k][val_idx] for k in ( "kind", "src", "set", "age", "male", "teacher_emb", "teacher_male", "teacher_age")}
    P = predict(net, D["crops"][val_idx] if cache is None else val_idx, cache=cache, rows=val_idx)
    face = v["kind"] == 0
    res = {}
    cos = (P["emb"][face] * v["teacher_emb"][face]).sum(1)
    res["emb_cos_to_teacher"] = {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5), "n": int(face.sum())}
    for s in ("aaf", "utkface"):
        m = face & (v["set"] == s) & (v["male"] >= 0)
        if not m.any():
            continue
        ma = face & (v["set"] == s) & (v["age"] >= 0)
        res[s] = {
            "n": int(m.sum()),
            "gender_acc": round(float(((P["gender"][m] > 0) == (v["male"][m] == 1)).mean()), 4),
            "gender_acc_teacher": round(float(((v["teacher_male"][m] > 0.5) == (v["male"][m] == 1)).mean()), 4),
            "age_mae": round(float(np.abs(P["age"][ma] - v["age"][ma]).mean()), 3),
            "age_mae_teacher": round(float(np.abs(v["teacher_age"][ma] - v["age"][ma]).mean()), 3),
        }
    res["face_head"] = {name: {"n": int((v["kind"] == k).sum()),
                               "acc": round(float(((P["face"][v["kind"] == k] > 0.5) == (k == 0)).mean()), 4)}
                        for name, k in (("faces", 0), ("background", 1), ("misaligned", 2)) if (v["kind"] == k).any()}
    allk = np.ones(len(v["kind"]), bool)
    res["face_head"]["all"] = round(float(((P["face"][allk] > 0.5) == (v["kind"][allk] == 0)).mean()), 4)
    if pairs is not None:
        cel = face & (v["set"] == "celeba-id")
        student = {p: e for p, e in zip(v["src"][cel], P["emb"][cel])}
        teacher = {p: e for p, e in zip(v["src"][cel], v["teacher_emb"][cel])}
        res["celeba_verification"] = verification(student, pairs)
        res["celeba_verification_teacher"] = verification(teacher, pairs)
    res["eval_seconds"] = round(time.time() - t0, 1)
    return res


def select_rows(D, limit_train=0, limit_val=0, max_train_neg=0, max_val_neg=0):
    """The (train, val) rows of a run: optional random subsets (smoke tests), then every face
    row and at most max_*_neg rows of each negative kind; all draws from one generator seeded
    with SEED, in this order, so export.py gets the same val rows as the run it exports."""
    rng0 = np.random.default_rng(SEED)
    tr = np.nonzero(D["split"] == "train")[0]
    va = np.nonzero(D["split"] == "val")[0]
    if limit_train:
        tr = np.sort(rng0.choice(tr, min(limit_train, len(tr)), replace=False))
    if limit_val:
        va = np.sort(rng0.choice(va, min(limit_val, len(va)), replace=False))

    def cap_negatives(rows, n):
        keep = [rows[D["kind"][rows] == 0]]
        for k in (1, 2):
            r = rows[D["kind"][rows] == k]
            keep.append(np.sort(rng0.choice(r, n, replace=False)) if n and len(r) > n else r)
        return np.sort(np.concatenate(keep))

    return cap_negatives(tr, max_train_neg), cap_negatives(va, max_val_neg)


def read_pairs():
    """docs/eval/celeba-id-pairs.csv as arrays (the fixed verification pair list)."""
    with open(ROOT / "docs" / "eval" / "celeba-id-pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"a": [r["path_a"] for r in rows], "b": [r["path_b"] for r in rows],
            "same": np.array([r["same"] == "1" for r in rows]), "fold": np.array([int(r["fold"]) for r in rows])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="/work/cache/mtl")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--fork", default="stage4", choices=["stage4", "conv7"])
    ap.add_argument("--freeze", default="trunk", choices=["trunk", "early", "none"])
    ap.add_argument("--lambdas", default="1,1,1,1", help="emb,gender,age,face")
    ap.add_argument("--weighting", default="fixed", choices=["fixed", "uncertainty"])
    ap.add_argument("--neg-ratio", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-shared", type=float, default=1e-4, help="learning rate of unfrozen teacher layers")
    ap.add_argument("--age-sigma", type=float, default=2.0)
    ap.add_argument("--age-l1", type=float, default=0.1)
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--limit-train", type=int, default=0, help="use only N train rows (smoke test)")
    ap.add_argument("--limit-val", type=int, default=0, help="use only N val rows (smoke test; no verification)")
    ap.add_argument("--max-train-neg", type=int, default=0, help="cap on train rows per negative kind (0: all)")
    ap.add_argument("--max-val-neg", type=int, default=0, help="cap on val rows per negative kind (0: all)")
    ap.add_argument("--cache-backend", default="ort", choices=["ort", "torch"],
                    help="who computes the frozen trunk's outputs once (same weights)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="first")
    ap.add_argument("--results-dir", default=str(HERE / "results"), help="where <name>.json goes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    lam = [float(x) for x in args.lambdas.split(",")]
    cache = Path(args.cache)

    D = load(cache)
    tr, va = select_rows(D, args.limit_train, args.limit_val, args.max_train_neg, args.max_val_neg)
    pairs = read_pairs() if not args.limit_val and (D["set"][va] == "celeba-id").any() else None
    tr_face, tr_neg = tr[D["kind"][tr] == 0], tr[D["kind"][tr] != 0]
    print(f"train rows: {len(tr_face)} faces, {len(tr_neg)} negatives; val rows: {len(va)}", flush=True)

    net = MultiTask(fork=args.fork, freeze=args.freeze)
    macs = torch_macs(net.eval(), torch.zeros(1, 3, 112, 112))["macs"]
    log_s = torch.zeros(4, requires_grad=True)
    shared = [p for n, p in net.named_parameters() if p.requires_grad and n.startswith("teacher_net.")]
    own = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("teacher_net.")]
    groups = [{"params": own, "lr": args.lr}]
    if shared:
        groups.append({"params": shared, "lr": args.lr_shared})
    if args.weighting == "uncertainty":
        groups.append({"params": [log_s], "lr": args.lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    n_neg = min(len(tr_neg), int(round(args.neg_ratio * len(tr_face))))
    steps_per_epoch = math.ceil((len(tr_face) + n_neg) / args.batch)
    total = steps_per_epoch * args.epochs
    base_lrs = [g["lr"] for g in opt.param_groups]
    run_dir = cache / "runs" / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    log = {"args": vars(args), "macs": macs, "train_faces": int(len(tr_face)), "train_negatives_pool": int(len(tr_neg)),
           "negatives_per_epoch": n_neg, "val_rows": int(len(va)), "torch": torch.__version__, "epochs": []}

    fc = None
    if args.freeze == "trunk":
        if args.flip:
            raise SystemExit("--flip needs the trunk to run per step: not with --freeze trunk")
        rows = np.concatenate([tr, va])
        key = hashlib.sha256(rows.tobytes() + args.fork.encode()
                             + (ROOT / "models" / "mobilefacenet.onnx").read_bytes()).hexdigest()[:16]
        saved = cache / f"trunk-{key}.pt"
        if saved.exists():
            # the same rows through the same frozen weights: reuse the outputs of an earlier run
            fc = FrozenCache.__new__(FrozenCache)
            fc.__dict__.update(torch.load(saved, weights_only=False))  # our own file
            print(f"trunk outputs for {len(rows)} crops read from {saved}", flush=True)
        else:
            fc = FrozenCache(net, D["crops"], rows, backend=args.cache_backend)
            torch.save(fc.__dict__, saved)
            log["trunk_cache_seconds"] = round(fc.seconds, 1)
            print(f"trunk outputs cached for {len(rows)} crops in {fc.seconds:.0f} s", flush=True)
    step = 0
    for ep in range(args.epochs):
        rng = np.random.default_rng(SEED + ep)
        idx = np.concatenate([tr_face, rng.choice(tr_neg, n_neg, replace=False)])
        idx = idx[rng.permutation(len(idx))]
        net.train()
        t0 = time.time()
        sums = {"emb": 0.0, "gender": 0.0, "age": 0.0, "face": 0.0, "total": 0.0}
        for i in range(0, len(idx), args.batch):
            bi = np.sort(idx[i:i + args.batch])
            flip = rng.random(len(bi)) < 0.5 if args.flip else np.zeros(len(bi), bool)
            b = {"kind": torch.from_numpy(D["kind"][bi].astype(np.int64)),
                 "male": torch.from_numpy(D["male"][bi].astype(np.int64)),
                 "age": torch.from_numpy(D["age"][bi].astype(np.int64)),
                 "temb": torch.from_numpy(np.nan_to_num(D["teacher_emb"][bi])),
                 "use_emb": torch.from_numpy(~flip)}
            out = fc.run(net, bi) if fc is not None else net(to_input(D["crops"][bi], flip))
            L = losses(out, b, args)
            parts = [lam[k] * L[n] for k, n in enumerate(("emb", "gender", "age", "face"))]
            if args.weighting == "uncertainty":
                loss = sum(torch.exp(-log_s[k]) * parts[k] + log_s[k] for k in range(4))
            else:
                loss = sum(parts)
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * 0.5 * (1 + math.cos(math.pi * step / total))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            for n in ("emb", "gender", "age", "face"):
                sums[n] += float(L[n].detach()) * len(bi)
            sums["total"] += float(loss.detach()) * len(bi)
        train_s = time.time() - t0
        ev = evaluate(net, D, va, pairs, fc)
        rec = {"epoch": ep + 1, "train_seconds": round(train_s, 1), "train_rows": int(len(idx)),
               "train_loss": {k: round(v / len(idx), 4) for k, v in sums.items()},
               "log_s": [round(float(x), 3) for x in log_s.detach()], "val": ev}
        log["epochs"].append(rec)
        print(json.dumps(rec), flush=True)
        torch.save({"state_dict": net.state_dict(), "args": vars(args)}, run_dir / "model.pt")
        (run_dir / "log.json").write_text(json.dumps(log, indent=1) + "\n")
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.name}.json").write_text(json.dumps(log, indent=1) + "\n")


if __name__ == "__main__":
    main()
