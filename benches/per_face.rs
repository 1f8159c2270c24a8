//! Per-face cost of the multi-task model against the two teacher models it replaces, side by
//! side in one run (issue #3's compute claim, measured with tract as the binary runs it).
//!
//! `cargo bench --bench per_face` (about a minute on 2 cores). One face: obama.jpg, detected
//! once; each benchmark starts from the frame and the landmarks, so alignment is included:
//! * `teachers`: MobileFaceNet on its 112-px crop (`Embedder::embed`) plus HSE FaceRes on its
//!   224-px crop (`AttributeModel::predict`), the per-face work of `--face-model teachers`;
//! * `mtl`: the multi-task model, one run on the 112-px crop (`Embedder::run_crop`): embedding,
//!   age, gender and faceness;
//! * `mtl_int8`: the same network with int8 pointwise convolutions. On x86 tract's int8
//!   kernels are far slower than its f32 ones (docs/MODEL-SOURCES); int8 is for the ARM boards
//!   and is compared there by instruction counts (benches/README.md).
//! * `teacher_embedder`: MobileFaceNet alone, for the embedding-only path (identify, kiosk).
//! * `liveness`: the two MiniFASNet models on their crops of the frame around the face box
//!   (`Liveness::score`, crops included), what `--liveness` and the kiosk add per face (#19).
//!
//! With `PER_FACE_EXTRA_ONNX=FILE` (an ONNX with mtl.onnx's input and outputs, e.g. the single-
//! task heads deployed together, `train/mtl/export_single.py`), group `per_face_onnx_route`
//! also times, on the same aligned crop tensor, `models/mtl.onnx` and FILE, each loaded by
//! tract-onnx at run time and optimised the same way (x86 only: tract-onnx is an x86
//! dev-dependency). The NNEF and ONNX routes run at the same speed (benches/README.md §3).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use facegate::analyze::{AttributeModel, Embedder};
use facegate::detect::Detector;
use facegate::frame::decode_image;

const OBAMA: &[u8] = include_bytes!("../assets/samples/obama.jpg");

fn per_face(c: &mut Criterion) {
    // As the binary does first thing: freed tensors' memory stays in the process.
    facegate::model::keep_freed_memory();
    let frame = decode_image(OBAMA).expect("decode obama.jpg");
    let detector = Detector::new("centerface", None).expect("detector");
    let landmarks = detector.detect(&frame).expect("detect")[0].landmarks;
    let teacher = Embedder::new("mobilefacenet").expect("mobilefacenet");
    let faceres = AttributeModel::new("faceres").expect("faceres");
    let mtl = Embedder::new("mtl").expect("mtl");
    let int8 = Embedder::new("mtl-int8").expect("mtl-int8");
    let bbox = detector.detect(&frame).expect("detect")[0].bbox;
    let liveness = facegate::liveness::Liveness::new().expect("liveness models");
    let run = |m: &Embedder| m.run_crop(&m.crop(&frame, &landmarks).unwrap()).unwrap();

    let mut g = c.benchmark_group("per_face");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    g.bench_function("teachers", |b| {
        b.iter(|| {
            let e = teacher.embed(black_box(&frame), &landmarks).unwrap();
            let a = faceres.predict(black_box(&frame), &landmarks).unwrap();
            (e, a)
        })
    });
    g.bench_function("mtl", |b| b.iter(|| run(black_box(&mtl))));
    g.bench_function("teacher_embedder", |b| b.iter(|| teacher.embed(black_box(&frame), &landmarks).unwrap()));
    g.bench_function("liveness", |b| b.iter(|| liveness.score(black_box(&frame), &bbox).unwrap()));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("mtl_int8", |b| b.iter(|| run(black_box(&int8))));
    g.finish();

    #[cfg(target_arch = "x86_64")]
    if let Ok(extra) = std::env::var("PER_FACE_EXTRA_ONNX") {
        use tract_onnx::prelude::*;
        let plan = |path: &std::path::Path| {
            tract_onnx::onnx()
                .with_ignore_value_info(true)
                .model_for_path(path)
                .and_then(|m| m.with_input_fact(0, f32::fact([1, 112, 112, 3]).into()))
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable())
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
        };
        let input = mtl.model.input_from_rgb(&mtl.crop(&frame, &landmarks).unwrap()).unwrap();
        let shipped = plan(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mtl.onnx"));
        let other = plan(std::path::Path::new(&extra));
        let mut g = c.benchmark_group("per_face_onnx_route");
        g.sample_size(30).measurement_time(Duration::from_secs(8));
        g.bench_function("mtl", |b| b.iter(|| shipped.run(tvec![input.clone().into_tvalue()]).unwrap()));
        g.bench_function("extra", |b| b.iter(|| other.run(tvec![input.clone().into_tvalue()]).unwrap()));
        g.finish();
    }
}

criterion_group!(benches, per_face);
criterion_main!(benches);
