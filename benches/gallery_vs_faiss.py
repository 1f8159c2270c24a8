#!/usr/bin/env python3
"""Gallery search per query on one core: facegate (f32 and int8 gallery files, memory-mapped)
against numpy brute force and faiss-cpu IndexFlatIP on the same vectors, in one run.

Vectors: N random unit vectors (192-d, float32, seeded), galleries are the first 10k, 100k and
1M of them. Queries: noisy views of enrolled members (cosine about 0.7 to their template), the
case identification must get right; they are drawn from the first 10k so that every size holds
their true identity. Every engine answers top-10 for one query at a time.

All timings are pinned to one core (taskset), with every library limited to one thread
(OMP/OpenBLAS/MKL variables, faiss.omp_set_num_threads(1)). facegate runs first
(`cargo bench --bench gallery_search`), then numpy and faiss in this process; each engine warms
up on two queries and is then timed per query; p50 and p90 are reported.

Checks: top-1 of facegate int8 equals exact f32 (numpy) on every query; top-1 of facegate f32
equals numpy.

Usage (from the repository root; a venv with numpy and faiss-cpu, see benches/requirements-gallery.txt):
  /work/venv-g/bin/python benches/gallery_vs_faiss.py [--sizes 10000,100000,1000000] [--queries 200] [--core 1]
Writes benches/results/gallery_search.json and prints a table.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_vectors(n, dim, nq, seed):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    members = rng.integers(0, min(n, 10_000), nq)
    noise = rng.standard_normal((nq, dim), dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    queries = base[members] + 1.0 * noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return base, queries.astype(np.float32), members


def time_engine(search, queries):
    for q in queries[:2]:
        search(q)
    times, top1 = [], []
    for q in queries:
        t = time.perf_counter()
        ids = search(q)
        times.append((time.perf_counter() - t) * 1e3)
        top1.append(int(ids[0]))
    return float(np.median(times)), float(np.percentile(times, 90)), top1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--core", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "benches/results/gallery_search.json"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    os.sched_setaffinity(0, {args.core})
    import faiss

    faiss.omp_set_num_threads(1)
    base, queries, members = make_vectors(max(sizes), args.dim, args.queries, args.seed)
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        vec_path, q_path, rust_json = (os.path.join(tmp, n) for n in ("base.f32", "queries.f32", "rust.json"))
        base.tofile(vec_path)
        queries.tofile(q_path)
        cmd = ["taskset", "-c", str(args.core), "cargo", "bench", "--quiet", "--bench", "gallery_search", "--",
               "--vectors", vec_path, "--queries", q_path, "--dim", str(args.dim),
               "--sizes", args.sizes, "--out", rust_json]
        env = dict(os.environ, FACEGATE_BENCH_DIR=tmp)
        subprocess.run(cmd, cwd=ROOT, check=True, env=env)
        with open(rust_json) as f:
            rust = json.load(f)
    rows.extend(rust)
    for n in sizes:
        sub = np.ascontiguousarray(base[:n])

        def numpy_search(q, sub=sub):
            s = sub @ q
            top = np.argpartition(-s, 10)[:10]
            return top[np.argsort(-s[top])]

        p50, p90, top1 = time_engine(numpy_search, queries)
        rows.append({"engine": "numpy-f32", "n": n, "p50_ms": p50, "p90_ms": p90, "top1": top1})
        index = faiss.IndexFlatIP(args.dim)
        index.add(sub)
        p50, p90, top1 = time_engine(lambda q: index.search(q[None, :], 10)[1][0], queries)
        rows.append({"engine": "faiss-flat-f32", "n": n, "p50_ms": p50, "p90_ms": p90, "top1": top1})
        del index, sub
        print(f"numpy/faiss n={n} done", file=sys.stderr)

    def row(engine, n):
        return next(r for r in rows if r["engine"] == engine and r["n"] == n)

    print(f"one core, {args.queries} queries, dim {args.dim}, top-10; p50 per query in ms (p90)")
    print("| identities | facegate int8 | facegate f32 | numpy f32 | faiss flat f32 | int8 / faiss | int8 top-1 = exact |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for n in sizes:
        i8, f32, npy, fa = (row(e, n) for e in ("facegate-int8", "facegate-f32", "numpy-f32", "faiss-flat-f32"))
        same = int(sum(a == b for a, b in zip(i8["top1"], npy["top1"])))
        same_f32 = int(sum(a == b for a, b in zip(f32["top1"], npy["top1"])))
        true = int(sum(a == m for a, m in zip(npy["top1"], members)))
        print(f"| {n:,} | {i8['p50_ms']:.2f} ({i8['p90_ms']:.2f}) | {f32['p50_ms']:.2f} ({f32['p90_ms']:.2f}) | "
              f"{npy['p50_ms']:.2f} ({npy['p90_ms']:.2f}) | {fa['p50_ms']:.2f} ({fa['p90_ms']:.2f}) | "
              f"{i8['p50_ms'] / fa['p50_ms']:.2f} | {same}/{len(members)} |")
        summary.append({"n": n, "int8_over_faiss": i8["p50_ms"] / fa["p50_ms"], "int8_top1_equal_exact": same,
                        "f32_top1_equal_exact": same_f32, "exact_top1_is_true_member": true,
                        "queries": len(members)})
    k = [r for r in rows if r["engine"].startswith("kernel")]
    if len(k) == 2:
        print(f"int8 kernel alone over {k[0]['n']:,} rows: std::arch {k[0]['p50_ms']:.2f} ms, portable {k[1]['p50_ms']:.2f} ms")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"method": __doc__.strip().splitlines()[0], "core": args.core, "queries": args.queries,
                   "dim": args.dim, "summary": summary,
                   "rows": [{k: v for k, v in r.items() if k != "top1"} for r in rows]}, f, indent=1)


if __name__ == "__main__":
    main()
