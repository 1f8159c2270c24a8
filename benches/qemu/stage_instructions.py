#!/usr/bin/env python3
"""Instructions per kiosk stage on each board architecture (issue #7).

    python3 benches/qemu/stage_instructions.py [--out benches/results/stage_instructions.json]

Runs the `stage_instructions` bench binary (benches/stage_instructions.rs), built beforehand:
  * x86_64, natively under callgrind (`--dump-before=facegate_stage_mark`): one dump per stage;
  * aarch64 under qemu-aarch64 with -cpu cortex-a72 (Pi 4) and cortex-a76 (Pi 5), and armv7
    under qemu-arm with -cpu cortex-a15 and max, with the insn_marks.so plugin (built here
    from insn_marks.c with gcc) counting guest instructions between the getppid markers.
Binaries are found under $CARGO_TARGET_DIR (default target/) for each triple; a missing one is
skipped with a note. Emulated time means nothing: only instruction counts are reported, and
instructions are not cycles (a NEON FMLA does 4 multiply-adds, an AVX2 FMA 8).
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))

# (label, triple or None for the host, runner kind, qemu cpu, getppid syscall number, tract env)
RUNS = [
    ("x86_64 (native, callgrind)", None, "callgrind", None, None, {}),
    ("aarch64 cortex-a72 (Pi 4)", "aarch64-unknown-linux-gnu", "qemu-aarch64", "cortex-a72", 173, {"TRACT_CPU_AARCH64_KIND": "a72"}),
    ("aarch64 cortex-a76 (Pi 5)", "aarch64-unknown-linux-gnu", "qemu-aarch64", "cortex-a76", 173, {"TRACT_CPU_AARCH64_KIND": "generic", "TRACT_CPU_ISA": "+dotprod,+fp16"}),
    ("armv7 cortex-a15 (32-bit Pi OS)", "armv7-unknown-linux-gnueabihf", "qemu-arm", "cortex-a15", 64, {"TRACT_CPU_ARM32_NEON": "true"}),
]
SYSROOT = {"aarch64-unknown-linux-gnu": "/usr/aarch64-linux-gnu", "armv7-unknown-linux-gnueabihf": "/usr/arm-linux-gnueabihf"}


def newest_binary(triple):
    base = os.path.join(TARGET_DIR, triple, "release", "deps") if triple else os.path.join(TARGET_DIR, "release", "deps")
    bins = [p for p in glob.glob(os.path.join(base, "stage_instructions-*")) if not p.endswith(".d")]
    return max(bins, key=os.path.getmtime) if bins else None


def per_stage(marks, stages):
    """Counts at markers (two per stage) -> instructions per call of each stage."""
    out = {}
    for i, s in enumerate(stages):
        start, end = marks[2 * i], marks[2 * i + 1]
        out[s["stage"]] = (end - start) / s["reps"]
    return out


def run_callgrind(binary, workdir):
    prefix = os.path.join(workdir, "cg.out")
    cmd = ["valgrind", "--tool=callgrind", f"--dump-before=facegate_stage_mark", f"--callgrind-out-file={prefix}", binary]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    stages = json.loads(p.stdout.strip().splitlines()[-1])["stages"]
    # Dumps cg.out.1, .2, ...: dump k holds the instructions since dump k-1; dump 1 ends at marker 0.
    dumps = sorted(glob.glob(prefix + ".*"), key=lambda f: int(f.rsplit(".", 1)[1]))
    totals = []
    for f in dumps:
        with open(f) as fh:
            m = re.search(r"^(?:summary|totals): (\d+)", fh.read(), re.M)
            totals.append(int(m.group(1)))
    marks, acc = [], 0
    for t in totals:
        acc += t
        marks.append(acc)
    return per_stage(marks, stages), stages


def run_qemu(binary, qemu, cpu, syscall, env_extra, sysroot, plugin):
    env = dict(os.environ, **env_extra)
    cmd = [qemu, "-cpu", cpu, "-L", sysroot, "-plugin", f"{plugin},marker={syscall}", binary]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    stages = json.loads(p.stdout.strip().splitlines()[-1])["stages"]
    marks = [int(m) for m in re.findall(r"^insn-mark \d+ (\d+)$", p.stderr, re.M)]
    return per_stage(marks, stages), stages


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "benches/results/stage_instructions.json"))
    ap.add_argument("--only", help="run only labels containing this text")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="stage-insns-")
    plugin = os.path.join(work, "insn_marks.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", plugin, os.path.join(ROOT, "benches/qemu/insn_marks.c")], check=True)
    results = []
    for label, triple, kind, cpu, syscall, env_extra in RUNS:
        if args.only and args.only not in label:
            continue
        binary = newest_binary(triple)
        if binary is None:
            print(f"skipped {label}: no stage_instructions binary for {triple or 'the host'} "
                  f"(cargo bench --no-run --bench stage_instructions{' --target ' + triple if triple else ''})", file=sys.stderr)
            continue
        print(f"running {label} ...", file=sys.stderr)
        if kind == "callgrind":
            counts, _ = run_callgrind(binary, work)
        else:
            counts, _ = run_qemu(binary, kind, cpu, syscall, env_extra, SYSROOT[triple], plugin)
        results.append({"run": label, "binary": os.path.relpath(binary, ROOT), "instructions_per_call": counts})
        print(json.dumps(results[-1], indent=1), file=sys.stderr)
    with open(args.out, "w") as fh:
        json.dump({"what": "guest instructions per call of each kiosk stage", "runs": results}, fh, indent=1)
    stages = list(results[0]["instructions_per_call"]) if results else []
    print("| stage | " + " | ".join(r["run"] for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for s in stages:
        cells = [f"{r['instructions_per_call'].get(s, float('nan')) / 1e6:,.1f} M" for r in results]
        print(f"| {s} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
