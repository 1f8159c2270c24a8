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

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use facegate::analyze::{AttributeModel, Embedder};
use facegate::detect::Detector;
use facegate::frame::decode_image;

const OBAMA: &[u8] = include_bytes!("../assets/samples/obama.jpg");

fn per_face(c: &mut Criterion) {
    let frame = decode_image(OBAMA).expect("decode obama.jpg");
    let detector = Detector::new("centerface", None).expect("detector");
    let landmarks = detector.detect(&frame).expect("detect")[0].landmarks;
    let teacher = Embedder::new("mobilefacenet").expect("mobilefacenet");
    let faceres = AttributeModel::new("faceres").expect("faceres");
    let mtl = Embedder::new("mtl").expect("mtl");
    let int8 = Embedder::new("mtl-int8").expect("mtl-int8");
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
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("mtl_int8", |b| b.iter(|| run(black_box(&int8))));
    g.finish();
}

criterion_group!(benches, per_face);
criterion_main!(benches);
