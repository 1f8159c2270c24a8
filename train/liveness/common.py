"""Images for the liveness checks: the sample photos, and the spoof-dev photos and clip frames
(research / development data, read in place from the data folder, never copied)."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
import ref_pipeline as RP  # noqa: E402

SAMPLES = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "astronaut.png"]  # chelsea.png: no face
SPOOF_PHOTOS = [("T1.jpg", "live"), ("F1.jpg", "attack"), ("F2.jpg", "attack")]
CLIPS = [("live.mjpeg", "live"), ("replay-attack.mjpeg", "attack")]


def data_dir(arg: str | None) -> Path | None:
    """--data, else $FACEGATE_DATA, else ../shared/data from the repository root; None if absent."""
    for p in (arg, os.environ.get("FACEGATE_DATA"), ROOT.parent / "shared" / "data"):
        if p and (Path(p) / "spoof-dev").is_dir():
            return Path(p)
    return None


def mjpeg_frames(path: Path) -> list[bytes]:
    """Splits a concatenated MJPEG stream into JPEG files at the SOI (FFD8) / EOI (FFD9) markers."""
    data = path.read_bytes()
    frames, start = [], data.find(b"\xff\xd8")
    while start >= 0:
        end = data.find(b"\xff\xd9", start + 2)
        if end < 0:
            break
        frames.append(data[start:end + 2])
        start = data.find(b"\xff\xd8", end + 2)
    return frames


def decode_rgb(jpeg: bytes) -> np.ndarray:
    from PIL import Image
    with Image.open(io.BytesIO(jpeg)) as im:
        return np.asarray(im.convert("RGB"))


def pick(n: int, k: int) -> list[int]:
    """k frame indices spread evenly over n frames (first and last included)."""
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, min(k, n))})


def largest_face(rgb: np.ndarray):
    """The largest CenterFace box of ref_pipeline.detect_auto (float32 x0, y0, x1, y1), or None."""
    faces = RP.detect_auto(rgb)
    if not faces:
        return None
    return max(faces, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))[0]


def images(data: Path | None, frames_per_clip: int):
    """(label, kind, RGB uint8 image, largest face or None): the sample photos, then (with the
    data) spoof-dev's photos and `frames_per_clip` frames of each clip, spread evenly over the
    frames in which CenterFace finds a face (the replay clip's screen leaves the view in places).
    kind is 'sample', 'live' or 'attack'."""
    for name in SAMPLES:
        rgb = RP.load_rgb(ROOT / "assets" / "samples" / name)
        yield name, "sample", rgb, largest_face(rgb)
    if data is None:
        return
    d = data / "spoof-dev"
    for name, kind in SPOOF_PHOTOS:
        rgb = RP.load_rgb(d / "photos" / name)
        yield name, kind, rgb, largest_face(rgb)
    for name, kind in CLIPS:
        found = []
        for i, jpeg in enumerate(mjpeg_frames(d / name)):
            rgb = decode_rgb(jpeg)
            face = largest_face(rgb)
            if face is not None:
                found.append((f"{name}#{i}", kind, rgb, face))
        for k in pick(len(found), frames_per_clip):
            yield found[k]
