"""The MiniFASNet crop rule: a port of `CropImage` in minivision-ai/Silent-Face-Anti-Spoofing
`src/generate_patches.py` (@ c3e2048), and of how its detector hands over the face box.

This is the contract src/liveness.rs implements (checked against models/golden/liveness-crops.json):
  * The face box is the integer [x, y, w, h] = [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)]
    of the detector's float corners (the reference's Detection.get_bbox); int() truncates toward
    zero. Computed here in float64 from the float32 corners, as the Rust side does.
  * new_box: scale = min((src_h - 1) / h, (src_w - 1) / w, scale); a box of w*scale x h*scale about
    the centre (x + w/2, y + h/2); shifted right if left < 0, down if top < 0, then left if
    right > src_w - 1 (right = src_w - 1), up if bottom > src_h - 1; each side int()-truncated.
    Python float (float64) arithmetic throughout.
  * crop = img[top:bottom + 1, left:right + 1] (inclusive), cv2.resize to 80x80 with the default
    INTER_LINEAR; the image is BGR uint8 as cv2.imread gives it.
"""
from __future__ import annotations

import numpy as np

OUT_SIZE = (80, 80)  # (w, h)


def reference_bbox(x0, y0, x1, y1) -> list[int]:
    """Float corners -> the reference detector's integer [x, y, w, h]."""
    x0, y0, x1, y1 = (float(v) for v in (x0, y0, x1, y1))
    return [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)]


def new_box(src_w: int, src_h: int, bbox, scale: float) -> tuple[int, int, int, int]:
    """The reference's CropImage._get_new_box: (left, top, right, bottom), right/bottom inclusive."""
    x, y, box_w, box_h = bbox
    scale = min((src_h - 1) / box_h, min((src_w - 1) / box_w, scale))
    new_w, new_h = box_w * scale, box_h * scale
    cx, cy = box_w / 2 + x, box_h / 2 + y
    left, top = cx - new_w / 2, cy - new_h / 2
    right, bottom = cx + new_w / 2, cy + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > src_w - 1:
        left -= right - src_w + 1
        right = src_w - 1
    if bottom > src_h - 1:
        top -= bottom - src_h + 1
        bottom = src_h - 1
    return int(left), int(top), int(right), int(bottom)


def crop(img_bgr: np.ndarray, bbox, scale: float, out_size=OUT_SIZE) -> np.ndarray:
    """The reference's CropImage.crop(crop=True): uint8 BGR [80, 80, 3] (HWC)."""
    import cv2

    src_h, src_w = img_bgr.shape[:2]
    left, top, right, bottom = new_box(src_w, src_h, bbox, scale)
    return cv2.resize(img_bgr[top:bottom + 1, left:right + 1], out_size)


def to_input(crop_bgr: np.ndarray) -> np.ndarray:
    """HWC BGR uint8 crop -> the models' input [1, 3, 80, 80] float32 0-255 (the reference's
    ToTensor without /255)."""
    return np.ascontiguousarray(crop_bgr.transpose(2, 0, 1)[None]).astype(np.float32)
