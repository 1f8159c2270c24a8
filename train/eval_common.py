"""Shared helpers of the development evaluations (train/eval_verify.py, train/eval_attrs.py).

Runs `facegate analyze --json [--embeddings]` once over a list of images (paths relative to
the data folder, run with the data folder as working directory so that the `image` field of
each output line is the relative path), keeps the raw JSON lines in a git-ignored file under
train/out/eval/ and can reuse them (--reuse) instead of running the binary again.
Standard library only (numpy is used by the callers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fetch_sources import sha256_file

ROOT = Path(__file__).resolve().parent.parent
RAW_DIR = ROOT / "train" / "out" / "eval"


def data_root(arg: str | None, probe: str) -> Path:
    for cand in (arg, os.environ.get("FACEGATE_DATA"), str(ROOT.parent / "shared" / "data")):
        if cand and (Path(cand) / probe).exists():
            return Path(cand).resolve()
    sys.exit(f"{probe} not found under the data folder: pass --data or set FACEGATE_DATA")


def read_toml(path: Path) -> dict:
    import tomllib  # Python >= 3.11
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def run_analyze(binary: str, data: Path, images: list[str], embeddings: bool, raw: Path,
                reuse: bool = False, chunk: int = 4000) -> tuple[dict[str, dict], dict]:
    """Returns ({relative path: output object}, run info). One process per `chunk` images
    (default: a single process for every list used here, so the models load once)."""
    raw.parent.mkdir(parents=True, exist_ok=True)
    info: dict = {}
    if reuse and raw.exists():
        lines = raw.read_text().splitlines()
        meta = json.loads(lines[0])
        info = {**meta.get("run", {}), "reused": str(raw.relative_to(ROOT))}
        out = {d["image"]: d for d in map(json.loads, lines[1:])}
        missing = [p for p in images if p not in out]
        if not missing:
            return out, info
        print(f"{raw}: {len(missing)} images not in the saved output, running the binary",
              file=sys.stderr)
    binary_abs = str(Path(binary).resolve())
    args = [binary_abs, "analyze", "--json"] + (["--embeddings"] if embeddings else [])
    out: dict[str, dict] = {}
    t0 = time.time()
    for s in range(0, len(images), chunk):
        part = images[s:s + chunk]
        proc = subprocess.Popen(args + ["--"] + part, cwd=data, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        n = 0
        for line in proc.stdout:
            d = json.loads(line)
            out[d["image"]] = d
            n += 1
            if n % 250 == 0:
                done = s + n
                el = time.time() - t0
                print(f"  analyze: {done}/{len(images)} images, {el:.0f} s, {done / el:.1f} img/s",
                      file=sys.stderr, flush=True)
        err = proc.stderr.read()
        if proc.wait() != 0 or n != len(part):
            sys.exit(f"facegate exited {proc.returncode} after {n}/{len(part)} images:\n{err[-2000:]}")
    wall = time.time() - t0
    info = {"binary": os.path.relpath(binary_abs, ROOT) if binary_abs.startswith(str(ROOT)) else binary_abs,
            "images": len(images), "processes": (len(images) + chunk - 1) // chunk,
            "wall_s": round(wall, 1), "images_per_s": round(len(images) / wall, 2),
            "cpus": os.cpu_count(), "binary_sha256": sha256_file(binary_abs),
            "version": subprocess.run([binary_abs, "--version"], capture_output=True, text=True).stdout.strip()}
    with open(raw, "w") as fh:
        fh.write(json.dumps({"run": info}) + "\n")
        for p in images:
            fh.write(json.dumps(out[p]) + "\n")
    print(f"  analyze: {len(images)} images in {wall:.0f} s ({len(images) / wall:.1f} img/s); "
          f"raw output {raw}", file=sys.stderr)
    return out, info


def largest_face(d: dict) -> dict | None:
    """The face with the largest box area (facegate already sorts largest first; taken
    explicitly so the evaluation does not depend on it). None: no face / unreadable image."""
    faces = d.get("faces") or []
    if not faces:
        return None
    area = lambda f: max(0.0, f["bbox"][2] - f["bbox"][0]) * max(0.0, f["bbox"][3] - f["bbox"][1])
    return max(faces, key=area)
