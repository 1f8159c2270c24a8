"""Minimal TOML writer for manifests and golden files (numpy scalars written exactly)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, np.float32):
        return str(v)  # shortest text that reads back as the same float32
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def write_toml(path: Path, data: dict, header: str = "") -> None:
    """Minimal TOML writer: scalars and arrays first, then tables, then arrays of tables."""
    lines = [f"# {line}" for line in header.splitlines()]

    def emit(d: dict, prefix: str):
        for k, v in d.items():
            if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict)):
                lines.append(f"{k} = {_toml_value(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                lines.extend(["", f"[{prefix}{k}]"])
                emit(v, f"{prefix}{k}.")
        for k, v in d.items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    lines.extend(["", f"[[{prefix}{k}]]"])
                    emit(item, f"{prefix}{k}.")

    emit(data, "")
    path.write_text("\n".join(lines).lstrip("\n") + "\n")
    tomllib.loads(path.read_text())  # must parse back
