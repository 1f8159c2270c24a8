//! The whole pipeline on the bundled photos against the Python reference
//! (`train/ref_pipeline.py`, onnxruntime): boxes, landmarks and embeddings per face.

mod common;

use common::*;
use facegate::detect::DetectorConfig;
use facegate::frame::read_image;
use facegate::{Pipeline, PipelineConfig, Want};

/// The default pipeline, built once for the tests that use it: building it (plans optimised for
/// each model) is most of these tests' time under qemu, where CI runs them for the ARM boards.
fn default_pipeline() -> &'static Pipeline {
    static PIPELINE: std::sync::OnceLock<Pipeline> = std::sync::OnceLock::new();
    PIPELINE.get_or_init(|| Pipeline::new(&PipelineConfig::default()).unwrap())
}

/// Photos the detector input does not shrink beyond 2× go through the same arithmetic as the
/// reference: landmarks agree to float rounding (pixels per 100 px of face width).
const SAME_PATH_TOL_PER_100PX: f32 = 0.05;
const SAME_PATH_MIN_COSINE: f32 = 0.9999;
/// Larger photos: we average k×k blocks before bilinear sampling (the reference aliases), so
/// landmarks move by up to about 1 % of the face width.
const REDUCED_TOL_PER_100PX: f32 = 2.5;
const REDUCED_MIN_COSINE: f32 = 0.97;
/// A build with int8-stored weights (`FACEGATE_WEIGHTS=i8`, the board packages) rounds every
/// weight: on astronaut.png landmarks moved 0.6 px per 100 px and the embedding's cosine to
/// the reference was 0.9968 (f16 weights stay within the same-path tolerances above).
const I8_WEIGHTS_TOL_PER_100PX: f32 = 1.0;
const I8_WEIGHTS_MIN_COSINE: f32 = 0.99;

#[test]
fn bundled_photos_match_the_reference_pipeline() {
    // The reference ran CenterFace at one fixed 640×480 input.
    let manifest = facegate::model::embedded_manifest("centerface").unwrap();
    let mut detector = DetectorConfig::from_manifest(&manifest);
    detector.sizes = vec![[480, 640]];
    let config = PipelineConfig { detector_config: Some(detector), ..PipelineConfig::default() };
    let pipeline = Pipeline::new(&config).unwrap();
    let reference = read_toml(&root().join("models/golden/pipeline.toml"));
    let want = Want { embedding: true, attributes: true, liveness: false };
    for image in reference["images"].as_array().unwrap() {
        let file = image["file"].as_str().unwrap();
        let img = read_image(&sample(file)).unwrap();
        let faces = pipeline.analyze(&img, want).unwrap();
        let expected = image.get("faces").and_then(|f| f.as_array()).cloned().unwrap_or_default();
        assert_eq!(faces.len(), expected.len(), "{file}: face count");
        for (face, exp) in faces.iter().zip(&expected) {
            let f = |v: &toml::Value| v.as_float().unwrap() as f32;
            let bbox: Vec<f32> = exp["bbox"].as_array().unwrap().iter().map(f).collect();
            let width = bbox[2] - bbox[0];
            let shrink = (img.width() as f32 / 640.0).max(img.height() as f32 / 480.0);
            let (per_100, min_cos) = if shrink > 2.0 {
                (REDUCED_TOL_PER_100PX, REDUCED_MIN_COSINE)
            } else if facegate::model::WEIGHTS == "i8" {
                (I8_WEIGHTS_TOL_PER_100PX, I8_WEIGHTS_MIN_COSINE)
            } else {
                (SAME_PATH_TOL_PER_100PX, SAME_PATH_MIN_COSINE)
            };
            let tol = per_100 * width / 100.0;
            let mut worst = 0f32;
            for (p, q) in face.detection.landmarks.iter().zip(exp["landmarks"].as_array().unwrap()) {
                let q = q.as_array().unwrap();
                worst = worst.max((p.x - f(&q[0])).abs()).max((p.y - f(&q[1])).abs());
            }
            let b = face.detection.bbox;
            let box_diff = max_abs_diff(&[b.x0, b.y0, b.x1, b.y1], &bbox);
            let emb: Vec<f32> = exp["embedding"].as_array().unwrap().iter().map(f).collect();
            let cos = cosine(face.analysis.embedding.as_ref().unwrap(), &emb);
            eprintln!(
                "{file}: landmarks off by {worst:.2} px (tol {tol:.2}), box by {box_diff:.2} px, embedding cosine {cos:.4}"
            );
            assert!(worst <= tol, "{file}: landmarks differ by {worst} px");
            assert!(box_diff <= 2.0 * tol.max(0.05), "{file}: box differs by {box_diff} px");
            assert!(cos >= min_cos, "{file}: embedding cosine {cos}");
            assert!((face.detection.score - f(&exp["score"])).abs() < 0.02);
        }
    }
}

#[test]
fn same_person_matches_and_strangers_do_not() {
    let pipeline = default_pipeline();
    let threshold = pipeline.embedder.model.manifest.match_threshold.unwrap();
    let want = Want { embedding: true, attributes: false, liveness: false };
    let emb = |name: &str| {
        let img = read_image(&sample(name)).unwrap();
        let faces = pipeline.analyze(&img, want).unwrap();
        assert_eq!(faces.len(), 1, "{name}");
        faces[0].analysis.embedding.clone().unwrap()
    };
    let (o1, o2, o3, b) = (emb("obama.jpg"), emb("obama2.jpg"), emb("obama3.jpg"), emb("biden.jpg"));
    for (x, y) in [(&o1, &o2), (&o1, &o3), (&o2, &o3)] {
        assert!(cosine(x, y) >= threshold + 0.1, "same person: {}", cosine(x, y));
    }
    for o in [&o1, &o2, &o3] {
        assert!(cosine(o, &b) < threshold, "different people: {}", cosine(o, &b));
    }
}

#[test]
fn a_cat_is_not_a_face() {
    let pipeline = default_pipeline();
    let img = read_image(&sample("chelsea.png")).unwrap();
    assert!(pipeline.analyze(&img, Want::default()).unwrap().is_empty());
}

/// Development check on real in-the-wild photos (celeba-id): over fixed identities, photos of
/// the same person are far more similar than photos of different people.
#[test]
fn celeba_same_identity_is_closer_than_different() {
    let Some(data) = shared_data("celeba_same_identity_is_closer_than_different") else { return };
    let pipeline = default_pipeline();
    let csv = std::fs::read_to_string(data.join("celeba-id/identities.csv")).unwrap();
    let mut by_id: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in csv.lines().skip(1) {
        let mut cols = line.split(',');
        let (Some(file), Some(id)) = (cols.next(), cols.next()) else { continue };
        by_id.entry(id.to_string()).or_default().push(file.to_string());
    }
    let want = Want { embedding: true, attributes: false, liveness: false };
    let mut people = Vec::new();
    for files in by_id.values().filter(|f| f.len() >= 4).take(12) {
        let embs: Vec<Vec<f32>> = files
            .iter()
            .take(4)
            .filter_map(|f| {
                let img = read_image(&data.join("celeba-id/images").join(f)).ok()?;
                pipeline.analyze(&img, want).ok()?.into_iter().next()?.analysis.embedding
            })
            .collect();
        people.push(embs);
    }
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for (i, a) in people.iter().enumerate() {
        for (j, b) in people.iter().enumerate() {
            for (k, x) in a.iter().enumerate() {
                for (l, y) in b.iter().enumerate() {
                    if i == j && k < l {
                        genuine.push(cosine(x, y));
                    } else if i < j && k == 0 && l == 0 {
                        impostor.push(cosine(x, y));
                    }
                }
            }
        }
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (g, im) = (mean(&genuine), mean(&impostor));
    eprintln!("celeba-id: genuine mean {g:.3} over {}, impostor mean {im:.3} over {}", genuine.len(), impostor.len());
    assert!(genuine.len() >= 40 && impostor.len() >= 40);
    assert!(g - im > 0.35, "genuine {g} vs impostor {im}");
}

/// int8 against float on every bundled face: the same detections, aligned crops through both
/// multi-task models. Limits from the validation split (train/mtl/results/export-first.json:
/// embedding cosine mean 0.99+, gender agreement 99 %+), loosened for 5 faces.
#[test]
fn int8_multitask_agrees_with_float() {
    let pipeline = default_pipeline();
    assert!(pipeline.embedder.is_multitask(), "the default per-face model is the multi-task one");
    let int8 = facegate::analyze::Embedder::new("mtl-int8").unwrap();
    let want = Want { embedding: true, attributes: true, liveness: false };
    let mut n = 0;
    for file in ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "astronaut.png"] {
        let img = read_image(&sample(file)).unwrap();
        for face in pipeline.analyze(&img, want).unwrap() {
            let q = int8.run_crop(&int8.crop(&img, &face.detection.landmarks).unwrap()).unwrap();
            let f = &face.analysis;
            let cos = cosine(f.embedding.as_ref().unwrap(), q.embedding.as_ref().unwrap());
            let (age_f, age_q) = (f.age.unwrap(), q.age.unwrap());
            let (male_f, male_q) = (f.male_prob.unwrap(), q.male_prob.unwrap());
            let (face_f, face_q) = (f.faceness.unwrap(), q.faceness.unwrap());
            eprintln!(
                "{file}: cosine {cos:.4}; age {age_f:.1} / {age_q:.1}; male {male_f:.3} / {male_q:.3}; faceness {face_f:.3} / {face_q:.3}"
            );
            assert!(cos >= 0.98, "{file}: int8 embedding cosine {cos}");
            assert!((age_f - age_q).abs() <= 3.0, "{file}: age {age_f} vs {age_q}");
            assert_eq!(male_f >= 0.5, male_q >= 0.5, "{file}: gender");
            assert!(face_f >= 0.5 && face_q >= 0.5, "{file}: a real face is a face");
            n += 1;
        }
    }
    assert_eq!(n, 5, "one face per photo");
}

/// The face head on real pixels that are not a well-aligned face: the cat photo "aligned" with
/// the template placed in its middle, and the bundled faces aligned upside down and shifted by
/// half a crop (the kinds of negatives it was trained on). Real faces pass (see above).
#[test]
fn the_face_head_rejects_non_faces_and_bad_alignments() {
    use facegate::align::{Point, ARCFACE_112};
    let pipeline = default_pipeline();
    let faceness = |img: &image::RgbImage, lm: &[Point; 5]| {
        let e = &pipeline.embedder;
        e.run_crop(&e.crop(img, lm).unwrap()).unwrap().faceness.unwrap()
    };
    let cat = read_image(&sample("chelsea.png")).unwrap();
    let (cx, cy) = (cat.width() as f32 / 2.0 - 56.0, cat.height() as f32 / 2.0 - 56.0);
    let centred = ARCFACE_112.map(|[x, y]| Point::new(cx + x, cy + y));
    let p = faceness(&cat, &centred);
    eprintln!("cat, template in the middle: faceness {p:.3}");
    assert!(p < 0.5, "the cat is not a face: {p}");
    for file in ["obama.jpg", "biden.jpg", "astronaut.png"] {
        let img = read_image(&sample(file)).unwrap();
        let face = &pipeline.analyze(&img, Want::default()).unwrap()[0];
        let lm = face.detection.landmarks;
        // Upside down: the landmarks rotated by 180° about their centre.
        let (mx, my) = (lm.iter().map(|p| p.x).sum::<f32>() / 5.0, lm.iter().map(|p| p.y).sum::<f32>() / 5.0);
        let flipped = lm.map(|p| Point::new(2.0 * mx - p.x, 2.0 * my - p.y));
        // Shifted sideways by half the crop: the eye distance is about a third of it.
        let eye = (lm[1].x - lm[0].x).hypot(lm[1].y - lm[0].y);
        let shifted = lm.map(|p| Point::new(p.x + 1.5 * eye, p.y));
        let (ok, up, side) = (faceness(&img, &lm), faceness(&img, &flipped), faceness(&img, &shifted));
        eprintln!("{file}: faceness aligned {ok:.3}, upside down {up:.3}, shifted {side:.3}");
        assert!(ok >= 0.5 && up < 0.5 && side < 0.5, "{file}: {ok} {up} {side}");
    }
}
