"""The ablation table of models/MODEL_CARD.md, from the result files (no numbers typed by hand).

    python3 train/mtl/table.py [--shipped uncertainty] [--fixed first]

Reads train/mtl/results/{<shipped>,<fixed>,single-gender,single-age,single-face}.json
(train.py; PyTorch on the val splits), results/export-<shipped>.json (export.py; the exported
float and int8 ONNX in onnxruntime on the same val rows), benches/results/per_face.json
(criterion medians of benches/per_face.rs) and benches/results/stage_instructions_per_face.json
(benches/qemu/stage_instructions.py). Standard library only.
"""
import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TEACHER_MMAC = 234.1 + 568.0  # train/mtl/macs.py: MobileFaceNet + FaceRes (Conv/MatMul)
# torch_macs (train/mtl/macs.py) of model.py's parts: the attribute branch (stage5..conv7 copy)
# and one head. Single-task heads = the teacher + one branch and one head per attribute task.
BRANCH_MMAC, HEAD_MMAC = 26.14, 3.22


def load(p):
    return json.loads(Path(p).read_text())


def last(name):
    return load(HERE / "results" / f"{name}.json")["epochs"][-1]["val"]


def pct(x):
    return f"{100 * x:.2f} %"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shipped", default="uncertainty")
    ap.add_argument("--fixed", default="first")
    args = ap.parse_args()
    shipped, fixed = last(args.shipped), last(args.fixed)
    g, a, f = last("single-gender"), last("single-age"), last("single-face")
    ex = load(HERE / "results" / f"export-{args.shipped}.json")
    fl, q = ex["float"], ex["int8"]
    rows_pf = load(ROOT / "benches/results/per_face.json")
    medians = {r["bench"]: r["median_ns"] / 1e6 for r in rows_pf if r["group"] == "per_face"}
    # model run only, both loaded by tract-onnx: mtl.onnx and the single-task heads together
    # (train/mtl/export_single.py; PER_FACE_EXTRA_ONNX)
    route = {r["bench"]: r["median_ns"] / 1e6 for r in rows_pf if r["group"] == "per_face_onnx_route"}
    insn = {r["run"]: r["instructions_per_call"] for r in load(ROOT / "benches/results/stage_instructions_per_face.json")["runs"]}
    a72 = next(v for k, v in insn.items() if "a72" in k)
    macs = {k: load(HERE / "results" / f"{k}.json")["macs"] / 1e6 for k in (args.shipped, "single-gender")}
    single_mmac = 234.1 + 3 * (BRANCH_MMAC + HEAD_MMAC)

    def ver(v):
        c = v["celeba_verification"]
        return f"{100 * c['acc_10fold']:.2f} ± {100 * c['std']:.2f}"

    def cos(v):
        c = v["emb_cos_to_teacher"]
        return f"{c['mean']:.5f} / {c['min']:.5f}"

    def gender(v, teacher=False):
        k = "gender_acc_teacher" if teacher else "gender_acc"
        return f"{pct(v['aaf'][k])} / {pct(v['utkface'][k])}"

    def age(v, teacher=False):
        k = "age_mae_teacher" if teacher else "age_mae"
        return f"{v['aaf'][k]:.2f} / {v['utkface'][k]:.2f}"

    def face(v):
        h = v["face_head"]
        return f"{pct(h['faces']['acc'])} / {pct(h['background']['acc'])} / {pct(h['misaligned']['acc'])}"

    t = shipped  # teacher columns are stored beside every run's metrics
    rows = [
        ("verification accuracy, celeba-id pairs (10-fold, %)",
         f"{100 * t['celeba_verification_teacher']['acc_10fold']:.2f} ± {100 * t['celeba_verification_teacher']['std']:.2f}",
         ver(g) + " ¹", ver(fl), ver(q)),
        ("embedding cosine to teacher, 6,773 val faces (mean / min)", "1", cos(g) + " ¹", cos(fl), cos(q)),
        ("gender accuracy, AAF / UTK holdout", gender(t, True), gender(g) + " ²", gender(fl), gender(q)),
        ("age MAE years, AAF / UTK holdout", age(t, True), age(a) + " ²", age(fl), age(q)),
        ("face head: faces / background / badly aligned", "–", face(f) + " ²", face(fl), face(q)),
        ("MMAC per face", f"{TEACHER_MMAC:.1f}", f"{single_mmac:.1f}",
         f"{macs[args.shipped]:.1f} ({100 * macs[args.shipped] / TEACHER_MMAC:.1f} %)",
         f"{macs[args.shipped]:.1f} ({ex['convs_int8']} of {ex['convs']} convs int8)"),
        ("ms per face, tract, x86, one criterion run (median)",
         f"{medians['teachers']:.1f}",
         f"{route['extra']:.1f} ³" if "extra" in route else "not measured",
         f"{medians['mtl']:.1f} ({100 * medians['mtl'] / medians['teachers']:.0f} %)", f"{medians['mtl_int8']:.0f}"),
        ("instructions per face, aarch64 A72 (qemu)",
         f"{(a72['teacher_align_and_embed'] + a72['teacher_age_gender']) / 1e6:.0f} M", "–",
         f"{a72['mtl_align_and_run'] / 1e6:.0f} M", f"{a72['mtl_int8_align_and_run'] / 1e6:.0f} M"),
    ]
    print("| | teachers (separate) | single-task heads | multi-task fp32 | multi-task int8 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    print(f"Fixed weights (run {args.fixed}) against the learned weighting (run {args.shipped}), PyTorch on the val rows:")
    print()
    print("| | fixed λ = 1,1,1,1 | uncertainty weighting |")
    print("|---|---|---|")
    for name, fn in (("gender AAF / UTK", gender), ("age MAE AAF / UTK", age), ("face head", face), ("verification", ver)):
        print(f"| {name} | {fn(fixed)} | {fn(shipped)} |")


if __name__ == "__main__":
    main()
