//! Gallery search time per query at several gallery sizes, f32 and int8, on real gallery files.
//!
//! Driven by `benches/gallery_vs_faiss.py`, which writes the vectors, runs this on one core and
//! times numpy and faiss on the same vectors in the same run:
//!
//! ```text
//! cargo bench --bench gallery_search -- --vectors base.f32 --queries queries.f32 \
//!     --dim 192 --sizes 10000,100000,1000000 --out rust.json
//! ```
//!
//! Without arguments it makes its own random vectors and runs the 10k and 100k sizes.
//! Each size writes an f32 and an int8 gallery with `GalleryWriter` (one commit), opens it with
//! `Gallery` (memory-mapped), runs two warm-up queries, then times every query's `search(q, 10)`.
//! It also times the int8 kernel alone against its portable (auto-vectorised) form.

use std::path::PathBuf;
use std::time::Instant;

use facegate::gallery::{dots_i8, dots_i8_scalar, pseudo_random_unit, Dtype, Gallery, GalleryWriter, ModelKey, Person};

struct Args {
    vectors: Option<PathBuf>,
    queries: Option<PathBuf>,
    dim: usize,
    sizes: Vec<usize>,
    out: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args { vectors: None, queries: None, dim: 192, sizes: vec![10_000, 100_000], out: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--vectors" => a.vectors = it.next().map(PathBuf::from),
            "--queries" => a.queries = it.next().map(PathBuf::from),
            "--dim" => a.dim = it.next().and_then(|v| v.parse().ok()).expect("--dim N"),
            "--sizes" => {
                a.sizes = it.next().expect("--sizes A,B").split(',').map(|s| s.parse().expect("size")).collect()
            }
            "--out" => a.out = it.next().map(PathBuf::from),
            _ => {} // cargo bench adds --bench
        }
    }
    a
}

fn read_f32(path: &PathBuf, dim: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let all: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    all.chunks_exact(dim).map(<[f32]>::to_vec).collect()
}

fn random_unit(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    (0..n as u64).map(|i| pseudo_random_unit(seed << 32 | i, dim)).collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args = parse_args();
    let dim = args.dim;
    let max = *args.sizes.iter().max().unwrap();
    let base = match &args.vectors {
        Some(p) => read_f32(p, dim),
        None => random_unit(max, dim, 7),
    };
    let queries = match &args.queries {
        Some(p) => read_f32(p, dim),
        None => random_unit(200, dim, 11),
    };
    assert!(base.len() >= max, "{} vectors for a gallery of {max}", base.len());
    let key = ModelKey { dim, fingerprint: [1; 32] };
    let dir = tempfile::tempdir_in(std::env::var_os("FACEGATE_BENCH_DIR").unwrap_or_else(|| ".".into())).unwrap();
    let mut rows = Vec::new();
    for &n in &args.sizes {
        for dtype in [Dtype::F32, Dtype::I8] {
            let path = dir.path().join(format!("g{n}-{dtype:?}.fgg"));
            let people: Vec<Person> =
                base[..n].iter().enumerate().map(|(i, v)| Person { name: format!("id{i}"), templates: vec![v.clone()] }).collect();
            let t = Instant::now();
            GalleryWriter::create(&path, key, dtype).unwrap().enrol(&people).unwrap();
            let write_s = t.elapsed().as_secs_f64();
            drop(people);
            let t = Instant::now();
            let g = Gallery::open(&path, key).unwrap();
            let open_ms = t.elapsed().as_secs_f64() * 1e3;
            for q in queries.iter().take(2) {
                g.search(q, 10).unwrap();
            }
            let mut times = Vec::with_capacity(queries.len());
            let mut top1 = Vec::with_capacity(queries.len());
            for q in &queries {
                let t = Instant::now();
                let hits = g.search(q, 10).unwrap();
                times.push(t.elapsed().as_secs_f64() * 1e3);
                top1.push(hits[0].id);
            }
            let file_mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
            let p50 = median(&mut times);
            let p90 = percentile(&mut times, 0.9);
            eprintln!(
                "facegate {dtype:?} n={n}: p50 {p50:.3} ms, p90 {p90:.3} ms (open {open_ms:.0} ms, write {write_s:.1} s, {file_mb:.0} MB)"
            );
            rows.push(serde_json::json!({
                "engine": format!("facegate-{}", match dtype { Dtype::F32 => "f32", Dtype::I8 => "int8" }),
                "n": n, "p50_ms": p50, "p90_ms": p90, "open_ms": open_ms, "write_s": write_s,
                "file_mb": file_mb, "top1": top1,
            }));
            drop(g);
            std::fs::remove_file(&path).unwrap();
        }
    }
    // The int8 kernel alone over the largest size: std::arch against the portable loop.
    let mut codes = vec![0i8; max * dim];
    for (i, c) in codes.iter_mut().enumerate() {
        *c = ((i.wrapping_mul(2_654_435_761) >> 7) % 255) as i8;
    }
    let q: Vec<i8> = codes[..dim].to_vec();
    let mut out = vec![0i32; 1024];
    let mut kernel = |f: fn(&[i8], &[i8], &mut [i32])| {
        let mut times = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            for block in codes.chunks(1024 * dim) {
                f(&q, block, &mut out[..block.len() / dim]);
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        median(&mut times)
    };
    let fast = kernel(dots_i8);
    let portable = kernel(dots_i8_scalar);
    eprintln!("int8 kernel over {max} rows: dispatched {fast:.2} ms, portable {portable:.2} ms");
    rows.push(serde_json::json!({"engine": "kernel-int8-dispatched", "n": max, "p50_ms": fast}));
    rows.push(serde_json::json!({"engine": "kernel-int8-portable", "n": max, "p50_ms": portable}));
    let json = serde_json::to_string_pretty(&rows).unwrap();
    match &args.out {
        Some(p) => std::fs::write(p, json).unwrap(),
        None => println!("{json}"),
    }
}
