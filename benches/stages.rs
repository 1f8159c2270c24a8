//! Per-stage timings of the hot path, each beside a baseline where one makes sense.
//!
//! `cargo bench --bench stages` (about two minutes on 2 cores). Groups:
//! * `detector_preprocess_1280x720`: resize + letterbox of a 1280×720 frame into the 640×480
//!   NCHW detector input. `facegate` is `detect::letterbox`, the code `Detector::detect` runs;
//!   `naive` is the same bilinear maths written per pixel without the column table,
//!   `image_resize_triangle` is `image::imageops::resize` (Triangle) plus the NCHW copy.
//! * `detector`: the CenterFace run alone at 640×480 (`Model::run`) and the whole
//!   `Detector::detect` (letterbox + run + decode + NMS) on the same frame, the detector
//!   configured with the one size 640×480.
//! * `*/model_run` vs `*/model_run_onnx_route`: each model's run with the plan the binary
//!   makes (embedded NNEF, `model::optimize`) beside the plan tract-onnx makes from
//!   `models/<name>.onnx` at run time with the same pinned input and the same `model::optimize`,
//!   to see whether the NNEF round trip costs run time.
//! * `detector_input_size`: the CenterFace run (embedded NNEF, pinned as the binary pins it) at
//!   640×480, 480×640 (portrait), 512×384, 320×320, 384×288 and 256×256.
//! * `detect_256px_photo`: `Detector::detect` on obama.jpg scaled to 205×256 with the default
//!   per-image size choice (256×256 here) beside the detector fixed at 640×480.
//! * `align`: the similarity warp to 112 (embedder) and 224 at zoom 0.8 (FaceRes).
//! * `embedder` / `attributes`: the model run alone, and the public per-face call
//!   (`Embedder::embed_crop`, `AttributeModel::predict` which includes its alignment).
//! * `gallery_best_10k` / `_100k`: `Gallery::best` on real gallery files (f32 and int8, memory
//!   mapped) of 10 000 and 100 000 identities × 1 template × 192-d, beside a flat
//!   single-accumulator loop with top-2 tracking and an 8-accumulator version of it
//!   (`benches/gallery_vs_faiss.py` compares with numpy and faiss up to 1M).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use facegate::align::{self, Point, Similarity, ARCFACE_112};
use facegate::analyze::{AttributeModel, Embedder};
use facegate::detect::{Detector, DetectorConfig};
use facegate::frame::decode_image;
use facegate::gallery::{Dtype, Gallery, GalleryWriter, ModelKey, Person};
use facegate::model::{embedded_manifest, embedded_typed, Layout, Model};
use image::{Rgb, RgbImage};
use tract_core::prelude::{tvec, IntoTValue, Tensor};

const OBAMA: &[u8] = include_bytes!("../assets/samples/obama.jpg");

/// A 1280×720 frame holding one face: obama.jpg scaled to the frame height, centred on grey.
fn frame_1280x720() -> RgbImage {
    let photo = decode_image(OBAMA).expect("decode obama.jpg");
    let w = (photo.width() as f32 * 720.0 / photo.height() as f32).round() as u32;
    let scaled = image::imageops::resize(&photo, w, 720, image::imageops::FilterType::Triangle);
    let mut frame = RgbImage::from_pixel(1280, 720, Rgb([90, 90, 90]));
    image::imageops::replace(&mut frame, &scaled, ((1280 - w) / 2) as i64, 0);
    frame
}

/// The detector's letterbox, as `Detector::detect` runs it.
fn letterbox(img: &RgbImage, h: usize, w: usize) -> (Vec<f32>, facegate::detect::Letterbox) {
    facegate::detect::letterbox(img, h, w)
}

/// The same bilinear letterbox written the obvious way: source coordinates recomputed per
/// pixel and channel, pixels read through `get_pixel`.
fn letterbox_naive(img: &RgbImage, h: usize, w: usize) -> Vec<f32> {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let scale = (w as f32 / iw as f32).min(h as f32 / ih as f32);
    let ow = ((iw as f32 * scale).round() as usize).clamp(1, w);
    let oh = ((ih as f32 * scale).round() as usize).clamp(1, h);
    let (step_x, step_y) = (iw as f32 / ow as f32, ih as f32 / oh as f32);
    let mut data = vec![0f32; 3 * h * w];
    for y in 0..oh {
        for x in 0..ow {
            for c in 0..3 {
                let sx = ((x as f32 + 0.5) * step_x - 0.5).clamp(0.0, (iw - 1) as f32);
                let sy = ((y as f32 + 0.5) * step_y - 0.5).clamp(0.0, (ih - 1) as f32);
                let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
                let (x1, y1) = ((x0 + 1).min(iw as u32 - 1), (y0 + 1).min(ih as u32 - 1));
                let (ax, ay) = (sx - x0 as f32, sy - y0 as f32);
                let p = |x, y| img.get_pixel(x, y)[c] as f32;
                let top = p(x0, y0) * (1.0 - ax) + p(x1, y0) * ax;
                let bot = p(x0, y1) * (1.0 - ax) + p(x1, y1) * ax;
                data[c * h * w + y * w + x] = (top * (1.0 - ay) + bot * ay).round();
            }
        }
    }
    data
}

/// `image`'s Triangle resize (antialiased, separable) and the NCHW copy.
fn letterbox_image_crate(img: &RgbImage, h: usize, w: usize) -> Vec<f32> {
    let scale = (w as f32 / img.width() as f32).min(h as f32 / img.height() as f32);
    let ow = ((img.width() as f32 * scale).round() as u32).clamp(1, w as u32);
    let oh = ((img.height() as f32 * scale).round() as u32).clamp(1, h as u32);
    let small = image::imageops::resize(img, ow, oh, image::imageops::FilterType::Triangle);
    let mut data = vec![0f32; 3 * h * w];
    for (x, y, p) in small.enumerate_pixels() {
        for c in 0..3 {
            data[c * h * w + y as usize * w + x as usize] = p[c] as f32;
        }
    }
    data
}

fn to_crop(landmarks: &[Point; 5], size: usize, zoom: f32) -> Similarity {
    let dst = align::scaled_template(&ARCFACE_112, size, zoom);
    align::similarity_transform(landmarks, &dst).expect("landmarks")
}

const DIM: usize = 192;

fn unit_vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    (0..n)
        .map(|_| {
            let mut v: Vec<f32> = (0..DIM).map(|_| next()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

/// Best and second-best over a flat `n × DIM` matrix, one running sum per dot product.
fn naive_best(flat: &[f32], probe: &[f32]) -> (usize, f32, f32) {
    let (mut best, mut b1, mut b2) = (usize::MAX, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (i, row) in flat.chunks_exact(DIM).enumerate() {
        let mut acc = 0.0f32;
        for k in 0..DIM {
            acc += row[k] * probe[k];
        }
        if acc > b1 {
            (b2, b1, best) = (b1, acc, i);
        } else if acc > b2 {
            b2 = acc;
        }
    }
    (best, b1, b2)
}

/// The same with 8 independent accumulators, which the compiler vectorises.
fn lanes8_best(flat: &[f32], probe: &[f32]) -> (usize, f32, f32) {
    let (mut best, mut b1, mut b2) = (usize::MAX, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (i, row) in flat.chunks_exact(DIM).enumerate() {
        let mut acc = [0.0f32; 8];
        for (r, p) in row.chunks_exact(8).zip(probe.chunks_exact(8)) {
            for l in 0..8 {
                acc[l] += r[l] * p[l];
            }
        }
        let d = acc.iter().sum::<f32>();
        if d > b1 {
            (b2, b1, best) = (b1, d, i);
        } else if d > b2 {
            b2 = d;
        }
    }
    (best, b1, b2)
}

/// The detector as the binary loads it, pinned to `[height, width]`.
fn detector_model(hw: [usize; 2]) -> Model {
    let (manifest, typed) = embedded_typed("centerface").unwrap();
    Model::from_typed(manifest, typed, Some(hw)).unwrap()
}

/// The runnable plan tract-onnx makes from `models/<name>.onnx` with the manifest's input shape.
fn onnx_plan(name: &str) -> std::sync::Arc<tract_onnx::prelude::TypedRunnableModel> {
    use tract_onnx::prelude::*;
    let m = embedded_manifest(name).unwrap();
    let [h, w] = m.input_size;
    let shape = match m.layout {
        Layout::NCHW => [1, 3, h, w],
        Layout::NHWC => [1, h, w, 3],
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(&m.file);
    let load = || -> TractResult<_> {
        let typed = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_path(path)?
            .with_input_fact(0, f32::fact(shape).into())?
            .into_typed()?;
        facegate::model::optimize(typed)?.into_runnable()
    };
    load().expect("tract-onnx plan")
}

fn stages(c: &mut Criterion) {
    let frame = frame_1280x720();
    let [dh, dw] = [480usize, 640usize];
    let manifest = embedded_manifest("centerface").unwrap();
    let fixed = DetectorConfig { sizes: vec![[dh, dw]], ..DetectorConfig::from_manifest(&manifest) };
    let detector = Detector::new("centerface", Some(fixed)).expect("detector");
    let faces = detector.detect(&frame).expect("detect");
    let lm = faces.first().expect("a face in the bench frame").landmarks;
    let det_model = detector_model([dh, dw]);
    let embedder = Embedder::new("mobilefacenet").expect("embedder");
    let attributes = AttributeModel::new("faceres").expect("faceres");

    // Sanity: the naive letterbox computes the same thing as the copied one (no k×k reduction
    // at 1280×720 → 640×480).
    assert_eq!(letterbox(&frame, dh, dw).0, letterbox_naive(&frame, dh, dw));
    let mut g = c.benchmark_group("detector_preprocess_1280x720");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    g.bench_function("facegate", |b| b.iter(|| letterbox(black_box(&frame), dh, dw)));
    g.bench_function("naive", |b| b.iter(|| letterbox_naive(black_box(&frame), dh, dw)));
    g.bench_function("image_resize_triangle", |b| {
        b.iter(|| letterbox_image_crate(black_box(&frame), dh, dw))
    });
    g.finish();

    let det_input = Tensor::from_shape(&det_model.input_shape, &letterbox(&frame, dh, dw).0).unwrap();
    let mut g = c.benchmark_group("detector");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.bench_function("model_run", |b| {
        b.iter_batched(|| det_input.clone(), |t| det_model.run(t).unwrap(), BatchSize::PerIteration)
    });
    let plan = onnx_plan("centerface");
    g.bench_function("model_run_onnx_route", |b| {
        b.iter_batched(
            || tvec![det_input.clone().into_tvalue()],
            |t| plan.run(t).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("detect_1280x720", |b| b.iter(|| detector.detect(black_box(&frame)).unwrap()));
    g.finish();

    let mut g = c.benchmark_group("detector_input_size");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for [h, w] in [[480usize, 640usize], [640, 480], [384, 512], [320, 320], [288, 384], [256, 256]] {
        let model = detector_model([h, w]);
        let x = Tensor::from_shape(&[1, 3, h, w], &vec![100f32; 3 * h * w]).unwrap();
        g.bench_function(format!("{w}x{h}"), |b| {
            b.iter_batched(|| x.clone(), |t| model.run(t).unwrap(), BatchSize::PerIteration)
        });
    }
    g.finish();

    let photo = decode_image(OBAMA).unwrap();
    let small = image::imageops::resize(&photo, 205, 256, image::imageops::FilterType::Triangle);
    let auto = Detector::new("centerface", None).expect("detector");
    assert!(!auto.detect(&small).unwrap().is_empty() && !detector.detect(&small).unwrap().is_empty());
    let mut g = c.benchmark_group("detect_256px_photo");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    g.bench_function("fixed_640x480", |b| b.iter(|| detector.detect(black_box(&small)).unwrap()));
    g.bench_function("per_image_size", |b| b.iter(|| auto.detect(black_box(&small)).unwrap()));
    g.finish();

    let mut g = c.benchmark_group("align");
    g.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for (size, zoom) in [(112usize, 1.0f32), (224, 0.8)] {
        let t = to_crop(&lm, size, zoom);
        g.bench_function(format!("warp_{size}"), |b| {
            b.iter(|| align::warp(black_box(&frame), &t, size as u32, size as u32))
        });
    }
    g.bench_function("align_112_with_transform", |b| {
        b.iter(|| align::align(black_box(&frame), &lm, &ARCFACE_112, 112, 1.0))
    });
    g.finish();

    let crop112 = embedder.crop(&frame, &lm).unwrap();
    let emb_input = embedder.model.input_from_rgb(&crop112).unwrap();
    let crop224 = align::align(&frame, &lm, &ARCFACE_112, 224, 0.8).unwrap();
    let att_input = attributes.model.input_from_rgb(&crop224).unwrap();

    let mut g = c.benchmark_group("embedder");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    g.bench_function("model_run", |b| {
        b.iter_batched(|| emb_input.clone(), |t| embedder.model.run(t).unwrap(), BatchSize::PerIteration)
    });
    let plan = onnx_plan("mobilefacenet");
    g.bench_function("model_run_onnx_route", |b| {
        b.iter_batched(
            || tvec![emb_input.clone().into_tvalue()],
            |t| plan.run(t).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("embed_crop", |b| b.iter(|| embedder.embed_crop(black_box(&crop112)).unwrap()));
    g.finish();

    let mut g = c.benchmark_group("attributes");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    g.bench_function("model_run", |b| {
        b.iter_batched(|| att_input.clone(), |t| attributes.model.run(t).unwrap(), BatchSize::PerIteration)
    });
    let plan = onnx_plan("faceres");
    g.bench_function("model_run_onnx_route", |b| {
        b.iter_batched(
            || tvec![att_input.clone().into_tvalue()],
            |t| plan.run(t).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("predict_with_align", |b| {
        b.iter(|| attributes.predict(black_box(&frame), &lm).unwrap())
    });
    g.finish();

    for identities in [10_000usize, 100_000] {
        let vectors = unit_vectors(identities, 7);
        let dir = tempfile::tempdir().unwrap();
        let key = ModelKey { dim: DIM, fingerprint: [0; 32] };
        let people: Vec<Person> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| Person { name: format!("id{i:06}"), templates: vec![v.clone()] })
            .collect();
        let open = |dtype: Dtype| {
            let path = dir.path().join(format!("{dtype:?}.fgg"));
            GalleryWriter::create(&path, key, dtype).unwrap().enrol(&people).unwrap();
            Gallery::open(&path, key).unwrap()
        };
        let (gallery, gallery_i8) = (open(Dtype::F32), open(Dtype::I8));
        let flat: Vec<f32> = vectors.concat();
        // Near identity 4321, so the best match is known.
        let mut probe: Vec<f32> =
            vectors[4321].iter().zip(&unit_vectors(1, 99)[0]).map(|(a, b)| a + 0.3 * b).collect();
        let n = probe.iter().map(|x| x * x).sum::<f32>().sqrt();
        probe.iter_mut().for_each(|x| *x /= n);
        assert_eq!(gallery.best(&probe).unwrap().unwrap().identity, "id004321");
        assert_eq!(gallery_i8.best(&probe).unwrap().unwrap().identity, "id004321");
        assert_eq!(naive_best(&flat, &probe).0, 4321);
        assert_eq!(lanes8_best(&flat, &probe).0, 4321);

        let mut g = c.benchmark_group(format!("gallery_best_{}k", identities / 1000));
        g.sample_size(if identities > 10_000 { 10 } else { 30 })
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        g.bench_function("Gallery::best", |b| b.iter(|| gallery.best(black_box(&probe)).unwrap()));
        g.bench_function("Gallery::best_int8", |b| b.iter(|| gallery_i8.best(black_box(&probe)).unwrap()));
        g.bench_function("flat_naive_1acc", |b| b.iter(|| naive_best(black_box(&flat), black_box(&probe))));
        g.bench_function("flat_8acc", |b| b.iter(|| lanes8_best(black_box(&flat), black_box(&probe))));
        g.finish();
    }
}

criterion_group!(benches, stages);
criterion_main!(benches);
