"""Planarity cue for flat presentation attacks, measured on spoof-dev's two clips.

A flat photo or screen moved before the camera moves its 5 landmarks like a plane: one
homography (8 DOF) maps the landmarks of frame t onto those of frame t+d almost exactly. A real
head turning is 3-D (the nose tip sits off the eye/mouth plane), so it should not. For every
frame pair (t, t+d), d in {1, 3, 5, 10}, we fit a 2-D similarity (4 DOF), an affine (6 DOF) and a
homography (8 DOF, normalised DLT) from the landmarks at t to those at t+d and take the RMS
transfer residual over the 5 points divided by the inter-ocular distance (IOD). 10 equations, so
the residual has 6 / 4 / 2 degrees of freedom; with 5 points it is essentially the nose's parallax
against the eye/mouth-corner plane.

Landmarks: ref_pipeline.detect_auto, largest face per frame; frames are linked into tracks by box
IoU >= 0.3 and only pairs inside one track of >= 8 frames count (this drops the few attack-clip
frames where the largest face is the real person behind the phone). Score = homography residual,
positive class = live pair. Only pairs where the face moved are scored: mean landmark
displacement > 2 % of IOD. Reported for all poses and for near-frontal pairs only (IOD /
eye-to-mouth distance >= 0.7 in both frames; the live clip has long profile stretches where the
5 landmarks degrade). Noise floor: residuals of d = 1 pairs that did *not* move
(displacement <= 2 % IOD), and sigma = sqrt(SSR / dof) / IOD.

Run: /work/venv-t/bin/python train/liveness/planarity.py [--data ../shared/data] [--plot PNG]
Prints SKIPPED and exits 0 when the data folder is absent. Data is read in place, never copied.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

CLIPS = [("live.mjpeg", "live"), ("replay-attack.mjpeg", "replay")]
GAPS = (1, 3, 5, 10)
MOVE_MIN = 0.02      # mean landmark displacement / IOD for a pair to count as "moved"
WINDOW = 8           # sliding window over start frames for the per-track aggregate
WINDOW_MIN_PAIRS = 4  # a window needs this many moved pairs to get a score
LINK_IOU = 0.3       # consecutive boxes overlapping this much are the same track
MIN_TRACK = 8        # shorter tracks are dropped
FRONTAL_MIN = 0.7    # IOD / eye-to-mouth distance for "near-frontal"


# ------------------------------------------------------------------------------- data

def data_dir(arg: str | None) -> Path | None:
    """--data if given, else $FACEGATE_DATA, else ../shared/data from the repository root;
    None when that folder has no spoof-dev/."""
    p = arg or os.environ.get("FACEGATE_DATA") or ROOT.parent / "shared" / "data"
    return Path(p) if (Path(p) / "spoof-dev").is_dir() else None


def mjpeg_frames(path: Path) -> list[bytes]:
    """Split a concatenated MJPEG stream at the JPEG SOI markers (FF D8 FF)."""
    data = path.read_bytes()
    starts = []
    i = data.find(b"\xff\xd8\xff")
    while i >= 0:
        starts.append(i)
        i = data.find(b"\xff\xd8\xff", i + 3)
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)])]


def decode_rgb(jpeg: bytes) -> np.ndarray:
    from PIL import Image
    with Image.open(io.BytesIO(jpeg)) as im:
        return np.asarray(im.convert("RGB"))


def clip_faces(path: Path, cache: Path | None):
    """-> (boxes [n, 4], landmarks [n, 5, 2]) of the largest face per frame, NaN where none."""
    key = f"{path.name}-{path.stat().st_size}"
    if cache is not None and cache.exists():
        z = np.load(cache)
        if key + "-lm" in z.files:
            return z[key + "-box"], z[key + "-lm"]
    import ref_pipeline as RP
    frames = mjpeg_frames(path)
    box = np.full((len(frames), 4), np.nan)
    lm = np.full((len(frames), 5, 2), np.nan)
    for k, jpg in enumerate(frames):
        faces = RP.detect_auto(decode_rgb(jpg))
        if faces:
            b, _, pts = max(faces, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))
            box[k], lm[k] = b, pts
    if cache is not None:
        old = dict(np.load(cache)) if cache.exists() else {}
        old[key + "-box"], old[key + "-lm"] = box, lm
        np.savez(cache, **old)
    return box, lm


# ------------------------------------------------------------------------------ models

def _normaliser(p):
    c = p.mean(0)
    s = np.sqrt(2) / max(np.sqrt(((p - c) ** 2).sum(1)).mean(), 1e-12)
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]])


def fit_homography(src, dst):
    """Least-squares DLT on Hartley-normalised coordinates (10 equations, 8 unknowns)."""
    ts, td = _normaliser(src), _normaliser(dst)
    a = (ts @ np.c_[src, np.ones(len(src))].T).T
    b = (td @ np.c_[dst, np.ones(len(dst))].T).T
    rows = []
    for (x, y, _), (u, v, _) in zip(a, b):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    h = np.linalg.svd(np.asarray(rows))[2][-1].reshape(3, 3)
    return np.linalg.inv(td) @ h @ ts


def apply_h(h, p):
    q = (h @ np.c_[p, np.ones(len(p))].T).T
    return q[:, :2] / q[:, 2:3]


def fit_similarity(src, dst):
    """Umeyama least squares, no reflection -> 2x3."""
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    u, sig, vt = np.linalg.svd(d0.T @ s0 / len(src))
    e = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    r = u @ e @ vt
    scale = (sig * np.diag(e)).sum() / (s0 ** 2).sum(1).mean()
    return np.c_[scale * r, md - scale * r @ ms]


def fit_affine(src, dst):
    x = np.c_[src, np.ones(len(src))]
    return np.linalg.lstsq(x, dst, rcond=None)[0].T


def residuals(src, dst):
    """-> dict of sum-of-squares residuals (pixels^2) for sim / aff / hom."""
    out = {}
    for name, m in (("sim", fit_similarity(src, dst)), ("aff", fit_affine(src, dst))):
        out[name] = float(((src @ m[:, :2].T + m[:, 2] - dst) ** 2).sum())
    out["hom"] = float(((apply_h(fit_homography(src, dst), src) - dst) ** 2).sum())
    return out


DOF = {"sim": 6, "aff": 4, "hom": 2}


def iod(lm):
    return float(np.linalg.norm(lm[1] - lm[0]))


# ----------------------------------------------------------------------------- stats

def auc(pos, neg) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie) (Mann-Whitney)."""
    pos, neg = np.asarray(pos), np.asarray(neg)
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.r_[pos, neg]
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    for v in np.unique(allv):          # average ranks on ties
        m = allv == v
        ranks[m] = ranks[m].mean()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def tracks(box: np.ndarray) -> np.ndarray:
    """Track id per frame (-1: no face or a track shorter than MIN_TRACK): consecutive
    detections are linked when their boxes overlap (IoU >= LINK_IOU)."""
    tid = np.full(len(box), -1)
    cur = -1
    for k in range(len(box)):
        if np.isnan(box[k]).any():
            continue
        if k == 0 or tid[k - 1] < 0 or box_iou(box[k - 1], box[k]) < LINK_IOU:
            cur += 1
        tid[k] = cur
    for t in np.unique(tid[tid >= 0]):
        if (tid == t).sum() < MIN_TRACK:
            tid[tid == t] = -1
    return tid


def frontal(lm: np.ndarray) -> np.ndarray:
    """Near-frontal proxy: IOD / (eye-centre to mouth-centre distance) >= FRONTAL_MIN
    (about 1.0 frontal, about 0.2 in profile)."""
    em = np.linalg.norm((lm[:, 3] + lm[:, 4]) / 2 - (lm[:, 0] + lm[:, 1]) / 2, axis=1)
    with np.errstate(invalid="ignore"):
        return np.linalg.norm(lm[:, 1] - lm[:, 0], axis=1) / em >= FRONTAL_MIN


def pairs(lms: np.ndarray, tid: np.ndarray, d: int):
    """Rows (t, track, disp/IOD, sim, aff, hom, both frontal) for pairs (t, t+d) within one
    track; residuals are RMS over the 5 points / mean IOD of the two frames."""
    fr = frontal(lms)
    rows = []
    for t in range(len(lms) - d):
        if tid[t] < 0 or tid[t] != tid[t + d]:
            continue
        a, b = lms[t], lms[t + d]
        io = 0.5 * (iod(a) + iod(b))
        r = residuals(a, b)
        disp = np.linalg.norm(b - a, axis=1).mean() / io
        rows.append([t, tid[t], disp] + [np.sqrt(r[k] / 5) / io for k in ("sim", "aff", "hom")]
                    + [float(fr[t] and fr[t + d])])
    return np.asarray(rows).reshape(-1, 7)


T, TRK, DISP, SIM, AFF, HOM, FRONT = range(7)


def windows(rows: np.ndarray) -> np.ndarray:
    """Per track: median homography residual of the scored pairs whose start frame lies in
    [s, s + WINDOW), for every s (overlapping windows)."""
    out = []
    for trk in np.unique(rows[:, TRK]) if len(rows) else []:
        r = rows[rows[:, TRK] == trk]
        for s in range(int(r[:, T].min()), int(r[:, T].max()) - WINDOW + 2):
            m = (r[:, T] >= s) & (r[:, T] < s + WINDOW)
            if m.sum() >= WINDOW_MIN_PAIRS:
                out.append(np.median(r[m, HOM]))
    return np.asarray(out)


def pct(v, q):
    return float(np.percentile(v, q)) if len(v) else float("nan")


# ------------------------------------------------------------------------------- plot

def plot(path: Path, dists: dict):
    """Histograms (log10 of the normalised homography residual), one panel per (condition, gap)
    in `dists` (keys other than "floor"); PIL only."""
    from PIL import Image, ImageDraw
    pw, ph, pad = 420, 220, 30
    img = Image.new("RGB", (2 * pw + 3 * pad, 2 * ph + 3 * pad + 20), "white")
    dr = ImageDraw.Draw(img)
    dr.text((pad, 5), "log10(homography RMS residual / IOD), moved pairs; "
            "green = live, red = replay, grey line = d=1 noise floor (median)", fill="black")
    lo, hi, nb = -4.0, -0.5, 35
    edges = np.linspace(lo, hi, nb + 1)
    for k, d in enumerate([key for key in dists if key != "floor"]):
        x0 = pad + (k % 2) * (pw + pad)
        y0 = 20 + pad + (k // 2) * (ph + pad)
        dr.rectangle([x0, y0, x0 + pw, y0 + ph], outline="black")
        dr.text((x0 + 5, y0 + 3), f"{d[0]}, d = {d[1]}", fill="black")
        hs = {}
        for name in ("live", "replay"):
            v = np.log10(np.clip(dists[d][name], 10 ** lo, 10 ** hi))
            hs[name] = np.histogram(v, edges)[0] / max(len(v), 1)
        top = max(max(h.max() for h in hs.values()), 1e-9)
        bw = pw / nb
        for name, col, off in (("live", (40, 160, 40), 0.0), ("replay", (200, 40, 40), 0.5)):
            for i, f in enumerate(hs[name]):
                bx = x0 + i * bw + off * bw
                dr.rectangle([bx, y0 + ph - f / top * (ph - 20), bx + bw / 2 - 1, y0 + ph], fill=col)
        nf = dists["floor"]
        if nf > 0:
            x = x0 + (np.log10(nf) - lo) / (hi - lo) * pw
            dr.line([x, y0, x, y0 + ph], fill=(120, 120, 120), width=2)
        for e in range(int(np.ceil(lo)), int(np.floor(hi)) + 1):
            x = x0 + (e - lo) / (hi - lo) * pw
            dr.text((x - 6, y0 + ph + 2), f"{e}", fill="black")
    img.save(path)


# ------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data")
    ap.add_argument("--plot", default="/tmp/planarity.png")
    ap.add_argument("--cache", default="/tmp/planarity_landmarks.npz",
                    help="landmark cache (outside the repo); '' to disable")
    args = ap.parse_args(argv)
    data = data_dir(args.data)
    if data is None:
        print("SKIPPED: no spoof-dev data folder (--data, $FACEGATE_DATA or ../shared/data)")
        return 0
    cache = Path(args.cache) if args.cache else None

    allrows = {}
    for fname, name in CLIPS:
        box, lms = clip_faces(data / "spoof-dev" / fname, cache)
        tid = tracks(box)
        det = ~np.isnan(box[:, 0])
        ious = np.array([iod(l) for l in lms[tid >= 0]])
        lens = [int((tid == t).sum()) for t in np.unique(tid[tid >= 0])]
        print(f"{name:6s}: {len(box)} frames, face in {det.sum()}, kept tracks (>= {MIN_TRACK} frames) "
              f"{lens}, near-frontal {int((frontal(lms) & (tid >= 0)).sum())}, IOD median "
              f"{np.median(ious):.1f} px")
        allrows[name] = {d: pairs(lms, tid, d) for d in GAPS}

    print("\nNoise floor: d=1 pairs with displacement <= 2% IOD; RMS/IOD,"
          " sigma = sqrt(SSR/dof)/IOD per coordinate")
    floor = {}
    for name in allrows:
        r = allrows[name][1]
        still = r[r[:, DISP] <= MOVE_MIN]
        sig = {k: np.median(still[:, c] * np.sqrt(5 / DOF[k])) for k, c in (("sim", SIM), ("aff", AFF), ("hom", HOM))}
        floor[name] = (pct(still[:, HOM], 50), pct(still[:, HOM], 90))
        print(f"  {name:6s}: {len(still):3d} still pairs, hom RMS median {floor[name][0]:.4f} p90 "
              f"{floor[name][1]:.4f}; sigma sim/aff/hom {sig['sim']:.4f}/{sig['aff']:.4f}/{sig['hom']:.4f}")
    nf = max(v[0] for v in floor.values())

    dists = {"floor": nf}
    for cond in ("all poses", "near-frontal"):
        print(f"\n== {cond}: moved pairs (mean landmark displacement > {MOVE_MIN:.0%} IOD), residual = RMS/IOD; "
              f"hom/sim: median ratio (pure noise ~ sqrt(2/6) = 0.58)")
        print(f"{'d':>3} {'clip':6} {'moved':>5} {'disp':>6} {'sim':>7} {'aff':>7} {'hom p10':>7} "
              f"{'hom med':>7} {'hom p90':>7} {'hom/sim':>7} {'>floor':>6}")
        aucs = []
        for d in GAPS:
            mv = {}
            for name in allrows:
                r = allrows[name][d]
                m = r[(r[:, DISP] > MOVE_MIN) & ((r[:, FRONT] > 0) if cond == "near-frontal" else True)]
                mv[name] = m
                ratio = np.median(m[:, HOM] / np.maximum(m[:, SIM], 1e-12)) if len(m) else float("nan")
                above = float((m[:, HOM] > 3 * nf).mean()) if len(m) else float("nan")
                print(f"{d:3d} {name:6s} {len(m):5d} {pct(m[:, DISP], 50):6.3f} {pct(m[:, SIM], 50):7.4f} "
                      f"{pct(m[:, AFF], 50):7.4f} {pct(m[:, HOM], 10):7.4f} {pct(m[:, HOM], 50):7.4f} "
                      f"{pct(m[:, HOM], 90):7.4f} {ratio:7.3f} {above:6.0%}")
                if d in (1, 10):
                    dists.setdefault((cond, d), {})[name] = m[:, HOM]
            L, R = mv["live"], mv["replay"]
            wl, wr = windows(L), windows(R)
            aucs.append((d, auc(L[:, HOM], R[:, HOM]), auc(wl, wr), len(wl), len(wr), pct(wl, 10),
                         pct(wr, 90), auc(L[:, SIM], R[:, SIM]),
                         auc(L[:, HOM] / L[:, SIM], R[:, HOM] / R[:, SIM]), auc(L[:, DISP], R[:, DISP])))
        print(f"  AUC live>replay: {'d':>3} {'pair':>6} {'window':>6} {'n win L/R':>9} {'winL p10':>8} "
              f"{'winR p90':>8} | {'sim':>6} {'hom/sim':>7} {'disp':>6}")
        for d, ap_, aw, nl, nr, l10, r90, asim, arat, adisp in aucs:
            print(f"  {'':16}{d:3d} {ap_:6.3f} {aw:6.3f} {nl:4d}/{nr:<4d} {l10:8.4f} {r90:8.4f} | "
                  f"{asim:6.3f} {arat:7.3f} {adisp:6.3f}")
    print(f"\n'>floor': share of pairs with hom residual > 3x the larger still-pair median ({nf:.4f}). "
          f"Windows: {WINDOW} start frames, >= {WINDOW_MIN_PAIRS} moved pairs, overlapping (not independent).")

    try:
        plot(Path(args.plot), dists)
        print(f"plot: {args.plot}")
    except OSError as e:
        print(f"plot not written: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
