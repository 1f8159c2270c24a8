//! Evaluation and calibration: the metrics on hand-checked fixtures, the input parsers, and
//! `eval` / `calibrate` through the built binary on the bundled photos.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use facegate::config::Config;
use facegate::eval::inputs::{parse_csv_pairs, parse_labels, parse_lfw_pairs};
use facegate::eval::metrics::*;

const NO_FACE: f32 = f32::NEG_INFINITY;

/// Ten pairs: genuine 0.9 0.8 0.7 0.6 0.3, impostor 0.5 0.4 0.2 0.1 −0.1.
fn ten_pairs() -> (Vec<f32>, Vec<bool>) {
    let scores = vec![0.9, 0.5, 0.8, 0.4, 0.7, 0.2, 0.6, 0.1, 0.3, -0.1];
    let same = (0..10).map(|i| i % 2 == 0).collect();
    (scores, same)
}

fn split(scores: &[f32], same: &[bool]) -> (Vec<f32>, Vec<f32>) {
    let g = scores.iter().zip(same).filter(|p| *p.1).map(|p| *p.0).collect();
    let i = scores.iter().zip(same).filter(|p| !*p.1).map(|p| *p.0).collect();
    (g, i)
}

#[test]
fn ten_pair_list_by_hand() {
    let (scores, same) = ten_pairs();
    // Sorted: −0.1 I, 0.1 I, 0.2 I, 0.3 G, 0.4 I, 0.5 I, 0.6 G, 0.7 G, 0.8 G, 0.9 G. Between
    // 0.5 and 0.6 every impostor is rejected and only the 0.3 genuine pair is lost: 9/10; no
    // other cut does as well (0.25 loses the 0.4 and 0.5 impostors: 8/10).
    let (t, acc) = best_threshold(&scores, &same);
    assert!((t - 0.55).abs() < 1e-6, "{t}");
    assert!((acc - 0.9).abs() < 1e-12);
    assert!((accuracy_at(&scores, &same, 0.5) - 0.8).abs() < 1e-12, "0.5 accepts the 0.5 impostor");
    let (g, i) = split(&scores, &same);
    // At 0.5: FAR 1/5 (0.5), FRR 1/5 (0.3): the equal error point.
    let (e, t_eer, far, frr) = eer(&g, &i);
    assert_eq!(t_eer, 0.5);
    assert!([e, far, frr].iter().all(|v| (v - 0.2).abs() < 1e-12), "{e} {far} {frr}");
    // Genuine above impostor in 5+5+5+5+3 of 25 pairings.
    assert!((auc(&g, &i) - 23.0 / 25.0).abs() < 1e-12);
    // FAR 0.2 of 5 impostors: one may pass, so just above the second highest (0.4).
    let f = threshold_at_far(&i, 0.2).unwrap();
    assert_eq!(f.allowed_above, 1);
    assert!(f.threshold > 0.4 && f.threshold < 0.4001);
    assert_eq!(f.observed_far, 0.2);
    assert_eq!(accept_rate(&g, f.threshold), 0.8);
    assert_eq!(f.support, Support::Weak);
    let r = roc(&g, &i);
    assert_eq!(r.first().map(|p| (p.far, p.tar)), Some((0.0, 0.2)));
    assert_eq!(r.last().map(|p| (p.far, p.tar)), Some((1.0, 1.0)));
    assert!(r.windows(2).all(|w| w[0].far <= w[1].far && w[0].tar <= w[1].tar));
}

#[test]
fn a_missing_face_is_rejected_at_every_threshold() {
    let scores = [0.9, NO_FACE, 0.1, NO_FACE];
    let same = [true, true, false, false];
    let (t, acc) = best_threshold(&scores, &same);
    assert!(t > 0.1 && t < 0.9);
    assert_eq!(acc, 0.75, "the genuine pair without a face is the one error");
    let (g, i) = split(&scores, &same);
    assert_eq!(accept_rate(&g, -1.0), 0.5);
    assert_eq!(accept_rate(&i, -1.0), 0.5);
}

#[test]
fn k_fold_thresholds_come_from_the_other_folds() {
    // Fold 0: G 0.9, G 0.65, I 0.5, I 0.1. Fold 1: G 0.8, G 0.3, I 0.4, I 0.2.
    let scores = [0.9, 0.65, 0.5, 0.1, 0.8, 0.3, 0.4, 0.2];
    let same = [true, true, false, false, true, true, false, false];
    let folds = [0, 0, 0, 0, 1, 1, 1, 1];
    let r = k_fold(&scores, &same, &folds);
    assert_eq!(r.len(), 2);
    // Trained on fold 1 (0.2 I, 0.3 G, 0.4 I, 0.8 G): the cuts 0.25 and 0.6 both get 3/4
    // (0.35 only 2/4); of equally good cuts the middle one is taken (index 2/2 → 0.6), which
    // decides fold 0 right: 4/4.
    assert!((r[0].threshold - 0.6).abs() < 1e-6, "{:?}", r[0]);
    assert_eq!((r[0].train_accuracy, r[0].test_accuracy, r[0].pairs), (0.75, 1.0, 4));
    // Trained on fold 0 (0.1 I, 0.5 I, 0.65 G, 0.9 G): 0.575 separates them; on fold 1 it
    // rejects the 0.3 genuine pair: 3/4.
    assert!((r[1].threshold - 0.575).abs() < 1e-6, "{:?}", r[1]);
    assert_eq!((r[1].train_accuracy, r[1].test_accuracy), (1.0, 0.75));
    let (mean, std, se) = mean_std_se(&[r[0].test_accuracy, r[1].test_accuracy]);
    assert_eq!(mean, 0.875);
    assert!((std - 0.125 * 2f64.sqrt()).abs() < 1e-12 && (se - 0.125).abs() < 1e-12, "{std} {se}");
}

#[test]
fn folds_are_assigned_per_kind_in_file_order() {
    let same = [true, false, true, false, true, false, true, false, true];
    // Genuine 0..5 → 5 pairs into 2 folds: 0 0 0 1 1 (⌊j·2/5⌋); impostor 0..4: 0 0 1 1.
    assert_eq!(assign_folds(&same, 2), vec![0, 0, 0, 0, 0, 1, 1, 1, 1]);
    let ten = assign_folds(&[true; 20], 10);
    assert_eq!(ten, (0..20).map(|j| j / 2).collect::<Vec<_>>());
}

#[test]
fn thresholds_rest_on_enough_impostors_or_say_so() {
    let imp: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
    let f = threshold_at_far(&imp, 1e-2).unwrap();
    // Ten of 1000 may pass: just above 0.989.
    assert_eq!(f.allowed_above, 10);
    assert!(f.threshold > 0.989 && f.threshold < 0.9891);
    assert_eq!(f.support, Support::Adequate);
    assert!(f.threshold_ci95[0] < f.threshold && f.threshold < f.threshold_ci95[1]);
    let f = threshold_at_far(&imp, 1e-4).unwrap();
    assert_eq!((f.allowed_above, f.support), (0, Support::Insufficient));
    assert!(threshold_at_far(&[], 1e-3).is_none());
    let w = wilson95(0, 3000);
    assert!(w[0] == 0.0 && w[1] > 1e-3 && w[1] < 2e-3, "{w:?}");
}

#[test]
fn identification_ranks_and_open_set_by_hand() {
    // Three identities. Mated: own 0 ranks first; own 1 second (0.6 > 0.5); own 2 had no face.
    let probes = vec![
        probe_result(&[0.9, 0.2, 0.1], Some(0)),
        probe_result(&[0.6, 0.5, 0.1], Some(1)),
        probe_result(&[NO_FACE; 3], Some(2)),
        probe_result(&[0.7, 0.3, 0.2], None),
        probe_result(&[0.3, 0.1, 0.0], None),
        probe_result(&[0.2, 0.2, 0.1], None),
        probe_result(&[0.1, 0.0, -0.2], None),
    ];
    assert_eq!(probes[1].rank(), Some(2));
    assert_eq!(probes[2].rank(), None);
    assert!((rank_k(&probes, 1) - 1.0 / 3.0).abs() < 1e-12);
    assert!((rank_k(&probes, 2) - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(cmc(&probes, 3).len(), 3);
    // Non-mated best scores 0.7 0.3 0.2 0.1; FPIR 1/4: one may pass, so just above 0.3.
    let o = dir_at_fpir(&probes, 0.25).unwrap();
    assert!(o.threshold > 0.3 && o.threshold < 0.3001);
    assert_eq!((o.fpir, o.nonmated, o.mated), (0.25, 4, 3));
    assert!((o.dir - 1.0 / 3.0).abs() < 1e-12, "only the first probe is found and clears it");
    let at = open_set_at_threshold(&probes, 0.95);
    assert_eq!((at.dir, at.fpir), (0.0, 0.0));
}

#[test]
fn one_to_n_rule_helpers() {
    let table = [[1e-3, 0.5], [1e-4, 0.6], [1e-5, 0.7]];
    assert_eq!(interpolate_far_table(&table, 1e-3), Some(0.5));
    let mid = interpolate_far_table(&table, 10f64.powf(-3.5)).unwrap();
    assert!((mid - 0.55).abs() < 1e-6, "{mid}");
    assert_eq!(interpolate_far_table(&table, 1e-6), None);
    assert_eq!(interpolate_far_table(&table, 1e-2), None);
}

#[test]
fn age_and_gender_scores_by_band() {
    let s = |age: f32, male: bool, pred: Option<(f32, f32)>| AttrSample { age, male, predicted: pred };
    let samples = [
        s(5.0, true, Some((7.0, 0.9))),    // child: error 2, right
        s(20.0, false, Some((26.0, 0.7))), // 13-29: error 6, wrong
        s(25.0, true, Some((22.0, 0.6))),  // 13-29: error 3, right
        s(60.0, false, Some((50.0, 0.1))), // 50+: error 10, right
        s(40.0, true, None),               // no face: left out
    ];
    let rows = attribute_scores(&samples);
    let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["all", "0-12", "13-29", "30-49", "50+"]);
    assert_eq!((rows[0].n, rows[0].faces_not_found), (4, 1));
    assert!((rows[0].age_mae - 21.0 / 4.0).abs() < 1e-9);
    assert!((rows[0].age_bias - (2.0 + 6.0 - 3.0 - 10.0) / 4.0).abs() < 1e-9);
    assert_eq!(rows[0].gender_accuracy, 0.75);
    assert_eq!((rows[2].n, rows[2].age_mae, rows[2].gender_accuracy), (2, 4.5, 0.5));
    assert_eq!((rows[3].n, rows[3].faces_not_found), (0, 1));
    assert_eq!(rows[4].age_mae, 10.0);
}

#[test]
fn lfw_pairs_txt() {
    let text = "2\t1\nAaron 1 2\nAaron 1\tBob 3\nCarl 2 4\nDan 4 Eve 12\n";
    let l = parse_lfw_pairs(text, Path::new("/lfw")).unwrap();
    assert_eq!(l.pairs.len(), 4);
    let p = &l.pairs[1];
    assert_eq!((p.a.clone(), p.b.clone(), p.same, p.fold), (PathBuf::from("/lfw/Aaron/Aaron_0001.jpg"), PathBuf::from("/lfw/Bob/Bob_0003.jpg"), false, 0));
    assert_eq!(l.pairs[3].b, PathBuf::from("/lfw/Eve/Eve_0012.jpg"));
    assert_eq!(l.pairs.iter().map(|p| (p.same, p.fold)).collect::<Vec<_>>(), [(true, 0), (false, 0), (true, 1), (false, 1)]);
    let e = parse_lfw_pairs("2 1\nAaron 1 2\nAaron 1 Bob 3\nCarl 2 4\n", Path::new("")).unwrap_err();
    assert!(e.to_string().contains("ends early"), "{e}");
    let e = parse_lfw_pairs("1 1\nAaron 1 Bob 3\nAaron 1 2\n", Path::new("")).unwrap_err();
    assert!(e.to_string().contains("matched pair"), "{e}");
}

#[test]
fn csv_pairs_with_and_without_folds() {
    let with = "fold,path_a,path_b,same\n3,a.jpg,b.jpg,1\n7,c.jpg,d.jpg,0\n";
    let l = parse_csv_pairs(with, Path::new("/d")).unwrap();
    assert_eq!(l.pairs.iter().map(|p| p.fold).collect::<Vec<_>>(), [3, 7]);
    assert_eq!(l.pairs[0].a, PathBuf::from("/d/a.jpg"));
    let without = "a.jpg,b.jpg,1\nc.jpg,d.jpg,false\ne.jpg,f.jpg,true\n";
    let l = parse_csv_pairs(without, Path::new("")).unwrap();
    assert_eq!(l.pairs.iter().map(|p| p.same).collect::<Vec<_>>(), [true, false, true]);
    assert!(l.folds_from.starts_with("assigned"));
    let e = parse_csv_pairs("a.jpg,b.jpg,maybe\n", Path::new("")).unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
    assert!(parse_csv_pairs("path_a,same\nx,1\n", Path::new("")).is_err());
}

#[test]
fn label_lists() {
    let l = parse_labels("file,age,gender\nx.jpg,31,male\ny.jpg,4,F\n", Path::new("/r")).unwrap();
    assert_eq!((l[0].path.clone(), l[0].age, l[0].male), (PathBuf::from("/r/x.jpg"), 31.0, true));
    assert!(!l[1].male);
    assert!(parse_labels("x.jpg,thirty,male\n", Path::new("")).is_err());
    assert!(parse_labels("x.jpg,30,0\n", Path::new("")).is_err(), "0/1 gender codes are ambiguous");
}

// ---- through the binary -------------------------------------------------------------------

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_png(path: &Path) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!((img.width(), img.height()), (800, 600));
}

/// Folders per person from the bundled photos.
fn people(dir: &Path, tree: &[(&str, &[&str])]) -> PathBuf {
    for (name, files) in tree {
        let d = if name.is_empty() { dir.to_path_buf() } else { dir.join(name) };
        fs::create_dir_all(&d).unwrap();
        for f in *files {
            fs::copy(sample(f), d.join(f)).unwrap();
        }
    }
    dir.to_path_buf()
}

fn sample_pairs(dir: &Path) -> PathBuf {
    let rows = [
        ("obama.jpg", "obama2.jpg", 1),
        ("obama.jpg", "obama3.jpg", 1),
        ("obama2.jpg", "obama3.jpg", 1),
        ("obama.jpg", "chelsea.png", 1),
        ("obama.jpg", "biden.jpg", 0),
        ("obama2.jpg", "astronaut.png", 0),
        ("biden.jpg", "astronaut.png", 0),
        ("obama3.jpg", "biden.jpg", 0),
    ];
    let mut text = String::from("path_a,path_b,same\n");
    for (a, b, same) in rows {
        text.push_str(&format!("{},{},{same}\n", s(&sample(a)), s(&sample(b))));
    }
    let path = dir.join("pairs.csv");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn eval_verify_reports_plots_and_counts_the_missing_face() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = sample_pairs(dir.path());
    let out = facegate(&["eval", "verify", "--pairs", s(&pairs), "--report", "r.json", "--plots", "plots/v"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&dir.path().join("r.json"));
    assert_eq!((r["pairs"].as_u64(), r["genuine_pairs"].as_u64(), r["images"].as_u64()), (Some(8), Some(4), Some(6)));
    assert_eq!(r["faces_not_found"]["images_without_face"], 1, "the cat: {r}");
    assert_eq!(r["genuine_pairs_missing_a_face"], 1);
    // The three Obama pairs pass and every stranger is refused at the shipped threshold; the
    // pair with the cat is the false reject.
    assert_eq!(r["at_threshold"]["false_accepts"], 0);
    assert_eq!(r["at_threshold"]["false_rejects"], 1);
    assert_eq!(r["tar_at_far"][1]["support"], "insufficient");
    assert!(r["tar_at_far"][1]["tar"].is_null());
    assert!(stdout(&out).contains("not measurable"), "{}", stdout(&out));
    for p in ["roc", "det", "hist"] {
        assert_png(&dir.path().join(format!("plots/v-{p}.png")));
    }
}

#[test]
fn eval_ident_finds_the_enrolled_person_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let g = people(&dir.path().join("g"), &[("obama", &["obama.jpg"]), ("astronaut", &["astronaut.png"])]);
    let p = people(&dir.path().join("p"), &[("obama", &["obama2.jpg", "obama3.jpg"])]);
    let x = people(&dir.path().join("x"), &[("", &["biden.jpg", "chelsea.png"])]);
    let out = facegate(
        &["eval", "ident", "--gallery-dir", s(&g), "--probe-dir", s(&p), "--distractor-dir", s(&x), "--report", "i.json", "--plots", "i"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&dir.path().join("i.json"));
    assert_eq!((r["gallery_identities"].as_u64(), r["mated_probes"].as_u64(), r["nonmated_probes"].as_u64()), (Some(2), Some(2), Some(2)));
    assert_eq!(r["rank_1"], 1.0);
    assert_eq!(r["faces_not_found"]["images_without_face"], 1);
    let at = r["at_thresholds"].as_object().unwrap();
    let shipped = at.iter().find(|(k, _)| k.starts_with("threshold in force")).unwrap().1;
    assert_eq!((shipped["dir"].as_f64(), shipped["fpir"].as_f64()), (Some(1.0), Some(0.0)), "{r}");
    assert_png(&dir.path().join("i-cmc.png"));
    assert_png(&dir.path().join("i-dir-fpir.png"));
}

#[test]
fn eval_attrs_scores_each_list() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.csv");
    fs::write(&labels, "path,age,gender\nobama.jpg,47,male\nbiden.jpg,70,male\nchelsea.png,3,female\n").unwrap();
    let root = sample("obama.jpg").parent().unwrap().to_path_buf();
    let out = facegate(
        &["eval", "attrs", "--labels", s(&labels), "--images-root", s(&root), "--report", "a.json", "--plots", "a"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&dir.path().join("a.json"));
    let all = &r["sets"][0]["scores"][0];
    assert_eq!((all["label"].as_str(), all["n"].as_u64(), all["faces_not_found"].as_u64()), (Some("all"), Some(2), Some(1)));
    assert_eq!(all["gender_accuracy"], 1.0);
    assert!(all["age_mae"].as_f64().unwrap() < 20.0, "{all}");
    assert_eq!(r["sets"][0]["faces_not_found_files"][0], "chelsea.png");
    assert_png(&dir.path().join("a-age-mae.png"));
    assert_png(&dir.path().join("a-gender.png"));
}

#[test]
fn calibrate_writes_a_config_that_eval_and_identify_use() {
    let dir = tempfile::tempdir().unwrap();
    let people_dir = people(
        &dir.path().join("people"),
        &[("obama", &["obama.jpg", "obama2.jpg", "obama3.jpg"]), ("biden", &["biden.jpg"]), ("astronaut", &["astronaut.png"])],
    );
    let cfg = dir.path().join("site.toml");
    // 3 photos of Obama against 2 strangers + 1 stranger pair: 7 impostor comparisons, so FAR
    // 0.2 lets one pass.
    let out = facegate(
        &["calibrate", "--people-dir", s(&people_dir), "--far", "0.2", "--write", s(&cfg), "--report", "c.json", "--plots", "c"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&dir.path().join("c.json"));
    assert_eq!((r["impostor_comparisons"].as_u64(), r["genuine_comparisons"].as_u64()), (Some(7), Some(3)));
    assert_eq!(r["one_to_one"]["allowed_above"], 1);
    let c = Config::load(&cfg).unwrap().calibration.unwrap();
    assert_eq!(c.far, 0.2);
    assert_eq!(c.impostor_comparisons, 7);
    assert!(c.threshold > -1.0 && c.threshold < 1.0 && c.threshold_ci95[0] <= c.threshold);
    assert!(c.one_to_n.is_none(), "7 comparisons are too few for any row of the 1:N table");
    assert_png(&dir.path().join("c-far.png"));

    // The written threshold is the one in force with --config: eval verify reports it.
    let pairs = sample_pairs(dir.path());
    let out = facegate(&["--config", s(&cfg), "eval", "verify", "--pairs", s(&pairs), "--report", "v.json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&dir.path().join("v.json"))["at_threshold"]["threshold"].as_f64().unwrap() as f32, c.threshold);

    // Against an installed gallery, with unknown faces: the direct 1:N threshold for its size.
    let g = dir.path().join("g.fgg");
    let out = facegate(&["enroll", "--gallery", s(&g), "--name", "obama", s(&sample("obama.jpg"))], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let unknown = people(&dir.path().join("unknown"), &[("", &["biden.jpg", "astronaut.png"])]);
    let out = facegate(
        &["calibrate", "--gallery", s(&g), "--unknown-dir", s(&unknown), "--far", "0.4", "--report", "u.json", "--write", s(&cfg)],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let u = json(&dir.path().join("u.json"));
    assert_eq!(u["installed_gallery"]["gallery_size"], 1);
    assert_eq!(u["installed_gallery"]["unknown_faces"], 2);
    let c2 = Config::load(&cfg).unwrap().calibration.unwrap();
    assert!(c2.data.contains("installed gallery"), "{}", c2.data);
    // Both strangers stay below the gallery's calibrated threshold; Obama clears it.
    let out = facegate(&["--config", s(&cfg), "identify", "--json", "--gallery", s(&g), s(&sample("obama3.jpg")), s(&sample("biden.jpg"))], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["faces"][0]["identity"], "obama");
    assert!(lines[1]["faces"][0]["identity"].is_null());
}

#[test]
fn bad_eval_inputs_exit_2_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    fs::write(&bad, "path_a,path_b,same\na.jpg,b.jpg,perhaps\n").unwrap();
    let out = facegate(&["eval", "verify", "--pairs", s(&bad)], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
    let only_genuine = dir.path().join("g.csv");
    fs::write(&only_genuine, "a.jpg,b.jpg,1\n").unwrap();
    let out = facegate(&["eval", "verify", "--pairs", s(&only_genuine)], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("both genuine and impostor"), "{}", stderr(&out));
    let out = facegate(&["calibrate", "--pairs", s(&bad), "--far", "2"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--far"), "{}", stderr(&out));
    let cfg = dir.path().join("c.toml");
    fs::write(&cfg, "[calibration]\nthreshold = 3.0\n").unwrap();
    let out = facegate(&["--config", s(&cfg), "analyze", s(&sample("obama.jpg"))], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("c.toml"), "{}", stderr(&out));
}

#[test]
fn shipped_manifest_calibration_is_consistent() {
    let m = facegate::model::embedded_manifest("mobilefacenet").unwrap();
    if let Some(c) = &m.calibration {
        c.validate().unwrap();
        assert_eq!(m.match_threshold, Some(c.threshold));
        assert!(c.impostor_comparisons > 0 && !c.data.is_empty());
        let (t1, _) = c.threshold_for_gallery(1);
        let (t100, _) = c.threshold_for_gallery(100);
        assert!(t100 >= t1, "false alarms grow with N, so must the threshold");
    }
}

#[test]
fn eval_verify_on_part_of_the_celeba_id_pair_list() {
    let Some(data) = shared_data("eval_verify_on_part_of_the_celeba_id_pair_list") else { return };
    let dir = tempfile::tempdir().unwrap();
    let full = fs::read_to_string(root().join("docs/eval/celeba-id-pairs.csv")).unwrap();
    let mut lines = full.lines();
    let head = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let mut text = format!("{head}\n");
    for same in ["1", "0"] {
        for l in rows.iter().filter(|l| l.ends_with(&format!(",{same}"))).take(12) {
            text.push_str(l);
            text.push('\n');
        }
    }
    let pairs = dir.path().join("part.csv");
    fs::write(&pairs, text).unwrap();
    let out = facegate(&["eval", "verify", "--pairs", s(&pairs), "--images-root", s(&data), "--report", "r.json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&dir.path().join("r.json"));
    assert_eq!(r["pairs"], 24);
    assert!(r["roc_auc"].as_f64().unwrap() > 0.8, "{r}");
    assert!(r["similarity"]["genuine_mean"].as_f64() > r["similarity"]["impostor_mean"].as_f64());
}
