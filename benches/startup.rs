//! Model start-up, the two routes side by side for each model:
//!
//! * `nnef_embedded`: what the binary does, `facegate::model::Model::embedded(name)`: parse the
//!   NNEF tar embedded at build time, check it against the manifest, `into_optimized`, make the
//!   plan and run one warm-up (the NNEF framework itself is made once per thread and cached,
//!   so it is timed on its own as `framework/nnef`).
//! * `onnx_runtime_load`: loading `models/<name>.onnx` at run time with tract-onnx 0.23.9 (the
//!   dev-dependency), pinning the same input shape as build.rs, `into_optimized`,
//!   `into_runnable` and one warm-up run (the ONNX framework is made once, timed as
//!   `framework/onnx`).
//!
//! `cargo bench --bench startup` (about two minutes on 2 cores).

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use facegate::model::{embedded_manifest, Layout, Model};
use tract_onnx::prelude::*;

const MODELS: [&str; 3] = ["centerface", "mobilefacenet", "faceres"];

/// The input shape the build pins, from the manifest (detector NCHW [1,3,480,640], the
/// others NHWC [1,h,w,3]).
fn input_shape(name: &str) -> Vec<usize> {
    let m = embedded_manifest(name).expect("manifest");
    let [h, w] = m.input_size;
    match m.layout {
        Layout::NCHW => vec![1, 3, h, w],
        Layout::NHWC => vec![1, h, w, 3],
    }
}

fn onnx_path(name: &str) -> PathBuf {
    let m = embedded_manifest(name).expect("manifest");
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models").join(m.file)
}

/// Run-time ONNX route: load, pin the input, optimise, plan, one warm-up run.
fn load_onnx(onnx: &tract_onnx::Onnx, path: &PathBuf, shape: &[usize]) -> TractResult<std::sync::Arc<TypedRunnableModel>> {
    let plan = onnx
        .model_for_path(path)?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let input = Tensor::from_shape(shape, &vec![0.5f32; shape.iter().product()])?;
    plan.run(tvec![input.into_tvalue()])?;
    Ok(plan)
}

fn startup(c: &mut Criterion) {
    // Build-time embedded models: make sure they load (and the thread-local NNEF framework
    // exists) before timing.
    for name in MODELS {
        Model::embedded(name).expect("embedded model");
    }
    let onnx = tract_onnx::onnx().with_ignore_value_info(true);
    let shapes: Vec<(PathBuf, Vec<usize>)> = MODELS.iter().map(|n| (onnx_path(n), input_shape(n))).collect();

    let mut g = c.benchmark_group("framework");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    g.bench_function("nnef", |b| b.iter(tract_nnef::nnef));
    g.bench_function("onnx", |b| b.iter(|| tract_onnx::onnx().with_ignore_value_info(true)));
    g.finish();

    for (name, (path, shape)) in MODELS.iter().zip(&shapes) {
        let mut g = c.benchmark_group(format!("startup/{name}"));
        g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
        g.bench_function("nnef_embedded", |b| b.iter(|| Model::embedded(name).unwrap()));
        g.bench_function("onnx_runtime_load", |b| b.iter(|| load_onnx(&onnx, path, shape).unwrap()));
        g.finish();
    }

    let mut g = c.benchmark_group("startup/all_three");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(5));
    g.bench_function("nnef_embedded", |b| {
        b.iter(|| MODELS.map(|n| Model::embedded(n).unwrap()))
    });
    g.bench_function("onnx_runtime_load", |b| {
        b.iter(|| shapes.iter().map(|(p, s)| load_onnx(&onnx, p, s).unwrap()).collect::<Vec<_>>())
    });
    g.finish();
}

criterion_group!(benches, startup);
criterion_main!(benches);
