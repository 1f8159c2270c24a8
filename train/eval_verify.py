#!/usr/bin/env python3
"""1:1 verification accuracy of facegate on the fixed celeba-id pair list.

    python3 train/eval_verify.py --data ../shared/data --pairs docs/eval/celeba-id-pairs.csv \
        [--binary target/release/facegate] [--reuse]

Runs `facegate analyze --json --embeddings` once over every image of the list (paths are
relative to --data; research data is read in place, nothing is copied), takes the largest
face of each image and scores a pair by the dot product of the two L2-normalised
embeddings; a pair is accepted ("same person") when the score >= threshold, as the CLI does.

A pair with an image where no face was found (or that could not be read) gets score -inf: it
is rejected at every threshold, so a genuine pair with a missing face counts as a false
reject and an impostor pair as a correct reject.

Reports (and writes to --out, default docs/eval/celeba-id-verify.json):
  * faces not found, and how many genuine / impostor pairs they touch;
  * 10-fold accuracy (LFW protocol): for each fold the accuracy-maximising threshold is
    chosen on the other 9 folds and applied to it; mean, std (ddof=1) and standard error;
  * accuracy, TAR and FAR at the shipped `match_threshold` of models/mobilefacenet.toml;
  * TAR at FAR 1e-2 and 1e-3 over all impostor pairs pooled, with the threshold that gives
    it, and a bootstrap 95% interval (the FAR 1e-3 point rests on the top few impostors);
  * EER and its threshold; genuine / impostor score means; ROC AUC;
  * recommended 1:1 thresholds: the FAR ~ 1e-3 one and the equal-error one.

--reuse takes the saved raw output (train/out/eval/celeba-id-analyze.jsonl, git-ignored)
instead of running the binary again, when it covers every image.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_common as ec  # noqa: E402

ROOT = ec.ROOT
FARS = (1e-2, 1e-3)


def load_pairs(path: Path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    fold = np.array([int(r["fold"]) for r in rows])
    same = np.array([int(r["same"]) for r in rows], dtype=bool)
    return fold, [r["path_a"] for r in rows], [r["path_b"] for r in rows], same


def accuracy(scores, same, t):
    return float(np.mean((scores >= t) == same))


def best_threshold(scores, same):
    """Accuracy-maximising threshold; candidates are midpoints between consecutive distinct
    finite scores; among equally good ones the middle candidate is taken."""
    fin = np.unique(scores[np.isfinite(scores)])
    cands = np.concatenate([[fin[0] - 1e-6], (fin[:-1] + fin[1:]) / 2, [fin[-1] + 1e-6]])
    gen = np.sort(scores[same])
    imp = np.sort(scores[~same])
    tp = len(gen) - np.searchsorted(gen, cands, side="left")  # genuine >= t
    tn = np.searchsorted(imp, cands, side="left")  # impostor < t
    acc = (tp + tn) / len(scores)
    best = np.flatnonzero(acc == acc.max())
    return float(cands[best[len(best) // 2]]), float(acc.max())


def threshold_at_far(imp, far):
    """Smallest threshold (accept: score >= t) whose FAR on these impostors is <= far:
    just above the (k+1)-th highest impostor score, k = floor(far * n)."""
    k = int(math.floor(far * len(imp) + 1e-9))
    desc = np.sort(imp)[::-1]
    return float(np.nextafter(desc[k], np.inf)), k


def rates(gen, imp, t):
    return float(np.mean(gen >= t)), float(np.mean(imp >= t))


def eer(gen, imp):
    cands = np.unique(np.concatenate([gen, imp]))
    cands = cands[np.isfinite(cands)]
    gs, is_ = np.sort(gen), np.sort(imp)
    frr = np.searchsorted(gs, cands, side="left") / len(gen)  # genuine < t
    far = (len(imp) - np.searchsorted(is_, cands, side="left")) / len(imp)  # impostor >= t
    i = int(np.argmin(np.abs(far - frr)))
    # interpolate between the two candidates around the crossing for the rate itself
    return float((far[i] + frr[i]) / 2), float(cands[i]), float(far[i]), float(frr[i])


def auc(gen, imp):
    """P(genuine score > impostor score), ties 1/2 (Mann-Whitney)."""
    allv = np.concatenate([gen, imp])
    fin = np.where(np.isfinite(allv), allv, -1e9)
    order = fin.argsort(kind="mergesort")
    ranks = np.empty(len(fin))
    ranks[order] = np.arange(1, len(fin) + 1)
    # average ranks over ties
    _, inv, cnt = np.unique(fin, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / cnt)[inv]
    r_g = ranks[:len(gen)].sum()
    return float((r_g - len(gen) * (len(gen) + 1) / 2) / (len(gen) * len(imp)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="data folder (default $FACEGATE_DATA or ../shared/data)")
    ap.add_argument("--pairs", default=str(ROOT / "docs" / "eval" / "celeba-id-pairs.csv"))
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "facegate"))
    ap.add_argument("--manifest", default=str(ROOT / "models" / "mobilefacenet.toml"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "eval" / "celeba-id-verify.json"))
    ap.add_argument("--raw", default=str(ec.RAW_DIR / "celeba-id-analyze.jsonl"))
    ap.add_argument("--reuse", action="store_true", help="reuse the saved raw analyze output")
    ap.add_argument("--bootstrap", type=int, default=2000)
    args = ap.parse_args()

    data = ec.data_root(args.data, "celeba-id/identities.csv")
    fold, pa, pb, same = load_pairs(Path(args.pairs))
    images = sorted(set(pa) | set(pb))
    shipped = float(ec.read_toml(Path(args.manifest))["match_threshold"])
    print(f"{len(same)} pairs ({same.sum()} genuine, {(~same).sum()} impostor), "
          f"{len(np.unique(fold))} folds, {len(images)} images", file=sys.stderr)

    res, run = ec.run_analyze(args.binary, data, images, True, Path(args.raw), args.reuse)

    emb: dict[str, np.ndarray] = {}
    no_face, unreadable, multi = [], [], 0
    for p in images:
        d = res[p]
        if "error" in d:
            unreadable.append(p)
            continue
        f = ec.largest_face(d)
        if f is None:
            no_face.append(p)
            continue
        multi += len(d["faces"]) > 1
        e = np.asarray(f["embedding"], np.float64)
        emb[p] = e
    dims = {len(e) for e in emb.values()}
    norms = np.array([np.linalg.norm(e) for e in emb.values()])

    scores = np.array([float(emb[a] @ emb[b]) if a in emb and b in emb else -np.inf
                       for a, b in zip(pa, pb)])
    miss = ~np.isfinite(scores)
    gen_all, imp_all = scores[same], scores[~same]

    # 10-fold
    folds = []
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        t, tr_acc = best_threshold(scores[tr], same[tr])
        folds.append({"fold": int(f), "threshold": round(t, 4), "train_acc": round(tr_acc, 4),
                      "test_acc": round(accuracy(scores[te], same[te], t), 4)})
    accs = np.array([x["test_acc"] for x in folds])

    # shipped threshold
    tar_s, far_s = rates(gen_all, imp_all, shipped)

    # TAR @ FAR (pooled) + bootstrap
    rng = np.random.default_rng(0)
    far_rows = {}
    for far in FARS:
        t, k = threshold_at_far(imp_all, far)
        tar, got_far = rates(gen_all, imp_all, t)
        bt, bth = [], []
        for _ in range(args.bootstrap):
            g = gen_all[rng.integers(0, len(gen_all), len(gen_all))]
            i = imp_all[rng.integers(0, len(imp_all), len(imp_all))]
            tb, _ = threshold_at_far(i, far)
            bt.append(np.mean(g >= tb))
            bth.append(tb)
        far_rows[f"{far:g}"] = {
            "threshold": round(t, 4), "tar": round(tar, 4), "far_observed": round(got_far, 5),
            "impostors_allowed_above": k, "impostors_total": int(len(imp_all)),
            "tar_95ci": [round(float(np.percentile(bt, 2.5)), 4), round(float(np.percentile(bt, 97.5)), 4)],
            "threshold_95ci": [round(float(np.percentile(bth, 2.5)), 4), round(float(np.percentile(bth, 97.5)), 4)],
            "support": ("adequate" if k >= 10 else
                        f"weak: only {k} impostor pairs may score above the threshold, so it is set "
                        f"by the top {k + 1} impostor scores of {len(imp_all)}; treat it as indicative"),
        }
    top_imp = [round(float(x), 4) for x in np.sort(imp_all[np.isfinite(imp_all)])[::-1][:10]]

    e, t_eer, far_eer, frr_eer = eer(gen_all, imp_all)
    gen_f, imp_f = gen_all[np.isfinite(gen_all)], imp_all[np.isfinite(imp_all)]

    rec_far = far_rows["0.001"]["threshold"]
    report = {
        "what": "1:1 verification of facegate on celeba-id, fixed LFW-style pairs (train/make_pairs.py)",
        "pairs_file": str(Path(args.pairs).resolve().relative_to(ROOT)) if str(Path(args.pairs).resolve()).startswith(str(ROOT)) else args.pairs,
        "pairs": int(len(same)), "genuine_pairs": int(same.sum()), "impostor_pairs": int((~same).sum()),
        "folds": int(len(folds)), "images": len(images),
        "score": "dot product of the L2-normalised embeddings of the largest face; accept when score >= threshold",
        "analyze_run": run,
        "embedding_dim": sorted(dims), "embedding_norm_range": [round(float(norms.min()), 6), round(float(norms.max()), 6)],
        "faces_not_found": {
            "images_without_face": len(no_face), "images_unreadable": len(unreadable),
            "images_with_several_faces": int(multi),
            "genuine_pairs_affected": int((miss & same).sum()),
            "impostor_pairs_affected": int((miss & ~same).sum()),
            "rule": "a pair with a missing face is rejected at every threshold: genuine -> false reject, impostor -> correct reject",
            "files": sorted(no_face + unreadable),
        },
        "ten_fold": {"accuracy_mean": round(float(accs.mean()), 4), "accuracy_std": round(float(accs.std(ddof=1)), 4),
                     "accuracy_se": round(float(accs.std(ddof=1) / math.sqrt(len(accs))), 4),
                     "threshold_mean": round(float(np.mean([x["threshold"] for x in folds])), 4),
                     "per_fold": folds},
        "shipped_threshold": {"source": "models/mobilefacenet.toml match_threshold", "threshold": shipped,
                              "accuracy": round(accuracy(scores, same, shipped), 4),
                              "tar": round(tar_s, 4), "far": round(far_s, 5),
                              "false_accepts": int((imp_all >= shipped).sum()),
                              "false_rejects": int((gen_all < shipped).sum())},
        "tar_at_far": far_rows,
        "top10_impostor_scores": top_imp,
        "eer": {"eer": round(e, 4), "threshold": round(t_eer, 4), "far": round(far_eer, 4), "frr": round(frr_eer, 4)},
        "roc_auc": round(auc(gen_all, imp_all), 5),
        "similarity": {"genuine_mean": round(float(gen_f.mean()), 4), "genuine_std": round(float(gen_f.std()), 4),
                       "impostor_mean": round(float(imp_f.mean()), 4), "impostor_std": round(float(imp_f.std()), 4),
                       "genuine_min": round(float(gen_f.min()), 4), "impostor_max": round(float(imp_f.max()), 4),
                       "note": "over pairs where both faces were found"},
        "recommended_thresholds": {
            "far_1e-3": rec_far, "equal_error": round(t_eer, 4),
            "note": ("door access: prefer the FAR ~ 1e-3 threshold (fewer false accepts, more "
                     "retries); it rests on the top few of the impostor scores here, see "
                     "tar_at_far['0.001'].threshold_95ci, and celeba-id is a development set"),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    ff = report["faces_not_found"]
    print(f"faces not found: {ff['images_without_face']} images (+{ff['images_unreadable']} unreadable) "
          f"of {len(images)}; pairs affected: {ff['genuine_pairs_affected']} genuine (false rejects), "
          f"{ff['impostor_pairs_affected']} impostor (correct rejects)")
    tf = report["ten_fold"]
    print(f"10-fold accuracy: {tf['accuracy_mean']:.4f} +- {tf['accuracy_std']:.4f} (std; SE {tf['accuracy_se']:.4f}), "
          f"mean chosen threshold {tf['threshold_mean']:.3f}")
    st = report["shipped_threshold"]
    print(f"at shipped threshold {shipped}: accuracy {st['accuracy']:.4f}, TAR {st['tar']:.4f}, "
          f"FAR {st['far']:.5f} ({st['false_accepts']} false accepts, {st['false_rejects']} false rejects)")
    for k, r in far_rows.items():
        print(f"TAR @ FAR {k}: {r['tar']:.4f} (95% CI {r['tar_95ci']}) at threshold {r['threshold']:.4f} "
              f"(CI {r['threshold_95ci']}), observed FAR {r['far_observed']}; support: {r['support']}")
    print(f"EER {e:.4f} at threshold {t_eer:.4f}; ROC AUC {report['roc_auc']}")
    s = report["similarity"]
    print(f"similarity: genuine {s['genuine_mean']:.4f} +- {s['genuine_std']:.4f}, "
          f"impostor {s['impostor_mean']:.4f} +- {s['impostor_std']:.4f}")
    print(f"recommended 1:1 thresholds: FAR~1e-3 -> {rec_far:.4f}; equal-error -> {t_eer:.4f}")
    print(f"analyze: {run}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
