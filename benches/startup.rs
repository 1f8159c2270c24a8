//! Model start-up, the two routes side by side for each model:
//!
//! * `nnef_embedded`: what the binary does: `model::embedded_typed(name)` parses the NNEF tar
//!   embedded at build time, `Model::from_typed` pins the detector's symbolic size (640×480
//!   here, the largest plan `Detector::new` builds at start), checks the manifest,
//!   `model::optimize`, makes the plan and runs one warm-up (the NNEF framework itself is made
//!   once per thread and cached, so it is timed on its own as `framework/nnef`). The detector's
//!   NNEF is stored before declutter (its symbolic size cannot be serialised decluttered), so
//!   its declutter happens here too.
//! * `onnx_runtime_load`: loading `models/<name>.onnx` at run time with tract-onnx 0.23.9 (the
//!   dev-dependency), pinning the same input shape as build.rs, `model::optimize`,
//!   `into_runnable` and one warm-up run (the ONNX framework is made once, timed as
//!   `framework/onnx`).
//!
//! * `nnef_no_warmup` / `onnx_no_warmup`: the same two routes stopped before the warm-up run
//!   (NNEF: `model_for_read` of the embedded tar from `OUT_DIR` + pin + `model::optimize` + plan;
//!   ONNX: load + pin + `model::optimize` + plan), so parsing and optimising can be told apart
//!   from the first run, which dominates for the detector.
//!
//! `cargo bench --bench startup` (about two minutes on 2 cores).

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use facegate::model::{embedded_manifest, embedded_typed, Layout, Model, Task};
use tract_onnx::prelude::*;

const MODELS: [&str; 3] = ["centerface", "mobilefacenet", "faceres"];
/// The detector size timed, `[height, width]`: the manifest's, 640×480.
const DETECTOR_HW: [usize; 2] = [480, 640];

/// What the binary does for one model (for the detector: one size).
fn load_embedded(name: &str) -> Model {
    let (manifest, typed) = embedded_typed(name).unwrap();
    let hw = (manifest.task == Task::Detector).then_some(DETECTOR_HW);
    Model::from_typed(manifest, typed, hw).unwrap()
}

/// The input shape timed, from the manifest (detector NCHW [1,3,480,640], the others NHWC
/// [1,h,w,3]).
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

fn nnef_no_warmup(
    nnef: &tract_nnef::framework::Nnef,
    bytes: &[u8],
) -> TractResult<std::sync::Arc<TypedRunnableModel>> {
    let typed = nnef.model_for_read(&mut &bytes[..])?;
    // As `Model::from_typed`; networks without the size symbols come back unchanged.
    facegate::model::optimize(facegate::model::pin_input_size(typed, DETECTOR_HW)?)?.into_runnable()
}

fn onnx_no_warmup(
    onnx: &tract_onnx::Onnx,
    path: &PathBuf,
    shape: &[usize],
) -> TractResult<std::sync::Arc<TypedRunnableModel>> {
    facegate::model::optimize(onnx.model_for_path(path)?.with_input_fact(0, f32::fact(shape).into())?.into_typed()?)?
        .into_runnable()
}

/// Run-time ONNX route: load, pin the input, optimise, plan, one warm-up run.
fn load_onnx(
    onnx: &tract_onnx::Onnx,
    path: &PathBuf,
    shape: &[usize],
) -> TractResult<std::sync::Arc<TypedRunnableModel>> {
    let typed = onnx.model_for_path(path)?.with_input_fact(0, f32::fact(shape).into())?.into_typed()?;
    let plan = facegate::model::optimize(typed)?.into_runnable()?;
    let input = Tensor::from_shape(shape, &vec![0.5f32; shape.iter().product()])?;
    plan.run(tvec![input.into_tvalue()])?;
    Ok(plan)
}

fn startup(c: &mut Criterion) {
    // Build-time embedded models: make sure they load (and the thread-local NNEF framework
    // exists) before timing.
    for name in MODELS {
        load_embedded(name);
    }
    let onnx = tract_onnx::onnx().with_ignore_value_info(true);
    let nnef = tract_nnef::nnef();
    let shapes: Vec<(PathBuf, Vec<usize>)> = MODELS.iter().map(|n| (onnx_path(n), input_shape(n))).collect();

    let mut g = c.benchmark_group("framework");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    g.bench_function("nnef", |b| b.iter(tract_nnef::nnef));
    g.bench_function("onnx", |b| b.iter(|| tract_onnx::onnx().with_ignore_value_info(true)));
    g.finish();

    for (name, (path, shape)) in MODELS.iter().zip(&shapes) {
        let mut g = c.benchmark_group(format!("startup/{name}"));
        g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
        g.bench_function("nnef_embedded", |b| b.iter(|| load_embedded(name)));
        g.bench_function("onnx_runtime_load", |b| b.iter(|| load_onnx(&onnx, path, shape).unwrap()));
        let bytes = facegate::model::embedded_nnef(name).unwrap();
        g.bench_function("nnef_no_warmup", |b| b.iter(|| nnef_no_warmup(&nnef, bytes).unwrap()));
        g.bench_function("onnx_no_warmup", |b| b.iter(|| onnx_no_warmup(&onnx, path, shape).unwrap()));
        g.finish();
    }

    let mut g = c.benchmark_group("startup/all_three");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(5));
    g.bench_function("nnef_embedded", |b| b.iter(|| MODELS.map(load_embedded)));
    g.bench_function("onnx_runtime_load", |b| {
        b.iter(|| shapes.iter().map(|(p, s)| load_onnx(&onnx, p, s).unwrap()).collect::<Vec<_>>())
    });
    g.finish();
}

criterion_group!(benches, startup);
criterion_main!(benches);
