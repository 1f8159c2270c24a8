//! Liveness (presentation-attack detection, #19): the crop rule against the reference's
//! numbers, the models against PyTorch on crops of the bundled photos, the CLI flags and exit
//! code, and the kiosk on real webcam footage: a live person granted, the same person replayed
//! on a phone refused as a spoof.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use facegate::detect::BBox;
use facegate::liveness::{crop_box, reference_box, resize_like_opencv, Liveness};
use facegate::pipeline::{Pipeline, PipelineConfig, Want};

/// `../shared/data/spoof-dev` (or under `FACEGATE_DATA`), or `None` with a SKIPPED message.
fn spoof_dev(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("FACEGATE_DATA").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/data")).join("spoof-dev");
    if dir.join("live.mjpeg").is_file() && dir.join("replay-attack.mjpeg").is_file() {
        Some(dir)
    } else {
        eprintln!("SKIPPED {test}: {} is absent (set FACEGATE_DATA to the data folder)", dir.display());
        None
    }
}

fn crops_json() -> serde_json::Value {
    let path = root().join("models/golden/liveness-crops.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ints(v: &serde_json::Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The crop rectangle of every synthetic case equals the reference's (`_get_new_box`, ported
/// to Python by `train/liveness/crop.py` and checked there against the published code).
#[test]
fn crop_box_matches_the_reference_cases() {
    let cases = crops_json();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        let b = ints(&c["bbox"]);
        let got = crop_box(c["src_w"].as_u64().unwrap() as u32, c["src_h"].as_u64().unwrap() as u32, [b[0], b[1], b[2], b[3]], c["scale"].as_f64().unwrap());
        let want = ints(&c["expected"]);
        assert_eq!(got.map(|g| g.to_vec()), Some(want), "case {c}");
    }
}

/// On the bundled photos: the integer box from the detector's float box, each model's crop
/// rectangle, and the 80×80 crop's pixels (OpenCV's resize) as the reference makes them. The
/// PNG is decoded to the same pixels by both sides, so its crops must be identical byte for
/// byte; JPEG decoders differ slightly in chroma up-sampling (zune-jpeg here, libjpeg-turbo
/// there), so those crops are compared within a few levels on the pixels the reference lists.
#[test]
fn crops_of_the_bundled_photos_match_the_reference() {
    let refs = crops_json();
    for photo in refs["photos"].as_array().unwrap() {
        let name = photo["image"].as_str().unwrap();
        let img = facegate::frame::read_image(&root().join(name)).unwrap();
        let int_box = reference_box(&face_box(photo)).unwrap();
        assert_eq!(int_box.to_vec(), ints(&photo["bbox"]), "{name}");
        let lossless = name.ends_with(".png");
        for (model, crop) in photo["crops"].as_object().unwrap() {
            let scale = crop["scale"].as_f64().unwrap();
            let rect = crop_box(img.width(), img.height(), int_box, scale).unwrap();
            assert_eq!(rect.to_vec(), ints(&crop["crop_box"]), "{name}, {model}");
            let ours = resize_like_opencv(&img, rect, 80, 80);
            // The reference's crop is BGR, row-major, interleaved.
            let ours_bgr: Vec<u8> = ours.as_raw().chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
            let sha = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&ours_bgr));
            let head: Vec<u8> = crop["crop_first_48"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
            let worst = ours_bgr.iter().zip(&head).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            eprintln!("{name}, {model}: rect {rect:?}, first pixels within {worst}, identical: {}", sha == crop["crop_sha256"].as_str().unwrap());
            if lossless {
                assert_eq!(sha, crop["crop_sha256"].as_str().unwrap(), "{name}, {model}: the crop differs from OpenCV's");
            } else {
                assert!(worst <= 4, "{name}, {model}: first pixels differ by {worst}");
            }
        }
    }
}

fn face_box(photo: &serde_json::Value) -> BBox {
    let f = floats(&photo["face"]);
    BBox { x0: f[0] as f32, y0: f[1] as f32, x1: f[2] as f32, y1: f[3] as f32 }
}

/// The fused score of each bundled photo, computed the product's way (its decoder, its crop,
/// its models) on the reference's face box, against PyTorch on the reference's crop.
#[test]
fn fused_scores_of_the_bundled_photos_match_pytorch() {
    let live = Liveness::new().unwrap();
    let refs = crops_json();
    for photo in refs["photos"].as_array().unwrap() {
        let name = photo["image"].as_str().unwrap();
        let img = facegate::frame::read_image(&root().join(name)).unwrap();
        let got = live.score(&img, &face_box(photo)).unwrap();
        let want = photo["fused_live"].as_f64().unwrap() as f32;
        eprintln!("{name}: liveness {got:.5}, PyTorch {want:.5}");
        let tol = if name.ends_with(".png") { 1e-4 } else { LIVENESS_ACROSS_DECODERS };
        assert!((got - want).abs() <= tol, "{name}: {got} vs {want}");
    }
}

/// JPEG decoders' differences in the crop moved the fused score by at most this much on the
/// bundled photos (measured: see the test's output).
const LIVENESS_ACROSS_DECODERS: f32 = 0.02;

/// Largest face of `img` with liveness.
fn largest_liveness(pipeline: &Pipeline, img: &image::RgbImage) -> Option<f32> {
    let want = Want { embedding: false, attributes: false, liveness: true };
    pipeline.analyze(img, want).unwrap().first().and_then(|f| f.analysis.liveness)
}

#[test]
fn cli_liveness_is_there_when_asked_and_absent_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample("obama.jpg");
    let img = img.to_str().unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = facegate(args, dir.path());
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap()
    };
    let with = json(&["analyze", "--json", "--liveness", img]);
    let p = with["faces"][0]["liveness"].as_f64().expect("liveness with --liveness");
    assert!((0.0..=1.0).contains(&p), "{p}");
    let without = json(&["analyze", "--json", img]);
    assert!(without["faces"][0].get("liveness").is_none(), "no liveness unless asked: {without}");
    // identify shows it, and with --require-live at a threshold above any score refuses the
    // face as a spoof without an identity.
    let g = dir.path().join("g.fgg");
    let out = facegate(&["enroll", "--gallery", g.to_str().unwrap(), "--name", "obama", sample("obama2.jpg").to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = json(&["identify", "--json", "--liveness", "--gallery", g.to_str().unwrap(), img]);
    assert!(shown["faces"][0]["liveness"].is_number());
    assert_eq!(shown["faces"][0]["identity"], "obama");
    let refused = json(&["--liveness-threshold", "1", "identify", "--json", "--require-live", "--gallery", g.to_str().unwrap(), img]);
    let face = &refused["faces"][0];
    assert_eq!(face["refused"], "spoof", "{refused}");
    assert!(face["identity"].is_null() && face.get("best").is_none(), "{refused}");
    // verify: exit 6 for a face judged not live, never 1; 0 when it is live enough.
    let verify = |threshold: &str| {
        facegate(&["--liveness-threshold", threshold, "verify", "--require-live", "--gallery", g.to_str().unwrap(), "--name", "obama", img], dir.path())
    };
    let out = verify("1");
    assert_eq!(out.status.code(), Some(6), "{} {}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("judged not live"), "{}", stdout(&out));
    let out = verify("0");
    assert_eq!(out.status.code(), Some(0), "{} {}", stdout(&out), stderr(&out));
    let out = facegate(&["annotate", "--liveness", img, "-o", dir.path().join("a.png").to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// The sample photos of the reference repository: T1 a live face, F1 and F2 attacks.
#[test]
fn reference_sample_photos_are_judged_as_published() {
    let Some(dir) = spoof_dev("reference_sample_photos_are_judged_as_published") else { return };
    let pipeline = Pipeline::new(&PipelineConfig { liveness: true, attributes: None, ..PipelineConfig::default() }).unwrap();
    let score = |name: &str| largest_liveness(&pipeline, &facegate::frame::read_image(&dir.join("photos").join(name)).unwrap()).unwrap();
    let (t1, f1, f2) = (score("T1.jpg"), score("F1.jpg"), score("F2.jpg"));
    eprintln!("liveness: T1 {t1:.3}, F1 {f1:.3}, F2 {f2:.3}");
    let t = facegate::liveness::SHIPPED_THRESHOLD;
    assert!(t1 >= t && f1 < t && f2 < t, "T1 {t1}, F1 {f1}, F2 {f2} at {t}");
}

/// The JPEG frames of an MJPEG stream file (split at start-of-image markers).
fn mjpeg_frames(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let starts: Vec<usize> = bytes.windows(3).enumerate().filter(|(_, w)| *w == [0xFF, 0xD8, 0xFF]).map(|(i, _)| i).collect();
    starts.iter().enumerate().map(|(k, &s)| bytes[s..starts.get(k + 1).copied().unwrap_or(bytes.len())].to_vec()).collect()
}

/// Decision events of `facegate run` on `source`, through the binary.
fn kiosk_decisions(dir: &Path, source: &Path, gallery: &Path) -> Vec<serde_json::Value> {
    let out = facegate(&["run", "--dry-run", "--source", source.to_str().unwrap(), "--gallery", gallery.to_str().unwrap()], dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let decisions: Vec<serde_json::Value> = events.into_iter().filter(|e| e["event"] == "grant" || e["event"] == "refuse").collect();
    eprintln!("{}: {}", source.display(), serde_json::to_string_pretty(&decisions).unwrap());
    decisions
}

/// The attack, end to end through the binary: the person of `live.mjpeg` enrolled from
/// its first three frames; the rest of his clip opens the door; the phone replay of his face
/// does not, and is refused as a spoof.
#[test]
fn kiosk_grants_the_live_person_and_refuses_his_phone_replay() {
    let Some(data) = spoof_dev("kiosk_grants_the_live_person_and_refuses_his_phone_replay") else { return };
    let dir = tempfile::tempdir().unwrap();
    let frames = mjpeg_frames(&data.join("live.mjpeg"));
    assert!(frames.len() > 100, "{} frames", frames.len());
    let mut enrol = vec!["enroll".to_string(), "--gallery".into(), dir.path().join("door.fgg").to_string_lossy().into_owned(), "--name".into(), "visitor".into(), "--largest".into()];
    for (i, frame) in frames[..3].iter().enumerate() {
        let p = dir.path().join(format!("enrol{i}.jpg"));
        std::fs::write(&p, frame).unwrap();
        enrol.push(p.to_string_lossy().into_owned());
    }
    let out = facegate(&enrol.iter().map(String::as_str).collect::<Vec<_>>(), dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let gallery = dir.path().join("door.fgg");

    let rest = dir.path().join("rest.mjpeg");
    std::fs::write(&rest, frames[3..].concat()).unwrap();
    let live = kiosk_decisions(dir.path(), &rest, &gallery);
    let grants: Vec<_> = live.iter().filter(|e| e["event"] == "grant").collect();
    assert!(!grants.is_empty(), "the live person is granted: {live:?}");
    assert_eq!(grants[0]["identity"], "visitor");
    assert!(grants[0]["liveness"].as_f64().unwrap() >= 0.0 && grants[0]["live_votes"].is_string());
    assert!(live.iter().all(|e| e["decision"] != "spoof"), "the live person is never called a spoof: {live:?}");

    let attack = kiosk_decisions(dir.path(), &data.join("replay-attack.mjpeg"), &gallery);
    assert!(attack.iter().all(|e| e["event"] != "grant" && e["relay"].is_null()), "no grant, no pulse for the replay: {attack:?}");
    let spoof = attack.iter().find(|e| e["decision"] == "spoof").unwrap_or_else(|| panic!("the replay is refused as a spoof: {attack:?}"));
    assert_eq!(spoof["event"], "refuse");
    let p = spoof["liveness"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    assert!(spoof["live_votes"].as_str().unwrap().contains('/'));
}
