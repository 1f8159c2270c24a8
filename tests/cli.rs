//! The built binary, run in a temporary directory, as a user or a script would.

mod common;

use std::fs;
use std::path::Path;

use common::*;

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A directory with a corrupt "JPEG", a truncated JPEG and a text file named .png.
fn bad_inputs(dir: &Path) -> [std::path::PathBuf; 3] {
    let corrupt = dir.join("corrupt.jpg");
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bytes.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    fs::write(&corrupt, bytes).unwrap();
    let truncated = dir.join("truncated.jpg");
    let whole = fs::read(sample("obama2.jpg")).unwrap();
    fs::write(&truncated, &whole[..whole.len() / 3]).unwrap();
    let text = dir.join("notes.png");
    fs::write(&text, "not a picture\n").unwrap();
    [corrupt, truncated, text]
}

#[test]
fn analyze_prints_one_line_per_image_in_order_and_survives_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let [corrupt, truncated, text] = bad_inputs(dir.path());
    let obama = sample("obama.jpg");
    let cat = sample("chelsea.png");
    let missing = dir.path().join("missing.jpg");
    let args = ["analyze", "--json", s(&obama), s(&corrupt), s(&cat), s(&truncated), s(&missing), s(&text), s(&obama)];
    let out = facegate(&args, dir.path());
    assert_eq!(out.status.code(), Some(3), "some inputs failed: {}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines.len(), 7);
    for (line, arg) in lines.iter().zip(&args[2..]) {
        assert_eq!(line["image"], *arg);
    }
    for i in [1, 3, 4, 5] {
        assert!(lines[i]["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", lines[i]);
        assert!(lines[i].get("faces").is_none());
    }
    assert_eq!(lines[2]["faces"].as_array().unwrap().len(), 0, "a cat is not a face");
    assert_eq!(lines[0], lines[6], "same image, same answer");
    let face = &lines[0]["faces"][0];
    assert_eq!(face.as_object().unwrap().len(), 6);
    let raw = stdout(&out);
    let first = raw.lines().next().unwrap();
    let at = |k: &str| first.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("no {k}"));
    let order = ["image", "width", "height", "faces", "bbox", "score", "landmarks", "age", "gender", "male_prob"];
    assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "field order: {first}");
    assert_eq!(lines[0]["width"], 910);
    assert_eq!(lines[0]["height"], 1137);
    assert_eq!(face["gender"], "male");
    let lm = face["landmarks"].as_array().unwrap();
    assert_eq!(lm.len(), 5);
    assert!(lm[0][0].as_f64() < lm[1][0].as_f64(), "image-left eye first");
}

#[test]
fn analyze_embeddings_are_unit_vectors_and_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = facegate(&["analyze", "--json", "--embeddings", s(&sample("astronaut.png"))], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    let e: Vec<f32> =
        lines[0]["faces"][0]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(e.len(), 192);
    assert!((e.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
}

#[test]
fn enroll_identify_verify_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("people.fgg");
    let out = facegate(&["enroll", "--gallery", s(&g), "--name", "obama", s(&sample("obama.jpg")), s(&sample("obama2.jpg"))], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = facegate(&["enroll", "--gallery", s(&g), "--name", "astronaut", s(&sample("astronaut.png"))], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = facegate(&["identify", "--json", "--gallery", s(&g), s(&sample("obama3.jpg")), s(&sample("biden.jpg"))], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines[0]["faces"][0]["identity"], "obama");
    assert!(lines[0]["faces"][0]["best"]["margin"].as_f64().unwrap() > 0.2);
    assert!(lines[1]["faces"][0]["identity"].is_null(), "a stranger is unknown: {}", lines[1]);

    let verify = |name: &str, img: &Path| facegate(&["verify", "--gallery", s(&g), "--name", name, s(img)], dir.path());
    assert_eq!(verify("obama", &sample("obama3.jpg")).status.code(), Some(0));
    assert_eq!(verify("obama", &sample("biden.jpg")).status.code(), Some(1));
    assert_eq!(verify("astronaut", &sample("obama3.jpg")).status.code(), Some(1));
    let [corrupt, ..] = bad_inputs(dir.path());
    assert_eq!(verify("obama", &corrupt).status.code(), Some(2));
    assert_eq!(verify("nobody", &sample("obama3.jpg")).status.code(), Some(2));
    assert_eq!(verify("obama", &sample("chelsea.png")).status.code(), Some(2), "no face to verify");

    let out = facegate(&["gallery", "list", "--gallery", s(&g)], dir.path());
    assert_eq!(stdout(&out), "obama\t2 template(s)\nastronaut\t1 template(s)\n");
    let out = facegate(&["gallery", "remove", "--gallery", s(&g), "astronaut"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let out = facegate(&["gallery", "list", "--gallery", s(&g)], dir.path());
    assert_eq!(stdout(&out), "obama\t2 template(s)\n");
    assert_eq!(facegate(&["gallery", "remove", "--gallery", s(&g), "astronaut"], dir.path()).status.code(), Some(2));
}

#[test]
fn failed_enrolment_leaves_the_gallery_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("people.fgg");
    let out = facegate(&["enroll", "--gallery", s(&g), "--name", "obama", s(&sample("obama.jpg"))], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = fs::read(&g).unwrap();
    let [corrupt, truncated, text] = bad_inputs(dir.path());
    for bad in [&sample("chelsea.png"), &corrupt, &truncated, &text, &dir.path().join("missing.jpg")] {
        // A good photo first: all-or-nothing, so it must not be written either.
        let out = facegate(&["enroll", "--gallery", s(&g), "--name", "obama", s(&sample("obama2.jpg")), s(bad)], dir.path());
        assert_eq!(out.status.code(), Some(2), "{}", bad.display());
        assert!(stderr(&out).contains("not enrolled"), "{}", stderr(&out));
        assert_eq!(fs::read(&g).unwrap(), before, "gallery changed after {}", bad.display());
    }
    let out = facegate(&["enroll", "--gallery", s(&g), "--name", "", s(&sample("obama2.jpg"))], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(fs::read(&g).unwrap(), before);
}

#[test]
fn damaged_or_foreign_galleries_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("people.fgg");
    facegate(&["enroll", "--gallery", s(&g), "--name", "obama", s(&sample("obama.jpg"))], dir.path());
    let good = fs::read(&g).unwrap();
    let mut foreign = good.clone();
    foreign[16] ^= 0xFF; // first byte of the model fingerprint
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("truncated", good[..good.len() - 7].to_vec(), "corrupt"),
        ("bad magic", [b"NOTAGALL".as_slice(), &good[8..]].concat(), "not a facegate gallery"),
        ("other model", foreign, "another embedding model"),
        ("empty", Vec::new(), "corrupt"),
    ];
    for (what, bytes, message) in cases {
        fs::write(&g, &bytes).unwrap();
        for args in [
            vec!["identify", "--gallery", s(&g), s(&sample("obama3.jpg"))],
            vec!["enroll", "--gallery", s(&g), "--name", "x", s(&sample("obama2.jpg"))],
            vec!["gallery", "remove", "--gallery", s(&g), "obama"],
        ] {
            let out = facegate(&args, dir.path());
            assert_eq!(out.status.code(), Some(2), "{what}: {args:?}");
            assert!(stderr(&out).contains(message), "{what}: {}", stderr(&out));
            assert_eq!(fs::read(&g).unwrap(), bytes, "{what}: file changed by {args:?}");
        }
    }
}

#[test]
fn several_faces_are_refused_unless_told_which() {
    let dir = tempfile::tempdir().unwrap();
    // Two people in one picture: the bundled photos side by side.
    let a = image::open(sample("obama.jpg")).unwrap().to_rgb8();
    let b = image::open(sample("biden.jpg")).unwrap().to_rgb8();
    let mut both = image::RgbImage::new(a.width() + b.width(), a.height().max(b.height()));
    image::imageops::replace(&mut both, &a, 0, 0);
    image::imageops::replace(&mut both, &b, a.width() as i64, 0);
    let pair = dir.path().join("pair.png");
    both.save(&pair).unwrap();
    let g = dir.path().join("g.fgg");
    let out = facegate(&["enroll", "--gallery", s(&g), "--name", "x", s(&pair)], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("2 faces found"), "{}", stderr(&out));
    assert!(!g.exists());
    let out = facegate(&["enroll", "--gallery", s(&g), "--name", "x", "--largest", s(&pair)], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn annotate_and_demo_write_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("out.png");
    let out = facegate(&["annotate", s(&sample("astronaut.png")), "-o", s(&png)], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let drawn = image::open(&png).unwrap().to_rgb8();
    let orig = image::open(sample("astronaut.png")).unwrap().to_rgb8();
    assert_eq!(drawn.dimensions(), orig.dimensions());
    assert_ne!(drawn, orig, "something was drawn");

    let out = facegate(&["demo"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("obama3.jpg: obama"), "{text}");
    assert!(text.contains("biden.jpg: unknown"), "{text}");
    assert!(image::open(dir.path().join("facegate-demo.png")).is_ok());
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(facegate(&["analyze"], dir.path()).status.code(), Some(2));
    assert_eq!(facegate(&["frobnicate"], dir.path()).status.code(), Some(2));
    assert_eq!(facegate(&["--threshold", "7", "analyze", s(&sample("obama.jpg"))], dir.path()).status.code(), Some(2));
    assert_eq!(facegate(&["--help"], dir.path()).status.code(), Some(0));
}

#[test]
fn analyze_output_does_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let [corrupt, truncated, _] = bad_inputs(dir.path());
    let images = [sample("astronaut.png"), corrupt, sample("chelsea.png"), sample("obama.jpg"), truncated, sample("biden.jpg")];
    let mut args = vec!["analyze", "--json", "--embeddings"];
    args.extend(images.iter().map(|p| s(p)));
    let one = facegate(&[&["--threads", "1"], &args[..]].concat(), dir.path());
    let three = facegate(&[&["--threads", "3"], &args[..]].concat(), dir.path());
    assert_eq!(one.status.code(), Some(3));
    assert_eq!(three.status.code(), Some(3));
    assert_eq!(stdout(&one), stdout(&three));
    assert_eq!(json_lines(&stdout(&three)).len(), images.len());
}
