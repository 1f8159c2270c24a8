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
    assert_eq!(face.as_object().unwrap().len(), 7);
    let faceness = face["faceness"].as_f64().unwrap();
    assert!((0.5..=1.0).contains(&faceness), "the multi-task face head on a real face: {faceness}");
    let raw = stdout(&out);
    let first = raw.lines().next().unwrap();
    let at = |k: &str| first.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("no {k}"));
    let order = ["image", "width", "height", "faces", "bbox", "score", "landmarks", "age", "gender", "male_prob", "faceness"];
    assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "field order: {first}");
    assert_eq!(lines[0]["width"], 910);
    assert_eq!(lines[0]["height"], 1137);
    assert_eq!(face["gender"], "male");
    let lm = face["landmarks"].as_array().unwrap();
    assert_eq!(lm.len(), 5);
    assert!(lm[0][0].as_f64() < lm[1][0].as_f64(), "image-left eye first");
}

/// The teachers stay selectable: same detections, their own age and gender, no faceness; and
/// a gallery enrolled with them is read by the multi-task model (one embedding space).
#[test]
fn teachers_remain_an_option_and_share_galleries() {
    let dir = tempfile::tempdir().unwrap();
    let obama = sample("obama.jpg");
    let out = facegate(&["--face-model", "teachers", "analyze", "--json", s(&obama)], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let face = &json_lines(&stdout(&out))[0]["faces"][0];
    assert!(face.get("faceness").is_none() && face["age"].as_f64().is_some(), "{face}");
    let gallery = dir.path().join("g.fgal");
    let g = s(&gallery);
    let out = facegate(&["--face-model", "teachers", "enroll", "--gallery", g, "--name", "obama", s(&obama)], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for model in ["mtl", "mtl-int8"] {
        let out = facegate(&["--face-model", model, "verify", "--gallery", g, "--name", "obama", s(&sample("obama2.jpg"))], dir.path());
        assert_eq!(out.status.code(), Some(0), "{model}: {} {}", stdout(&out), stderr(&out));
    }
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

/// A gallery file of another model: the same format, another fingerprint.
fn foreign_gallery(path: &Path) -> Vec<u8> {
    let key = facegate::gallery::ModelKey { dim: 192, fingerprint: [9; 32] };
    let mut w = facegate::gallery::GalleryWriter::create(path, key, facegate::gallery::Dtype::F32).unwrap();
    let mut v = vec![0.0f32; 192];
    v[0] = 1.0;
    w.enrol(&[facegate::gallery::Person { name: "obama".into(), templates: vec![v] }]).unwrap();
    drop(w);
    fs::read(path).unwrap()
}

#[test]
fn damaged_or_foreign_galleries_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("people.fgg");
    facegate(&["enroll", "--gallery", s(&g), "--name", "obama", s(&sample("obama.jpg"))], dir.path());
    let good = fs::read(&g).unwrap();
    let mut flipped = good.clone();
    flipped[8192 + 64 + 40] ^= 0x20; // a name byte inside the first segment's payload
    let mut v1 = b"FGGALLRY".to_vec();
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&[0; 60]);
    let foreign = foreign_gallery(&dir.path().join("foreign.fgg"));
    let cases: [(&str, Vec<u8>, &str); 7] = [
        ("truncated log", good[..good.len() - 7].to_vec(), "truncated"),
        ("truncated header", good[..5000].to_vec(), "truncated"),
        ("bad magic", [b"NOTAGALL".as_slice(), &good[8..4096], b"NOTAGALL", &good[4104..]].concat(), "not a facegate gallery"),
        ("checksum", flipped, "checksum mismatch"),
        ("version 1", v1, "format version 1"),
        ("other model", foreign, "another embedding model"),
        ("empty", Vec::new(), "empty"),
    ];
    for (what, bytes, message) in cases {
        fs::write(&g, &bytes).unwrap();
        for args in [
            vec!["identify", "--gallery", s(&g), s(&sample("obama3.jpg"))],
            vec!["enroll", "--gallery", s(&g), "--name", "x", s(&sample("obama2.jpg"))],
            vec!["gallery", "remove", "--gallery", s(&g), "obama"],
            vec!["gallery", "list", "--gallery", s(&g)],
            vec!["gallery", "info", "--gallery", s(&g)],
            vec!["gallery", "compact", "--gallery", s(&g)],
        ] {
            let out = facegate(&args, dir.path());
            assert_eq!(out.status.code(), Some(4), "{what}: {args:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(message), "{what}: {}", stderr(&out));
            assert_eq!(fs::read(&g).unwrap(), bytes, "{what}: file changed by {args:?}");
        }
    }
}

#[test]
fn gallery_administration_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("people.fgg");
    let run = |args: &[&str]| {
        let out = facegate(args, dir.path());
        (out.status.code(), stdout(&out), stderr(&out))
    };
    // A folder tree: two people, one folder without a face.
    let tree = dir.path().join("people");
    for (person, photos) in [("obama", &["obama.jpg", "obama2.jpg"][..]), ("astronaut", &["astronaut.png"]), ("cat", &["chelsea.png"])] {
        fs::create_dir_all(tree.join(person)).unwrap();
        for p in photos {
            fs::copy(sample(p), tree.join(person).join(p)).unwrap();
        }
    }
    assert_eq!(run(&["gallery", "create", "--gallery", s(&g), "--dtype", "int8"]).0, Some(0));
    assert_eq!(run(&["gallery", "create", "--gallery", s(&g)]).0, Some(2), "never clobbers");
    let (code, out, err) = run(&["enroll", "--gallery", s(&g), "--tree", s(&tree)]);
    assert_eq!(code, Some(3), "one folder had no face: {out}{err}");
    assert!(out.contains("cat: not enrolled"), "{out}");
    assert!(out.contains("2 of 3 people enrolled"), "{out}");
    let (_, out, _) = run(&["gallery", "list", "--gallery", s(&g)]);
    assert_eq!(out, "astronaut\t1 template(s)\nobama\t2 template(s)\n");

    // The same person under another name is refused unless forced.
    let before = fs::read(&g).unwrap();
    let (code, _, err) = run(&["enroll", "--gallery", s(&g), "--name", "barack", s(&sample("obama3.jpg"))]);
    assert_eq!(code, Some(2));
    assert!(err.contains("looks like the enrolled \"obama\""), "{err}");
    assert_eq!(fs::read(&g).unwrap(), before);
    assert_eq!(run(&["enroll", "--gallery", s(&g), "--name", "obama", s(&sample("obama3.jpg"))]).0, Some(0), "more photos of the same person");
    assert_eq!(run(&["enroll", "--gallery", s(&g), "--name", "barack", "--force", s(&sample("obama3.jpg"))]).0, Some(0));

    assert_eq!(run(&["gallery", "remove", "--gallery", s(&g), "barack"]).0, Some(0));
    assert_eq!(run(&["gallery", "rename", "--gallery", s(&g), "astronaut", "eileen"]).0, Some(0));
    assert_eq!(run(&["gallery", "rename", "--gallery", s(&g), "eileen", "obama"]).0, Some(2), "names are unique");
    let (code, out, _) = run(&["gallery", "info", "--gallery", s(&g), "--json"]);
    assert_eq!(code, Some(0));
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((info["identities"].as_u64(), info["templates"].as_u64(), info["dtype"].as_str()), (Some(2), Some(4), Some("i8")));
    let bytes_before = info["file_bytes"].as_u64().unwrap();
    assert_eq!(run(&["gallery", "compact", "--gallery", s(&g)]).0, Some(0));
    let (_, out, _) = run(&["gallery", "info", "--gallery", s(&g), "--json"]);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(info["file_bytes"].as_u64().unwrap() < bytes_before);
    assert_eq!(info["segments"].as_u64(), Some(1));

    let export = dir.path().join("people.jsonl");
    assert_eq!(run(&["gallery", "export", "--gallery", s(&g), "-o", s(&export)]).0, Some(0));
    let copy = dir.path().join("copy.fgg");
    assert_eq!(run(&["gallery", "import", "--gallery", s(&copy), s(&export)]).0, Some(0));
    let list = |p: &Path| run(&["gallery", "list", "--gallery", s(p)]).1;
    assert_eq!(list(&g), list(&copy));
    assert_eq!(list(&g), "eileen\t1 template(s)\nobama\t3 template(s)\n");
    for gallery in [&g, &copy] {
        let out = facegate(&["identify", "--json", "--gallery", s(gallery), s(&sample("obama3.jpg")), s(&sample("biden.jpg"))], dir.path());
        let lines = json_lines(&stdout(&out));
        assert_eq!(lines[0]["faces"][0]["identity"], "obama");
        assert!(lines[1]["faces"][0]["identity"].is_null());
    }
    // Importing again collides on every name: nothing is written.
    let before = fs::read(&copy).unwrap();
    assert_eq!(run(&["gallery", "import", "--gallery", s(&copy), s(&export)]).0, Some(2));
    assert_eq!(fs::read(&copy).unwrap(), before);
}

#[test]
fn bad_imports_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("people.fgg");
    facegate(&["enroll", "--gallery", s(&g), "--name", "obama", s(&sample("obama.jpg"))], dir.path());
    let export = dir.path().join("good.jsonl");
    assert_eq!(facegate(&["gallery", "export", "--gallery", s(&g), "-o", s(&export)], dir.path()).status.code(), Some(0));
    let text = fs::read_to_string(&export).unwrap();
    let header = text.lines().next().unwrap();
    let unit: Vec<String> = (0..192).map(|i| if i == 0 { "1.0".into() } else { "0.0".into() }).collect();
    let mut nan = unit.clone();
    nan[3] = "NaN".into();
    let line = |name: &str, v: &[String]| format!("{{\"name\": \"{name}\", \"templates\": [[{}]]}}", v.join(","));
    let foreign_header = header.replace("\"fingerprint\":\"", "\"fingerprint\":\"00");
    let cases = [
        ("wrong dimension", format!("{header}\n{}\n", line("new", &unit[..191]))),
        // JSON has no NaN; 1e39 overflows f32 to infinity, which must be refused as not finite.
        ("not finite", format!("{header}\n{}\n", line("new", &nan).replace("NaN", "1e39"))),
        ("not unit length", format!("{header}\n{}\n", line("new", &unit).replace("[[1.0", "[[2.0"))),
        ("bad name", format!("{header}\n{}\n", line("", &unit))),
        ("other model", format!("{foreign_header}\n{}\n", line("new", &unit))),
        ("garbage", "not json\n".to_string()),
        ("half good", format!("{header}\n{}\n{}\n", line("fine", &unit), line("broken", &unit[..5]))),
    ];
    let before = fs::read(&g).unwrap();
    for (what, body) in cases {
        let file = dir.path().join("bad.jsonl");
        fs::write(&file, body).unwrap();
        let out = facegate(&["gallery", "import", "--gallery", s(&g), s(&file)], dir.path());
        assert_ne!(out.status.code(), Some(0), "{what}");
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        if what == "not finite" {
            assert!(stderr(&out).contains("not a finite unit vector"), "{}", stderr(&out));
        }
        assert_eq!(fs::read(&g).unwrap(), before, "{what}: the gallery changed");
        let fresh = dir.path().join("fresh.fgg");
        let _ = facegate(&["gallery", "import", "--gallery", s(&fresh), s(&file)], dir.path());
        assert!(!fresh.exists(), "{what}: a failed import left a new gallery");
    }
}

#[test]
fn a_locked_gallery_is_reported_busy() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("people.fgg");
    facegate(&["enroll", "--gallery", s(&g), "--name", "obama", s(&sample("obama.jpg"))], dir.path());
    let before = fs::read(&g).unwrap();
    let key = facegate::admin::model_key("mobilefacenet").unwrap();
    let holder = facegate::gallery::GalleryWriter::open(&g, key).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facegate"))
        .args(["gallery", "remove", "--gallery", s(&g), "obama"])
        .env("FACEGATE_LOCK_WAIT", "0.2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("another process"), "{}", stderr(&out));
    // Readers are not blocked by a writer.
    let out = facegate(&["gallery", "list", "--gallery", s(&g)], dir.path());
    assert_eq!(out.status.code(), Some(0));
    drop(holder);
    assert_eq!(fs::read(&g).unwrap(), before);
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

/// `facegate` with arguments that need not be UTF-8.
fn facegate_os(args: &[&std::ffi::OsStr], cwd: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_facegate")).args(args).current_dir(cwd).output().unwrap()
}

/// #20, defect 1: paths that are not UTF-8 panicked (exit 101) in every subcommand that takes
/// one; they are ordinary paths.
#[test]
fn paths_that_are_not_utf8_are_ordinary_paths() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join(OsStr::from_bytes(b"bad\xff.jpg"));
    fs::copy(sample("obama.jpg"), &photo).unwrap();
    let gallery = dir.path().join(OsStr::from_bytes(b"g\xfe.fgg"));
    let (p, g) = (photo.as_os_str(), gallery.as_os_str());
    let os = OsStr::new;
    let out = facegate_os(&[os("analyze"), os("--json"), p], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_lines(&stdout(&out))[0]["faces"].as_array().unwrap().len(), 1);
    let png = dir.path().join(OsStr::from_bytes(b"out\xfd.png"));
    let runs: Vec<(Vec<&OsStr>, i32)> = vec![
        (vec![os("enroll"), os("--gallery"), g, os("--name"), os("obama"), p], 0),
        (vec![os("identify"), os("--gallery"), g, p], 0),
        (vec![os("verify"), os("--gallery"), g, os("--name"), os("obama"), p], 0),
        (vec![os("annotate"), p, os("-o"), png.as_os_str()], 0),
        (vec![os("run"), os("--source"), p, os("--gallery"), g], 0),
        (vec![os("eval"), os("attrs"), os("--labels"), p], 2),
        (vec![os("calibrate"), os("--pairs"), p], 2),
        (vec![os("demo"), os("-o"), png.as_os_str()], 0),
    ];
    for (args, code) in runs {
        let out = facegate_os(&args, dir.path());
        assert!(!stderr(&out).contains("panicked"), "{args:?}: {}", stderr(&out));
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
    }
}

/// #20, defect 2: two folders whose names are not UTF-8 (`p\xff`, `p\xfe`) were merged into one
/// identity `p�`; each is now reported and skipped (exit 3), the others enrolled.
#[test]
fn enroll_tree_does_not_merge_folders_whose_names_are_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("people");
    for (name, photo) in [(&b"p\xff"[..], "obama.jpg"), (&b"p\xfe"[..], "biden.jpg"), (&b"obama"[..], "obama2.jpg")] {
        let d = tree.join(OsStr::from_bytes(name));
        fs::create_dir_all(&d).unwrap();
        fs::copy(sample(photo), d.join("1.jpg")).unwrap();
    }
    let g = dir.path().join("g.fgg");
    let out = facegate(&["enroll", "--gallery", s(&g), "--tree", s(&tree)], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).matches("the folder name is not valid UTF-8").count(), 2, "{}", stdout(&out));
    let out = facegate(&["gallery", "list", "--gallery", s(&g), "--json"], dir.path());
    let listed = stdout(&out);
    assert!(listed.contains("obama") && !listed.contains('\u{fffd}') && !listed.contains("\"p"), "{listed}");
}

/// `d/g.fgg` with obama enrolled from obama.jpg, and its bytes.
fn gallery_of_obama(d: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let g = d.join("g.fgg");
    let out = facegate(&["enroll", "--gallery", s(&g), "--name", "obama", s(&sample("obama.jpg"))], d);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = fs::read(&g).unwrap();
    (g, before)
}

/// #20, defect 10: `gallery export -o G` onto the gallery itself destroyed it; a failed import
/// or a failed enrolment left a new, empty gallery file behind.
#[test]
fn exports_and_failed_first_writes_do_not_destroy_or_leave_galleries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (g, before) = gallery_of_obama(d);
    let out = facegate(&["gallery", "export", "--gallery", s(&g), "-o", s(&g)], d);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("the gallery itself"), "{}", stderr(&out));
    assert_eq!(fs::read(&g).unwrap(), before, "the gallery is unchanged");

    // An export naming one person twice: refused, and no new gallery appears.
    let export = d.join("e.jsonl");
    let out = facegate(&["gallery", "export", "--gallery", s(&g), "-o", s(&export)], d);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = fs::read_to_string(&export).unwrap();
    let person = text.lines().nth(1).unwrap();
    fs::write(&export, format!("{text}{person}\n")).unwrap();
    let fresh = d.join("fresh.fgg");
    let out = facegate(&["gallery", "import", "--gallery", s(&fresh), s(&export)], d);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!fresh.exists(), "a failed import left {}", fresh.display());

    // 65 photos: more templates than a person may have; refused before the file is made.
    let photos: Vec<String> = (0..65)
        .map(|i| {
            let p = d.join(format!("p{i}.jpg"));
            fs::copy(sample("obama2.jpg"), &p).unwrap();
            p.to_string_lossy().into_owned()
        })
        .collect();
    let mut args = vec!["enroll", "--gallery", s(&fresh), "--name", "obama"];
    args.extend(photos.iter().map(String::as_str));
    let out = facegate(&args, d);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!fresh.exists(), "a failed enrolment left {}", fresh.display());
}

/// #20, defect 12: more photos for an enrolled name must show that person; another person's
/// face is refused (exit 2, saying so) unless --force.
#[test]
fn enrolling_another_face_under_an_enrolled_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (g, before) = gallery_of_obama(d);
    let out = facegate(&["enroll", "--gallery", s(&g), "--name", "obama", s(&sample("biden.jpg"))], d);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not look like the enrolled \"obama\""), "{}", stderr(&out));
    assert_eq!(fs::read(&g).unwrap(), before, "the gallery is unchanged");
    let out = facegate(&["enroll", "--gallery", s(&g), "--name", "obama", s(&sample("obama2.jpg"))], d);
    assert_eq!(out.status.code(), Some(0), "the same person is welcome: {}", stderr(&out));
    let out = facegate(&["enroll", "--force", "--gallery", s(&g), "--name", "obama", s(&sample("biden.jpg"))], d);
    assert_eq!(out.status.code(), Some(0), "--force overrides: {}", stderr(&out));
}

/// #20, defect 13: names with bidirectional overrides or zero-width characters, and names that
/// look like an enrolled one, are refused (exit 2, the gallery unchanged); names are NFC, so
/// "José" typed either way is one person; "Łukasz" is a name.
#[test]
fn spoofed_names_are_refused_and_names_are_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (g, before) = gallery_of_obama(d);
    let enroll = |name: &str, photo: &str| facegate(&["enroll", "--gallery", s(&g), "--name", name, s(&sample(photo))], d);
    for bad in ["\u{202e}nedib", "bi\u{200b}den", "bi\u{2028}den"] {
        let out = enroll(bad, "biden.jpg");
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("invalid identity name"), "{}", stderr(&out));
    }
    // Cyrillic "о" for Latin "o": another person under a look-alike of "obama".
    let out = enroll("\u{43e}bama", "biden.jpg");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("can be mistaken for the enrolled \"obama\""), "{}", stderr(&out));
    assert_eq!(fs::read(&g).unwrap(), before, "the gallery is unchanged");
    let out = enroll("Łukasz", "biden.jpg");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Enrolled with a combining accent, found with the precomposed letter.
    let out = facegate(&["gallery", "rename", "--gallery", s(&g), "obama", "Jose\u{301}"], d);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = facegate(&["verify", "--gallery", s(&g), "--name", "Jos\u{e9}", s(&sample("obama2.jpg"))], d);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// #20, defect 5: a small JPEG declaring 16000×16000 pixels (and a PNG as large) is refused
/// from its header, before any pixel is allocated: its line says why, the next photo is
/// analysed, exit 3. (Peak memory with these files: README "Bad input".)
#[test]
fn decompression_bombs_are_refused_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut jpeg = Vec::new();
    image::RgbImage::from_pixel(16, 16, image::Rgb([90, 90, 90]))
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0x3E, 0x80, 0x3E, 0x80]);
    let bomb = d.join("bomb.jpg");
    fs::write(&bomb, &jpeg).unwrap();
    assert!(jpeg.len() < 4096);
    let out = facegate(&["analyze", "--json", s(&bomb), s(&sample("obama.jpg"))], d);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    assert!(lines[0]["error"].as_str().unwrap().contains("16000x16000 pixels, more than the budget"), "{}", lines[0]);
    assert_eq!(lines[1]["faces"].as_array().unwrap().len(), 1);
}

/// #20, defect 8: a FIFO with no writer as an image hung the command; `/dev/zero` as an image or
/// a configuration file was read until memory ran out. Only regular files of bounded size are
/// read: an error line (exit 3 in a batch) or exit 2, at once.
#[test]
fn fifos_and_devices_are_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("pipe.jpg");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let started = std::time::Instant::now();
    let out = facegate(&["analyze", "--json", s(&fifo), "/dev/zero", s(&sample("obama.jpg"))], d);
    assert!(started.elapsed().as_secs() < 60, "took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    assert!(lines[0]["error"].as_str().unwrap().contains("not a regular file"), "{}", lines[0]);
    assert!(lines[1]["error"].as_str().unwrap().contains("not a regular file"), "{}", lines[1]);
    assert_eq!(lines[2]["faces"].as_array().unwrap().len(), 1);
    let out = facegate(&["--config", "/dev/zero", "analyze", s(&sample("obama.jpg"))], d);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a regular file"), "{}", stderr(&out));
    let out = facegate(&["--config", s(&fifo), "analyze", s(&sample("obama.jpg"))], d);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
