//! Presentation-attack evaluation: the live/spoof list parser, and `eval spoof` and
//! `calibrate --spoof-labels` through the built binary on the development photos of
//! `../shared/data/spoof-dev` (read in place) and a bundled photo without a face.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use facegate::config::Config;
use facegate::eval::inputs::{parse_spoof_labels, UNSPECIFIED_SPECIES};

#[test]
fn spoof_lists_are_parsed_and_refused_by_line() {
    let root = Path::new("/data");
    let l = parse_spoof_labels("label,path,kind\nlive,a.jpg,\nSPOOF,b.jpg,Print\nspoof,c.jpg\n\nLive,d.jpg\n", root).unwrap();
    assert_eq!(l.len(), 4);
    assert_eq!((l[0].path.as_path(), l[0].attack.as_deref()), (Path::new("/data/a.jpg"), None));
    assert_eq!(l[1].attack.as_deref(), Some("print"), "kinds are lower-cased");
    assert_eq!(l[2].attack.as_deref(), Some(UNSPECIFIED_SPECIES));
    assert_eq!(l[3].attack, None);
    // Without a kind column every attack is unspecified.
    let l = parse_spoof_labels("path,label\nx.jpg,live\n/abs/y.jpg,spoof\n", root).unwrap();
    assert_eq!((l[1].path.as_path(), l[1].attack.as_deref()), (Path::new("/abs/y.jpg"), Some(UNSPECIFIED_SPECIES)));

    let refused = |text: &str, want: &str| {
        let e = format!("{:#}", parse_spoof_labels(text, root).unwrap_err());
        assert!(e.contains(want), "{want:?} not in {e:?}");
    };
    refused("path,label\na.jpg,live\nb.jpg,attack\n", "line 3: label must be live or spoof");
    refused("path,label,kind\na.jpg,live,print\nb.jpg,spoof,\n", "line 2: a live presentation has no attack kind");
    refused("path,label\na.jpg,live\nb.jpg,spoof\na.jpg,spoof\n", "line 4: a.jpg is listed again (first on line 2)");
    refused("a.jpg,live\nb.jpg,spoof\n", "line 1: the header must name path and label");
    refused("path,label\na.jpg,live\nb.jpg,live\n", "both live and spoof");
    refused("path,label\n,spoof\na.jpg,live\n", "line 2: the path is empty");
    refused("", "empty list");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn rate(v: &serde_json::Value) -> f64 {
    let x = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((0.0..=1.0).contains(&x), "{x} is not a rate");
    x
}

/// The liveness models must be compiled in: these tests fail, not skip, without them.
fn require_liveness_models(dir: &Path) {
    let out = facegate(&["models"], dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for name in facegate::liveness::MODELS {
        assert!(
            stdout(&out).lines().any(|l| l.split('\t').next() == Some(name)),
            "the liveness model {name} is not embedded in this binary (models/{name}.onnx missing?): `facegate models` lists\n{}",
            stdout(&out)
        );
    }
}

#[test]
fn calibrate_spoof_arguments_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = facegate(&["calibrate", "--spoof-labels", "x.csv"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--apcer"), "{}", stderr(&out));
    let out = facegate(&["calibrate", "--spoof-labels", "x.csv", "--apcer", "0.1", "--pairs", "p.csv"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot be used with"), "{}", stderr(&out));
    let out = facegate(&["calibrate", "--apcer", "0.1", "--pairs", "p.csv"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--spoof-labels"), "{}", stderr(&out));
}

#[test]
fn eval_spoof_refuses_a_bad_list_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    require_liveness_models(dir.path());
    let labels = dir.path().join("l.csv");
    fs::write(&labels, "path,label\na.jpg,live\nb.jpg,fake\n").unwrap();
    let out = facegate(&["eval", "spoof", "--labels", s(&labels)], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
    let out = facegate(&["calibrate", "--spoof-labels", s(&labels), "--apcer", "1.5"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--apcer"), "{}", stderr(&out));
}

/// T1 live, F1 a print, F2 an attack without a kind (species "unspecified"), and the bundled
/// cat photo listed as live: no face, a non-response.
fn spoof_list(dir: &Path) -> PathBuf {
    let path = dir.join("labels.csv");
    let cat = sample("chelsea.png");
    fs::write(
        &path,
        format!("path,label,kind\nspoof-dev/photos/T1.jpg,live,\nspoof-dev/photos/F1.jpg,spoof,print\nspoof-dev/photos/F2.jpg,spoof,\n{},live,\n", s(&cat)),
    )
    .unwrap();
    path
}

#[test]
fn eval_spoof_and_calibrate_on_the_spoof_dev_photos() {
    let dir = tempfile::tempdir().unwrap();
    require_liveness_models(dir.path());
    let Some(data) = shared_data("eval_spoof_and_calibrate_on_the_spoof_dev_photos") else { return };
    if !data.join("spoof-dev/photos/T1.jpg").is_file() {
        eprintln!("SKIPPED eval_spoof_and_calibrate_on_the_spoof_dev_photos: {} has no spoof-dev/photos", data.display());
        return;
    }
    let labels = spoof_list(dir.path());
    let out = facegate(
        &["eval", "spoof", "--labels", s(&labels), "--images-root", s(&data), "--report", "r.json", "--plots", "plots/s"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&dir.path().join("r.json"));
    let (p, scored, nr) = (&r["presentations"], &r["scored"], &r["non_responses"]);
    assert_eq!((p["bona_fide"].as_u64(), p["attacks"].as_u64()), (Some(2), Some(2)), "{r}");
    assert_eq!((p["attacks_per_species"]["print"].as_u64(), p["attacks_per_species"]["unspecified"].as_u64()), (Some(1), Some(1)));
    assert_eq!((nr["bona_fide"].as_u64(), nr["attacks"].as_u64(), nr["unreadable"].as_u64()), (Some(1), Some(0), Some(0)), "{r}");
    assert_eq!(nr["files"].as_array().unwrap().len(), 1);
    assert!(nr["files"][0]["file"].as_str().unwrap().ends_with("chelsea.png"), "{r}");
    assert_eq!((scored["bona_fide"].as_u64(), scored["attacks"].as_u64()), (Some(1), Some(2)), "every photo but the cat has a face: {r}");

    let at = &r["at_threshold"];
    assert_eq!(at["threshold"].as_f64().unwrap() as f32, facegate::liveness::SHIPPED_THRESHOLD);
    let per = at["apcer_per_species"].as_array().unwrap();
    assert_eq!(per.iter().map(|x| x["species"].as_str().unwrap()).collect::<Vec<_>>(), ["print", "unspecified"]);
    let mut worst: f64 = 0.0;
    for x in per {
        assert_eq!(x["presentations"], 1);
        let k = x["errors"].as_u64().unwrap();
        assert_eq!(rate(&x["rate"]), k as f64);
        assert!(rate(&x["ci95"][0]) <= rate(&x["rate"]) && rate(&x["rate"]) <= rate(&x["ci95"][1]));
        worst = worst.max(k as f64);
    }
    assert_eq!(rate(&at["apcer_max"]["rate"]), worst);
    assert_eq!(at["bpcer"]["presentations"], 1);
    let bpcer = rate(&at["bpcer"]["rate"]);
    assert!((rate(&at["acer"]["value"]) - (worst + bpcer) / 2.0).abs() < 1e-9);
    assert!(at["acer"]["note"].as_str().unwrap().contains("outside ISO/IEC 30107-3"));
    // One attack per species: no APCER target can be measured.
    let rows = r["bpcer_at_apcer"].as_array().unwrap();
    assert_eq!(rows.iter().map(|x| x["target_apcer"].as_f64().unwrap()).collect::<Vec<_>>(), [0.01, 0.05, 0.1]);
    for x in rows {
        assert_eq!(x["support"], "insufficient");
        assert!(x["bpcer"].is_null() && x["threshold"].is_null());
    }
    rate(&r["eer"]["eer"]);
    rate(&r["roc_auc"]);
    for s in r["highest_attack_scores"].as_array().unwrap().iter().chain(r["lowest_bona_fide_scores"].as_array().unwrap()) {
        rate(&s["score"]);
    }
    assert!(stdout(&out).contains("not measurable"), "{}", stdout(&out));
    assert!(stdout(&out).contains("outside ISO/IEC 30107-3"), "{}", stdout(&out));
    for plot in ["det", "hist"] {
        let img = image::open(dir.path().join(format!("plots/s-{plot}.png"))).unwrap();
        assert_eq!((img.width(), img.height()), (800, 600));
    }

    // Calibrate on the same list, into a file that already holds another table.
    let cfg = dir.path().join("site.toml");
    fs::write(&cfg, "[kiosk]\npulse_ms = 800\n").unwrap();
    let out = facegate(
        &["calibrate", "--spoof-labels", s(&labels), "--images-root", s(&data), "--apcer", "0.1", "--write", s(&cfg), "--report", "c.json"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c = json(&dir.path().join("c.json"));
    assert_eq!(c["measurable"], false, "one attack per species is fewer than 1/0.1");
    assert!(stdout(&out).contains("WARNING: APCER 10% cannot be measured"), "{}", stdout(&out));
    let config = Config::load(&cfg).unwrap();
    assert!(config.kiosk.is_some(), "the file's other tables are kept");
    let l = config.liveness.expect("[liveness] written");
    assert!((0.0..=1.0).contains(&l.threshold));
    assert_eq!(l.threshold, c["threshold"].as_f64().unwrap() as f32);
    assert_eq!((l.attacks, l.bona_fide), (Some(2), Some(1)));
    assert!(l.data.contains("labels.csv") && l.method.contains("--spoof-labels"), "{l:?}");
    assert_eq!(l.apcer, c["apcer_max"]["rate"].as_f64());
    assert_eq!(c["target_met"].as_bool(), Some(l.apcer.unwrap() <= 0.1));
    // The threshold clears every attack seen unless an attack scores 1.0.
    let top_attack = r["highest_attack_scores"][0]["score"].as_f64().unwrap();
    if top_attack < 0.9999 {
        assert_eq!(l.apcer, Some(0.0));
        assert!(l.threshold as f64 > top_attack - 1e-4);
    }

    // The written threshold is the one in force with --config.
    let t1 = data.join("spoof-dev/photos/T1.jpg");
    let out = facegate(&["--config", s(&cfg), "analyze", "--json", "--liveness", s(&t1)], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a: serde_json::Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    rate(&a["faces"][0]["liveness"]);
    let out = facegate(&["--config", s(&cfg), "eval", "spoof", "--labels", s(&labels), "--images-root", s(&data), "--report", "r2.json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&dir.path().join("r2.json"))["at_threshold"]["threshold"].as_f64().unwrap() as f32, l.threshold);
}
