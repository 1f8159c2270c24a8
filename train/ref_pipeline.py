"""Reference detection + alignment pipeline (numpy + onnxruntime).

This is the reference the Rust code is checked against: CenterFace preprocessing, the
CenterFace decode (a vectorised copy of deface 1.5.0's `CenterFace.decode`), NMS, mapping
back to image pixels, and the 5-point similarity alignment to the ArcFace template.

Conventions, spelled out because the Rust side must match them:
  * Images are RGB uint8 arrays [H, W, 3].
  * Detector input: resize keeping the aspect ratio with s = min(W/w, H/h),
    new size nw = floor(w*s + 0.5), nh = floor(h*s + 0.5) (clamped to [1, W] / [1, H]),
    bilinear with half-pixel centres and no antialiasing (as cv2.INTER_LINEAR, which deface
    uses), rounded to uint8, zero-padded bottom/right to [H, W], NCHW, float 0-255.
  * Decode: cells with heatmap > threshold (strict); box size exp(scale)*4; top-left
    x1 = max(0, (col + off_x + 0.5)*4 - w/2), clamped to the *network input* size, as deface
    does; landmarks = lm * box size + (clamped) top-left. Channel 0 of scale/offset is y,
    channel 1 is x; landmark channels are (y0, x0, y1, x1, ...).
  * NMS: descending score (ties: raster order), suppress when IoU >= nms_iou.
  * Back to image pixels: x / sx, y / sy with sx = nw/w, sy = nh/h; boxes are then clipped
    to [0, w] x [0, h] (landmarks are not clipped).
  * Alignment: landmark (x, y) coordinates treat pixel (i, j) as centred on (i, j) (the
    cv2.warpAffine convention). Umeyama similarity (no reflection) from the landmarks to
    the template; each output pixel samples the image at the inverse-mapped position with
    bilinear interpolation, neighbours outside the image count as 0. Output float32 0-255.

Landmark order: image-left eye, image-right eye, nose, image-left mouth corner,
image-right mouth corner.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)

DEFAULT_SIZE = (640, 480)  # detector input (W, H)
SCORE_THRESHOLD = 0.5
NMS_IOU = 0.3
STRIDE = 4
EMBEDDER_MEAN = 127.5
EMBEDDER_STD = 128.0


# ----------------------------------------------------------------------------- detector

def resize_bilinear(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres, no antialiasing; float64 result."""
    h, w = img.shape[:2]

    def axis(n_out: int, n_in: int):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = axis(out_h, h)
    x0, x1, fx = axis(out_w, w)
    im = img.astype(np.float64)
    rows = im[y0] * (1 - fy)[:, None, None] + im[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def preprocess(img: np.ndarray, size=DEFAULT_SIZE):
    """RGB uint8 [h,w,3] -> (uint8 blob [1,3,H,W], sx, sy). Feed blob.astype(float32)."""
    net_w, net_h = size
    if net_w % 32 or net_h % 32:
        raise ValueError(f"detector size {size} must be multiples of 32")
    h, w = img.shape[:2]
    s = min(net_w / w, net_h / h)
    nw = min(max(int(np.floor(w * s + 0.5)), 1), net_w)
    nh = min(max(int(np.floor(h * s + 0.5)), 1), net_h)
    resized = np.clip(np.floor(resize_bilinear(img, nw, nh) + 0.5), 0, 255).astype(np.uint8)
    blob = np.zeros((1, 3, net_h, net_w), dtype=np.uint8)
    blob[0, :, :nh, :nw] = resized.transpose(2, 0, 1)
    return blob, nw / w, nh / h


def decode(heatmap, scale, offset, landmark, size_hw, threshold=SCORE_THRESHOLD):
    """deface's CenterFace.decode, vectorised. Returns boxes [n,5] (x1,y1,x2,y2,score) and
    landmarks [n,10] (x0,y0,...) in network-input pixels, before NMS, in raster order."""
    hm = heatmap[0, 0]
    c0, c1 = np.nonzero(hm > threshold)
    if len(c0) == 0:
        return np.zeros((0, 5), np.float32), np.zeros((0, 10), np.float32)
    s0 = np.exp(scale[0, 0, c0, c1]) * 4
    s1 = np.exp(scale[0, 1, c0, c1]) * 4
    o0 = offset[0, 0, c0, c1]
    o1 = offset[0, 1, c0, c1]
    s = hm[c0, c1]
    x1 = np.maximum(0, (c1 + o1 + 0.5) * 4 - s1 / 2)
    y1 = np.maximum(0, (c0 + o0 + 0.5) * 4 - s0 / 2)
    x1 = np.minimum(x1, size_hw[1])
    y1 = np.minimum(y1, size_hw[0])
    boxes = np.stack([x1, y1, np.minimum(x1 + s1, size_hw[1]), np.minimum(y1 + s0, size_hw[0]), s], 1)
    lms = np.empty((len(c0), 10), dtype=np.float64)
    for j in range(5):
        lms[:, 2 * j] = landmark[0, 2 * j + 1, c0, c1] * s1 + x1
        lms[:, 2 * j + 1] = landmark[0, 2 * j, c0, c1] * s0 + y1
    return boxes.astype(np.float32), lms.astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Greedy NMS as deface's; returns kept indices in descending-score order."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, k].astype(np.float64) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for n, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[n + 1:]
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            ovr = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[ovr >= iou]] = True
    return np.array(keep, dtype=np.int64)


def default_detector_path() -> Path:
    exported = ROOT / "models" / "centerface.onnx"
    if exported.exists():
        return exported
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fetch_sources import CENTERFACE_ONNX, extract
    return extract(*CENTERFACE_ONNX)


def free_detector_dims(model):
    """The shipped CenterFace declares a fixed [10,3,32,32] input: let N, H, W vary."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for k, name in ((0, "N"), (2, "H"), (3, "W")):
        dims[k].dim_param = name
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        for k, name in ((0, "N"), (2, "h"), (3, "w")):
            dims[k].dim_param = name
    return model


@lru_cache(maxsize=4)
def _session(path: str):
    import onnx
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    model = free_detector_dims(onnx.load(path)).SerializeToString()
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def run_detector(blob_u8: np.ndarray, model_path=None):
    """Raw outputs (heatmap, scale, offset, landmarks) for a uint8 [1,3,H,W] blob.
    Works on the shipped file and on the exported one (same output order)."""
    sess = _session(str(model_path or default_detector_path()))
    return sess.run(None, {sess.get_inputs()[0].name: blob_u8.astype(np.float32)})


# Candidate detector sizes (W, H), as facegate's detect::DEFAULT_SIZES.
AUTO_SIZES = [(256, 256), (320, 320), (640, 480), (512, 512)]


def pick_size(w: int, h: int, sizes=AUTO_SIZES):
    """facegate's DetectorConfig::size_for: the smallest size holding the image at scale 1
    (same orientation on a tie), else the one that shrinks it least (smaller area on a tie)."""
    landscape = w >= h
    fits = [s for s in sizes if s[0] >= w and s[1] >= h]
    if fits:
        return min(fits, key=lambda s: (s[0] * s[1], (s[0] >= s[1]) != landscape))
    return max(sizes, key=lambda s: (min(s[0] / w, s[1] / h), -s[0] * s[1]))


def detect_auto(img_rgb_uint8: np.ndarray, **kw):
    """detect() at the input size facegate would pick for this image."""
    h, w = img_rgb_uint8.shape[:2]
    return detect(img_rgb_uint8, size=pick_size(w, h), **kw)


def detect(img_rgb_uint8: np.ndarray, size=DEFAULT_SIZE, score_threshold=SCORE_THRESHOLD,
           nms_iou=NMS_IOU, model_path=None):
    """-> list of (bbox float32[4] x1,y1,x2,y2, score, landmarks float32[5,2]) in image
    pixels, highest score first."""
    img = np.asarray(img_rgb_uint8)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError("expected an RGB uint8 image [h, w, 3]")
    blob, sx, sy = preprocess(img, size)
    heatmap, scale, offset, lms = run_detector(blob, model_path)
    boxes, lm = decode(heatmap, scale, offset, lms, (size[1], size[0]), score_threshold)
    h, w = img.shape[:2]
    out = []
    for i in nms(boxes[:, :4], boxes[:, 4], nms_iou):
        b = boxes[i, :4].astype(np.float64) / [sx, sy, sx, sy]
        b = np.clip(b, 0, [w, h, w, h]).astype(np.float32)
        pts = (lm[i].reshape(5, 2).astype(np.float64) / [sx, sy]).astype(np.float32)
        out.append((b, float(boxes[i, 4]), pts))
    return out


# ---------------------------------------------------------------------------- alignment

def template(out_size: int = 112, zoom: float = 1.0) -> np.ndarray:
    return (ARCFACE_TEMPLATE - 56.0) * zoom * (out_size / 112.0) + out_size / 2.0


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection)
    mapping src -> dst. Returns the 2x3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, sv, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1
    r = u @ np.diag(d) @ vt
    scale = (sv * d).sum() / (sc ** 2).sum(1).mean()
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def warp_affine(img: np.ndarray, m: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """out[y, x] = img sampled at m^-1 (x, y); bilinear, zero outside. float32 result."""
    a = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    sx = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
    sy = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    h, w = img.shape[:2]
    im = img.astype(np.float64)

    def tap(yy, xx):
        ok = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        v = im[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
        return v * ok[..., None]

    out = ((1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1))
           + fy * ((1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)))
    return out.astype(np.float32)


def align(image: np.ndarray, landmarks5, out_size: int = 112, zoom: float = 1.0) -> np.ndarray:
    """Aligned face crop, float32 RGB 0-255 [out_size, out_size, 3]."""
    m = umeyama(np.asarray(landmarks5, np.float64).reshape(5, 2), template(out_size, zoom))
    return warp_affine(image, m, out_size, out_size)


def embedder_input(crop: np.ndarray) -> np.ndarray:
    """Aligned 112x112 crop -> MobileFaceNet input [1,112,112,3] float32, (x-127.5)/128."""
    return ((np.asarray(crop, np.float32) - EMBEDDER_MEAN) / EMBEDDER_STD)[None]


def load_rgb(path) -> np.ndarray:
    from PIL import Image, ImageOps
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
