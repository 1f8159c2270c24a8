//! Built-in evaluation and threshold calibration: `eval verify`, `eval ident`, `eval attrs`,
//! `eval spoof` and `calibrate` (the liveness side of the last two in [`spoof`]).
//!
//! Every command analyses each distinct image once with the loaded pipeline (on
//! `Context::threads` threads, the largest face of each image), keeps the embeddings in
//! memory, and hands scores to the pure functions of [`metrics`]. Results go to a text
//! summary, a JSON report ([`report`]) and PNG plots ([`plot`]). Nothing here depends on the
//! gallery file format: identification builds its gallery in memory; only `calibrate
//! --gallery` opens an installed gallery, for its size and its best match per unknown face.

pub mod inputs;
pub mod metrics;
pub mod pad;
pub mod plot;
pub mod report;
mod spoof;

pub use spoof::{calibrate_spoof, spoof, SpoofArgs, SpoofCalibrateArgs, APCERS};

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::analyze::cosine;
use crate::commands::{in_order, Context, Outcome};
use crate::config::{Calibration, Config, OneToN, ONE_TO_N_RULE};
use crate::frame::read_image;
use crate::pipeline::{Face, Want};
use metrics::{ProbeResult, Support};
use report::{r, Missing, RunInfo};

/// What became of one image.
#[derive(Clone, Debug)]
pub enum Seen<T> {
    Face(T),
    NoFace,
    Unreadable(String),
}

impl<T> Seen<T> {
    pub fn face(&self) -> Option<&T> {
        match self {
            Seen::Face(t) => Some(t),
            _ => None,
        }
    }
}

/// Analyses every image once (largest face) and keeps what `keep` takes from the face.
fn analyse_all<T: Send>(
    ctx: &Context,
    images: &[PathBuf],
    want: Want,
    keep: impl Fn(&Face) -> Option<T> + Sync,
) -> Result<Vec<Seen<T>>> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(images.len());
    in_order(
        images,
        ctx.threads,
        |path| -> Seen<T> {
            let img = match read_image(path) {
                Ok(img) => img,
                Err(e) => return Seen::Unreadable(format!("{e:#}")),
            };
            match ctx.pipeline.analyze(&img, want) {
                Ok(faces) => faces.first().and_then(&keep).map_or(Seen::NoFace, Seen::Face),
                Err(e) => Seen::Unreadable(format!("{e:#}")),
            }
        },
        |seen| {
            out.push(seen);
            if out.len() % 250 == 0 {
                let s = started.elapsed().as_secs_f64();
                log::info!("analysed {}/{} images, {:.1} img/s", out.len(), images.len(), out.len() as f64 / s);
            }
            Ok(())
        },
    )?;
    Ok(out)
}

fn embeddings(ctx: &Context, images: &[PathBuf]) -> Result<Vec<Seen<Vec<f32>>>> {
    analyse_all(ctx, images, Want { embedding: true, attributes: false, liveness: false }, |f| f.analysis.embedding.clone())
}

/// A path as shown in reports: relative to `root` when under it.
fn shown(path: &Path, root: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().into_owned()
}

fn missing<T>(images: &[PathBuf], seen: &[Seen<T>], root: &Path, rule: &'static str) -> Missing {
    let mut m = Missing { rule, ..Missing::default() };
    for (p, s) in images.iter().zip(seen) {
        match s {
            Seen::Unreadable(e) => {
                m.images_unreadable += 1;
                m.files.insert(m.images_unreadable - 1, format!("{}: {e}", shown(p, root)));
            }
            Seen::NoFace => {
                m.images_without_face += 1;
                m.files.push(shown(p, root));
            }
            Seen::Face(_) => {}
        }
    }
    m
}

fn run_info(ctx: &Context, command: String, images: usize, started: Instant) -> RunInfo {
    let m = &ctx.pipeline.embedder.model.manifest;
    let wall = started.elapsed().as_secs_f64();
    RunInfo {
        facegate: env!("CARGO_PKG_VERSION").into(),
        embedder: m.name.clone(),
        embedder_sha256: m.sha256.clone(),
        command,
        threads: ctx.threads,
        wall_s: r(wall, 1),
        images,
        images_per_s: r(images as f64 / wall.max(1e-9), 2),
    }
}

/// The calibration in force: the configuration file's, else the embedder manifest's.
pub fn calibration_in_force(ctx: &Context, file: Option<&Config>) -> Option<Calibration> {
    file.and_then(|c| c.calibration.clone()).or_else(|| ctx.pipeline.embedder.model.manifest.calibration.clone())
}

fn plot_path(prefix: &Path, what: &str) -> PathBuf {
    let name = prefix.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    prefix.with_file_name(format!("{name}-{what}.png"))
}

fn far_label(f: f64) -> String {
    format!("{f:.0e}").replace("e-", "e-")
}

/// `eval verify` options.
pub struct VerifyArgs {
    pub pairs: PathBuf,
    pub images_root: PathBuf,
    pub report: Option<PathBuf>,
    pub plots: Option<PathBuf>,
    pub command: String,
}

/// The FARs at which TAR is reported.
pub const FARS: [f64; 3] = [1e-2, 1e-3, 1e-4];

pub fn verify(ctx: &Context, args: &VerifyArgs, out: &mut dyn Write) -> Result<Outcome> {
    let started = Instant::now();
    let list = inputs::read_pairs(&args.pairs, &args.images_root)?;
    let images: Vec<PathBuf> =
        list.pairs.iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect::<BTreeSet<_>>().into_iter().collect();
    let index: BTreeMap<&PathBuf, usize> = images.iter().enumerate().map(|(i, p)| (p, i)).collect();
    writeln!(out, "{}: {} pairs, {} images ({})", args.pairs.display(), list.pairs.len(), images.len(), list.folds_from)?;
    let seen = embeddings(ctx, &images)?;
    let emb = |p: &PathBuf| seen[index[p]].face();
    let scores: Vec<f32> = list
        .pairs
        .iter()
        .map(|p| match (emb(&p.a), emb(&p.b)) {
            (Some(a), Some(b)) => cosine(a, b),
            _ => f32::NEG_INFINITY,
        })
        .collect();
    let same: Vec<bool> = list.pairs.iter().map(|p| p.same).collect();
    let folds: Vec<usize> = list.pairs.iter().map(|p| p.fold).collect();
    let gen: Vec<f32> = scores.iter().zip(&same).filter(|p| *p.1).map(|p| *p.0).collect();
    let imp: Vec<f32> = scores.iter().zip(&same).filter(|p| !*p.1).map(|p| *p.0).collect();

    let per_fold = metrics::k_fold(&scores, &same, &folds);
    let accs: Vec<f64> = per_fold.iter().map(|f| f.test_accuracy).collect();
    let (acc_mean, acc_std, acc_se) = metrics::mean_std_se(&accs);
    let t_mean = per_fold.iter().map(|f| f.threshold as f64).sum::<f64>() / per_fold.len().max(1) as f64;

    let tar_at_far: Vec<report::TarAtFar> = FARS.iter().map(|&far| tar_at_far(&gen, &imp, far)).collect();
    let (e, t_eer, far_eer, frr_eer) = metrics::eer(&gen, &imp);
    let roc = metrics::roc(&gen, &imp);
    let t = ctx.threshold;
    let fa = imp.iter().filter(|&&s| s >= t).count();
    let fr = gen.iter().filter(|&&s| s < t).count();
    let stats = |v: &[f32]| {
        let f: Vec<f64> = v.iter().filter(|s| s.is_finite()).map(|&s| s as f64).collect();
        let (m, _, _) = metrics::mean_std_se(&f);
        let sd = (f.iter().map(|x| (x - m).powi(2)).sum::<f64>() / f.len().max(1) as f64).sqrt();
        let min = f.iter().copied().fold(f64::INFINITY, f64::min);
        let max = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (m, sd, min, max)
    };
    let (gm, gs, gmin, _) = stats(&gen);
    let (im, is, _, imax) = stats(&imp);
    let mut top: Vec<f64> = imp.iter().filter(|s| s.is_finite()).map(|&s| r(s as f64, 4)).collect();
    top.sort_by(|a, b| b.total_cmp(a));
    top.truncate(10);

    let mut plots = Vec::new();
    if let Some(prefix) = &args.plots {
        let title = args.pairs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let curve: Vec<(f64, f64)> = roc.iter().map(|p| (p.far, p.tar)).collect();
        let mut marks: Vec<(String, f64, f64)> = tar_at_far
            .iter()
            .filter_map(|x| Some((format!("FAR {}", far_label(x.target_far)), x.observed_far?, x.tar?)))
            .filter(|m| m.1 > 0.0)
            .collect();
        marks.push((format!("t={t:.3}"), metrics::accept_rate(&imp, t), metrics::accept_rate(&gen, t)));
        let p = plot_path(prefix, "roc");
        plot::roc(&p, &format!("ROC, {title}"), &curve, &marks)?;
        plots.push(p.to_string_lossy().into_owned());
        let det: Vec<(f64, f64)> = roc.iter().map(|p| (p.far, 1.0 - p.tar)).collect();
        let det_marks: Vec<(String, f64, f64)> = marks.iter().map(|(l, f, tar)| (l.clone(), *f, 1.0 - tar)).collect();
        let p = plot_path(prefix, "det");
        plot::det(&p, &format!("DET, {title}"), &det, &det_marks)?;
        plots.push(p.to_string_lossy().into_owned());
        let p = plot_path(prefix, "hist");
        let mut lines = vec![(format!("t={t:.3}"), t)];
        lines.push((format!("EER {t_eer:.3}"), t_eer));
        plot::histogram(&p, &format!("similarity, {title}"), &gen, &imp, &lines)?;
        plots.push(p.to_string_lossy().into_owned());
    }

    let rule = "a pair with an image without a face is rejected at every threshold: genuine -> false reject, impostor -> correct reject";
    let rep = report::VerifyReport {
        what: "1:1 verification on a pair list; largest face per image; accept when similarity >= threshold",
        pairs_file: args.pairs.to_string_lossy().into_owned(),
        format: list.format,
        pairs: list.pairs.len(),
        genuine_pairs: gen.len(),
        impostor_pairs: imp.len(),
        images: images.len(),
        score: "cosine similarity (dot product of the L2-normalised embeddings)",
        run: run_info(ctx, args.command.clone(), images.len(), started),
        faces_not_found: missing(&images, &seen, &args.images_root, rule),
        genuine_pairs_missing_a_face: gen.iter().filter(|s| !s.is_finite()).count(),
        impostor_pairs_missing_a_face: imp.iter().filter(|s| !s.is_finite()).count(),
        ten_fold: report::KFold {
            folds: per_fold.len(),
            folds_from: list.folds_from.clone(),
            accuracy_mean: r(acc_mean, 5),
            accuracy_std: r(acc_std, 5),
            accuracy_se: r(acc_se, 5),
            threshold_mean: r(t_mean, 4),
            per_fold: per_fold
                .iter()
                .map(|f| metrics::FoldResult {
                    threshold: r(f.threshold as f64, 4) as f32,
                    train_accuracy: r(f.train_accuracy, 5),
                    test_accuracy: r(f.test_accuracy, 5),
                    ..f.clone()
                })
                .collect(),
        },
        at_threshold: report::AtThreshold {
            source: "the threshold in force (--threshold, --config, or the embedder manifest's match_threshold)".into(),
            threshold: t,
            accuracy: r(metrics::accuracy_at(&scores, &same, t), 5),
            tar: r(metrics::accept_rate(&gen, t), 5),
            far: r(metrics::accept_rate(&imp, t), 6),
            far_ci95: metrics::wilson95(fa, imp.len()).map(|v| r(v, 6)),
            false_accepts: fa,
            false_rejects: fr,
        },
        tar_at_far,
        eer: report::Eer { eer: r(e, 5), threshold: t_eer, far: r(far_eer, 5), frr: r(frr_eer, 5) },
        roc_auc: r(metrics::auc(&gen, &imp), 5),
        similarity: report::Similarity {
            genuine_mean: r(gm, 4),
            genuine_std: r(gs, 4),
            impostor_mean: r(im, 4),
            impostor_std: r(is, 4),
            genuine_min: r(gmin, 4),
            impostor_max: r(imax, 4),
            top_impostor_scores: top,
            note: "over pairs where both faces were found; std over pairs (n)",
        },
        plots,
    };

    let m = &rep.faces_not_found;
    writeln!(
        out,
        "faces not found: {} images (+{} unreadable) of {}; pairs affected: {} genuine (false rejects), {} impostor",
        m.images_without_face, m.images_unreadable, images.len(), rep.genuine_pairs_missing_a_face, rep.impostor_pairs_missing_a_face
    )?;
    writeln!(
        out,
        "{}-fold accuracy: {:.2}% ± {:.2} (std; SE {:.2}), mean threshold {:.3}; folds: {}",
        rep.ten_fold.folds,
        100.0 * acc_mean,
        100.0 * acc_std,
        100.0 * acc_se,
        t_mean,
        list.folds_from
    )?;
    let a = &rep.at_threshold;
    writeln!(
        out,
        "at threshold {t:.3}: accuracy {:.2}%, TAR {:.2}%, FAR {:.3}% (95% CI {:.3}-{:.3}%; {} false accepts of {}, {} false rejects of {})",
        100.0 * a.accuracy,
        100.0 * a.tar,
        100.0 * a.far,
        100.0 * a.far_ci95[0],
        100.0 * a.far_ci95[1],
        fa,
        imp.len(),
        fr,
        gen.len()
    )?;
    for x in &rep.tar_at_far {
        match (x.tar, x.threshold, x.threshold_ci95) {
            (Some(tar), Some(th), Some(ci)) => writeln!(
                out,
                "TAR @ FAR {}: {:.2}% at threshold {th:.4} (threshold 95% CI {:.4}-{:.4}){}",
                far_label(x.target_far),
                100.0 * tar,
                ci[0],
                ci[1],
                if x.support == Support::Weak { format!("; weak: {}", x.note) } else { String::new() }
            )?,
            _ => writeln!(out, "TAR @ FAR {}: not measurable: {}", far_label(x.target_far), x.note)?,
        }
    }
    writeln!(out, "EER {:.2}% at threshold {:.4}; ROC AUC {:.5}", 100.0 * e, t_eer, rep.roc_auc)?;
    writeln!(
        out,
        "similarity: genuine {:.3} ± {:.3}, impostor {:.3} ± {:.3}",
        rep.similarity.genuine_mean, rep.similarity.genuine_std, rep.similarity.impostor_mean, rep.similarity.impostor_std
    )?;
    finish(out, args.report.as_deref(), &rep, &rep.plots)?;
    Ok(partial_if(rep.faces_not_found.images_unreadable > 0))
}

fn partial_if(unreadable: bool) -> Outcome {
    if unreadable {
        Outcome::Partial
    } else {
        Outcome::Ok
    }
}

fn finish<T: serde::Serialize>(out: &mut dyn Write, report: Option<&Path>, rep: &T, plots: &[String]) -> Result<()> {
    for p in plots {
        writeln!(out, "plot: {p}")?;
    }
    if let Some(path) = report {
        report::write_json(path, rep)?;
        writeln!(out, "report: {}", path.display())?;
    }
    Ok(())
}

fn tar_at_far(gen: &[f32], imp: &[f32], far: f64) -> report::TarAtFar {
    let t = metrics::threshold_at_far(imp, far);
    let n = imp.len();
    match t {
        Some(t) if t.support != Support::Insufficient => {
            let k = gen.iter().filter(|&&s| s >= t.threshold).count();
            report::TarAtFar {
                target_far: far,
                tar: Some(r(k as f64 / gen.len().max(1) as f64, 5)),
                tar_ci95: Some(metrics::wilson95(k, gen.len()).map(|v| r(v, 5))),
                threshold: Some(t.threshold),
                threshold_ci95: Some(t.threshold_ci95),
                observed_far: Some(r(t.observed_far, 6)),
                impostors: n,
                impostors_allowed_above: t.allowed_above,
                support: t.support,
                note: if t.support == Support::Weak {
                    format!(
                        "only {} of {n} impostor pairs may score above the threshold: it is set by the top {} impostor scores",
                        t.allowed_above,
                        t.allowed_above + 1
                    )
                } else {
                    String::new()
                },
            }
        }
        _ => report::TarAtFar {
            target_far: far,
            tar: None,
            tar_ci95: None,
            threshold: None,
            threshold_ci95: None,
            observed_far: None,
            impostors: n,
            impostors_allowed_above: 0,
            support: Support::Insufficient,
            note: format!("{n} impostor pairs; measuring FAR {} needs at least {:.0}", far_label(far), (1.0 / far).ceil()),
        },
    }
}

/// `eval ident` options.
pub struct IdentArgs {
    pub gallery_dir: PathBuf,
    pub probe_dir: PathBuf,
    pub distractor_dir: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub plots: Option<PathBuf>,
    pub command: String,
}

/// The FPIRs at which DIR is reported.
pub const FPIRS: [f64; 2] = [1e-2, 1e-3];

pub fn ident(ctx: &Context, args: &IdentArgs, calibration: Option<&Calibration>, out: &mut dyn Write) -> Result<Outcome> {
    let started = Instant::now();
    let gallery_people = inputs::people_in(&args.gallery_dir, false)?;
    let probe_people = inputs::people_in(&args.probe_dir, false)?;
    let distractors = args.distractor_dir.as_deref().map(|d| inputs::people_in(d, true)).transpose()?;
    // One batch over every image: (role, name, path).
    let mut items: Vec<(u8, String, PathBuf)> = Vec::new();
    for (role, people) in [(0u8, Some(&gallery_people)), (1, Some(&probe_people)), (2, distractors.as_ref())] {
        for (name, paths) in people.into_iter().flatten() {
            items.extend(paths.iter().map(|p| (role, name.clone(), p.clone())));
        }
    }
    let images: Vec<PathBuf> = items.iter().map(|i| i.2.clone()).collect();
    writeln!(
        out,
        "{} enrolment photos of {} people, {} probe photos, {} distractor photos",
        items.iter().filter(|i| i.0 == 0).count(),
        gallery_people.len(),
        items.iter().filter(|i| i.0 == 1).count(),
        items.iter().filter(|i| i.0 == 2).count()
    )?;
    let seen = embeddings(ctx, &images)?;

    let mut names: Vec<String> = Vec::new();
    let mut templates: Vec<Vec<Vec<f32>>> = Vec::new();
    for ((role, name, _), s) in items.iter().zip(&seen) {
        if let (0, Some(e)) = (role, s.face()) {
            match names.iter().position(|n| n == name) {
                Some(i) => templates[i].push(e.clone()),
                None => {
                    names.push(name.clone());
                    templates.push(vec![e.clone()]);
                }
            }
        }
    }
    if names.is_empty() {
        bail!("no face found in any enrolment photo under {}", args.gallery_dir.display());
    }
    let without: Vec<String> = gallery_people.keys().filter(|n| !names.contains(n)).cloned().collect();
    let mut probes: Vec<ProbeResult> = Vec::new();
    for ((role, name, _), s) in items.iter().zip(&seen) {
        if *role == 0 {
            continue;
        }
        let own = if *role == 1 { names.iter().position(|n| n == name) } else { None };
        let scores: Vec<f32> = match s.face() {
            Some(e) => templates
                .iter()
                .map(|ts| ts.iter().map(|t| cosine(t, e)).fold(f32::NEG_INFINITY, f32::max))
                .collect(),
            None => vec![f32::NEG_INFINITY; names.len()],
        };
        probes.push(metrics::probe_result(&scores, own));
    }
    let mated = probes.iter().filter(|p| p.mated_score.is_some()).count();
    let nonmated = probes.len() - mated;
    if mated == 0 {
        bail!("no probe photo belongs to an enrolled person (probe folders are named like gallery folders)");
    }
    let cmc = metrics::cmc(&probes, 20.min(names.len()));
    let dir: Vec<metrics::OpenSetPoint> = if nonmated > 0 {
        FPIRS.iter().filter_map(|&f| metrics::dir_at_fpir(&probes, f)).collect()
    } else {
        Vec::new()
    };
    let mut at = BTreeMap::new();
    at.insert(format!("threshold in force {:.4}", ctx.threshold), metrics::open_set_at_threshold(&probes, ctx.threshold));
    if let Some(c) = calibration {
        let (t, past) = c.threshold_for_gallery(names.len());
        let key = format!("1:N rule for N={} (FPIR target {}){}", names.len(), c.one_to_n.as_ref().map_or(c.far, |o| o.fpir), if past { ", past the table" } else { "" });
        at.insert(key, metrics::open_set_at_threshold(&probes, t));
    }

    let mut plots = Vec::new();
    if let Some(prefix) = &args.plots {
        let p = plot_path(prefix, "cmc");
        plot::cmc(&p, &format!("closed set: N={} identities", names.len()), &cmc)?;
        plots.push(p.to_string_lossy().into_owned());
        if nonmated > 0 {
            let mut ts: Vec<f32> = probes.iter().filter(|p| p.mated_score.is_none()).map(|p| p.best()).filter(|s| s.is_finite()).collect();
            ts.sort_by(|a, b| b.total_cmp(a));
            let curve: Vec<(f64, f64)> = ts
                .iter()
                .map(|&t| {
                    let o = metrics::open_set_at_threshold(&probes, t);
                    (o.fpir, o.dir)
                })
                .collect();
            let marks: Vec<(String, f64, f64)> = at.iter().map(|(_, o)| (format!("t={:.3}", o.threshold), o.fpir, o.dir)).filter(|m| m.1 > 0.0).collect();
            let p = plot_path(prefix, "dir-fpir");
            plot::dir_fpir(&p, &format!("open set: N={}, {nonmated} unknown faces", names.len()), &curve, &marks)?;
            plots.push(p.to_string_lossy().into_owned());
        }
    }
    let root = common_root(&[&args.gallery_dir, &args.probe_dir]);
    let rep = report::IdentReport {
        what: "identification: every probe's largest face against an in-memory gallery (identity score = best template)",
        gallery_dir: args.gallery_dir.to_string_lossy().into_owned(),
        probe_dir: args.probe_dir.to_string_lossy().into_owned(),
        distractor_dir: args.distractor_dir.as_ref().map(|d| d.to_string_lossy().into_owned()),
        split: "gallery: every photo under the gallery folder; mated probes: probe photos of enrolled people; non-mated probes: distractor photos and probe photos of people not enrolled".into(),
        run: run_info(ctx, args.command.clone(), images.len(), started),
        faces_not_found: missing(
            &images,
            &seen,
            &root,
            "enrolment photo without a face: not enrolled; probe without a face: a miss (mated) or a correct rejection (non-mated)",
        ),
        gallery_identities: names.len(),
        gallery_templates: templates.iter().map(Vec::len).sum(),
        gallery_people_without_face: without,
        mated_probes: mated,
        nonmated_probes: nonmated,
        rank_1: r(metrics::rank_k(&probes, 1), 5),
        rank_5: r(metrics::rank_k(&probes, 5), 5),
        cmc: cmc.iter().map(|&v| r(v, 5)).collect(),
        dir_at_fpir: dir,
        at_thresholds: at,
        plots,
    };
    writeln!(out, "gallery: {} identities ({} templates); probes: {mated} mated, {nonmated} non-mated", rep.gallery_identities, rep.gallery_templates)?;
    writeln!(
        out,
        "faces not found: {} images (+{} unreadable)",
        rep.faces_not_found.images_without_face, rep.faces_not_found.images_unreadable
    )?;
    writeln!(out, "rank-1 {:.2}%, rank-5 {:.2}%", 100.0 * rep.rank_1, 100.0 * rep.rank_5)?;
    for d in &rep.dir_at_fpir {
        writeln!(
            out,
            "DIR @ FPIR {}: {}",
            far_label(d.target_fpir),
            match d.support {
                Support::Insufficient => format!("not measurable: {} non-mated probes, needs at least {:.0}", d.nonmated, (1.0 / d.target_fpir).ceil()),
                s => format!(
                    "{:.2}% at threshold {:.4} (95% CI {:.4}-{:.4}), observed FPIR {:.3}%{}",
                    100.0 * d.dir,
                    d.threshold,
                    d.threshold_ci95[0],
                    d.threshold_ci95[1],
                    100.0 * d.fpir,
                    if s == Support::Weak { "; weak: set by the top few non-mated scores" } else { "" }
                ),
            }
        )?;
    }
    if nonmated == 0 {
        writeln!(out, "DIR @ FPIR: no non-mated probes (give --distractor-dir or probe folders of people not enrolled)")?;
    }
    for (k, o) in &rep.at_thresholds {
        writeln!(out, "at {k} = {:.4}: DIR {:.2}%, FPIR {:.3}%", o.threshold, 100.0 * o.dir, 100.0 * o.fpir)?;
    }
    finish(out, args.report.as_deref(), &rep, &rep.plots)?;
    Ok(partial_if(rep.faces_not_found.images_unreadable > 0))
}

/// The longest common leading folder of some paths (for shorter paths in reports).
fn common_root(paths: &[&Path]) -> PathBuf {
    let mut root: Option<PathBuf> = None;
    for p in paths {
        let parent = p.parent().unwrap_or(p).to_path_buf();
        root = Some(match root {
            None => parent,
            Some(r) => r.ancestors().find(|a| parent.starts_with(a)).map(Path::to_path_buf).unwrap_or_default(),
        });
    }
    root.unwrap_or_default()
}

/// `eval attrs` options.
pub struct AttrsArgs {
    pub labels: Vec<PathBuf>,
    pub images_root: PathBuf,
    pub report: Option<PathBuf>,
    pub plots: Option<PathBuf>,
    pub command: String,
}

pub fn attrs(ctx: &Context, args: &AttrsArgs, out: &mut dyn Write) -> Result<Outcome> {
    let started = Instant::now();
    if !ctx.pipeline.has_attributes() {
        bail!("the age and gender model is not loaded");
    }
    let sets: Vec<Vec<inputs::Label>> =
        args.labels.iter().map(|l| inputs::read_labels(l, &args.images_root)).collect::<Result<_>>()?;
    let images: Vec<PathBuf> = sets.iter().flatten().map(|l| l.path.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let index: BTreeMap<&PathBuf, usize> = images.iter().enumerate().map(|(i, p)| (p, i)).collect();
    writeln!(out, "{} labelled photos in {} list(s)", images.len(), sets.len())?;
    let seen = analyse_all(ctx, &images, Want { embedding: false, attributes: true, liveness: false }, |f| Some((f.analysis.age?, f.analysis.male_prob?)))?;
    let mut rep_sets = Vec::new();
    for (file, labels) in args.labels.iter().zip(&sets) {
        let samples: Vec<metrics::AttrSample> = labels
            .iter()
            .map(|l| metrics::AttrSample { age: l.age, male: l.male, predicted: seen[index[&l.path]].face().copied() })
            .collect();
        let mut scores = metrics::attribute_scores(&samples);
        for s in &mut scores {
            s.age_mae = r(s.age_mae, 3);
            s.age_bias = r(s.age_bias, 3);
            s.gender_accuracy = r(s.gender_accuracy, 5);
        }
        let unreadable = labels.iter().filter(|l| matches!(seen[index[&l.path]], Seen::Unreadable(_))).count();
        let nf: Vec<String> =
            labels.iter().filter(|l| seen[index[&l.path]].face().is_none()).map(|l| shown(&l.path, &args.images_root)).collect();
        rep_sets.push(report::AttrSet {
            labels_file: file.to_string_lossy().into_owned(),
            photos: labels.len(),
            unreadable,
            scores,
            faces_not_found_files: nf,
        });
    }
    let mut plots = Vec::new();
    if let Some(prefix) = &args.plots {
        let mut bands: Vec<String> = Vec::new();
        for s in rep_sets.iter().flat_map(|s| s.scores.iter().skip(1)) {
            if !bands.contains(&s.label) {
                bands.push(s.label.clone());
            }
        }
        let series = |f: fn(&metrics::AttrScore) -> f64| -> Vec<(String, Vec<f64>)> {
            rep_sets
                .iter()
                .map(|s| {
                    let name = Path::new(&s.labels_file).file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    let v = bands.iter().map(|b| s.scores.iter().find(|x| &x.label == b).map_or(f64::NAN, f)).collect();
                    (format!("{name} (all: {:.2})", f(&s.scores[0])), v)
                })
                .collect()
        };
        let p = plot_path(prefix, "age-mae");
        plot::bars(&p, "age error by true age band", "mean absolute error (years)", &bands, &series(|s| s.age_mae))?;
        plots.push(p.to_string_lossy().into_owned());
        let p = plot_path(prefix, "gender");
        plot::bars(&p, "gender accuracy by true age band", "gender accuracy (%)", &bands, &series(|s| 100.0 * s.gender_accuracy))?;
        plots.push(p.to_string_lossy().into_owned());
    }
    let rep = report::AttrsReport {
        what: "age and gender of the largest face per labelled photo",
        rules: "male = male_prob >= 0.5 (as analyze); age = the age output; photos without a face are left out of MAE and accuracy and listed",
        run: run_info(ctx, args.command.clone(), images.len(), started),
        sets: rep_sets,
        plots,
    };
    for s in &rep.sets {
        writeln!(out, "{}: {} photos, {} without a face ({} unreadable)", s.labels_file, s.photos, s.faces_not_found_files.len(), s.unreadable)?;
        for b in &s.scores {
            writeln!(
                out,
                "  {:>6}: n={:4}  age MAE {:6.2} (bias {:+.2})  gender {:6.2}%",
                b.label,
                b.n,
                b.age_mae,
                b.age_bias,
                100.0 * b.gender_accuracy
            )?;
        }
    }
    finish(out, args.report.as_deref(), &rep, &rep.plots)?;
    Ok(partial_if(rep.sets.iter().any(|s| s.unreadable > 0)))
}

/// `calibrate` options.
pub struct CalibrateArgs {
    pub far: f64,
    pub fpir: Option<f64>,
    pub pairs: Option<PathBuf>,
    pub people_dir: Option<PathBuf>,
    pub images_root: PathBuf,
    pub gallery: Option<PathBuf>,
    pub unknown_dir: Option<PathBuf>,
    pub write: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub plots: Option<PathBuf>,
    pub command: String,
}

/// Above this many cross-person comparisons, `--people-dir` takes an even sample of them.
pub const MAX_COMPARISONS: usize = 50_000_000;

/// Rows of the 1:N table: per-comparison FARs in 1-2-5 steps from `start` down, while at least
/// `min_above` impostor comparisons may score above the threshold.
fn far_steps(start: f64, n: usize, min_above: usize) -> Vec<f64> {
    let mut v = Vec::new();
    let mut f = start;
    let mut i = 0;
    while (f * n as f64 + 1e-9).floor() as usize >= min_above && f > 0.0 {
        v.push(f);
        // 1 → 0.5 → 0.2 → 0.1 of the start, then repeat a decade lower; 12 significant
        // digits keep 5e-6 from becoming 4.9999999999999996e-6.
        let decade = start / 10f64.powi(i / 3 + 1);
        f = match i % 3 {
            0 => decade * 5.0,
            1 => decade * 2.0,
            _ => decade,
        };
        f = format!("{f:.12e}").parse().unwrap_or(f);
        i += 1;
    }
    v
}

/// Impostor comparisons at or above this similarity are the same photo filed under two
/// people (a labelling error of the data, not a face that looks alike): `calibrate` leaves
/// them out and lists them.
pub const DUPLICATE_SIMILARITY: f32 = 0.99;

/// Table rows need at least this many impostor comparisons above the threshold.
pub const MIN_ABOVE_FOR_TABLE: usize = 10;

/// Rounds a threshold up at 4 decimals (a rounded threshold never accepts more impostors),
/// within the cosine range.
fn round_up4(t: f32) -> f32 {
    round_up4_within(t, [-1.0, 1.0])
}

/// Rounds a threshold up at 4 decimals, within `[lo, hi]`.
pub(crate) fn round_up4_within(t: f32, [lo, hi]: [f64; 2]) -> f32 {
    ((t as f64 * 1e4).ceil() / 1e4).clamp(lo, hi) as f32
}

pub fn calibrate(ctx: &Context, args: &CalibrateArgs, out: &mut dyn Write) -> Result<Outcome> {
    let started = Instant::now();
    if !(args.far > 0.0 && args.far < 1.0) {
        bail!("--far {} must be in (0, 1)", args.far);
    }
    let fpir = args.fpir.unwrap_or(args.far);
    if !(fpir > 0.0 && fpir < 1.0) {
        bail!("--fpir {fpir} must be in (0, 1)");
    }
    if args.pairs.is_some() && args.people_dir.is_some() {
        bail!("give --pairs or --people-dir, not both");
    }
    if args.gallery.is_some() != args.unknown_dir.is_some() {
        bail!("--gallery and --unknown-dir go together: unknown faces are compared with the installed gallery");
    }
    if args.pairs.is_none() && args.people_dir.is_none() && args.gallery.is_none() {
        bail!("nothing to calibrate on: give --pairs FILE, --people-dir DIR, or --gallery G --unknown-dir DIR (or, for liveness, --spoof-labels FILE --apcer A)");
    }
    // The installed gallery first: a damaged or foreign one fails before the long part.
    let gallery = args.gallery.as_deref().map(|g| ctx.open_gallery(g)).transpose()?;

    // Images to analyse: the pair list's or the people's, then the unknown faces.
    let mut images: Vec<PathBuf> = Vec::new();
    let pair_list = args.pairs.as_deref().map(|p| inputs::read_pairs(p, &args.images_root)).transpose()?;
    if let Some(list) = &pair_list {
        images = list.pairs.iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect::<BTreeSet<_>>().into_iter().collect();
    }
    let mut person_of: Vec<usize> = Vec::new();
    if let Some(dir) = &args.people_dir {
        for (i, (_, paths)) in inputs::people_in(dir, false)?.into_iter().enumerate() {
            person_of.extend(std::iter::repeat_n(i, paths.len()));
            images.extend(paths);
        }
    }
    let n_main = images.len();
    let unknown = args.unknown_dir.as_deref().map(inputs::images_in_tree).transpose()?.unwrap_or_default();
    if args.unknown_dir.is_some() && unknown.is_empty() {
        bail!("no images under {}", args.unknown_dir.as_deref().unwrap_or(Path::new("")).display());
    }
    images.extend(unknown.iter().cloned());
    writeln!(out, "analysing {} images", images.len())?;
    let seen = embeddings(ctx, &images)?;

    let (mut gen, mut imp): (Vec<f32>, Vec<f32>) = (Vec::new(), Vec::new());
    let mut duplicates: Vec<[String; 2]> = Vec::new();
    let data;
    if let Some(list) = &pair_list {
        let index: BTreeMap<&PathBuf, usize> = images[..n_main].iter().enumerate().map(|(i, p)| (p, i)).collect();
        for p in &list.pairs {
            let s = match (seen[index[&p.a]].face(), seen[index[&p.b]].face()) {
                (Some(a), Some(b)) => cosine(a, b),
                _ => f32::NEG_INFINITY,
            };
            if p.same {
                gen.push(s)
            } else if s >= DUPLICATE_SIMILARITY {
                duplicates.push([shown(&p.a, &args.images_root), shown(&p.b, &args.images_root)]);
            } else {
                imp.push(s)
            }
        }
        data = format!("impostor pairs of {}", args.pairs.as_deref().unwrap_or(Path::new("")).display());
    } else if let Some(dir) = &args.people_dir {
        let found: Vec<(usize, &Vec<f32>, &PathBuf)> =
            (0..n_main).filter_map(|i| Some((person_of[i], seen[i].face()?, &images[i]))).collect();
        let total = found.len() * found.len().saturating_sub(1) / 2;
        let stride = total.div_ceil(MAX_COMPARISONS).max(1);
        let mut k = 0usize;
        for i in 0..found.len() {
            for j in i + 1..found.len() {
                k += 1;
                if stride > 1 && k % stride != 0 {
                    continue;
                }
                let s = cosine(found[i].1, found[j].1);
                if found[i].0 == found[j].0 {
                    gen.push(s)
                } else if s >= DUPLICATE_SIMILARITY {
                    duplicates.push([shown(found[i].2, dir), shown(found[j].2, dir)]);
                } else {
                    imp.push(s)
                }
            }
        }
        let people = person_of.iter().collect::<BTreeSet<_>>().len();
        data = format!(
            "every pair of photos of different people under {} ({people} people, {} photos with a face{})",
            dir.display(),
            found.len(),
            if stride > 1 { format!(", every {stride}th pair") } else { String::new() }
        );
    } else {
        data = String::new();
    }

    let mut far_table = Vec::new();
    let mut one_to_one = None;
    if !imp.is_empty() {
        one_to_one = metrics::threshold_at_far(&imp, args.far);
        far_table = far_steps(fpir, imp.len(), MIN_ABOVE_FOR_TABLE).into_iter().filter_map(|f| metrics::threshold_at_far(&imp, f)).collect();
    }
    let installed = match (&gallery, args.unknown_dir.as_ref()) {
        (Some(g), Some(_)) => {
            let n = g.len();
            if n == 0 {
                bail!("the installed gallery is empty");
            }
            let best: Vec<f32> = seen[n_main..]
                .iter()
                .map(|s| match s.face() {
                    Some(e) => Ok(g.best(e)?.map_or(f32::NEG_INFINITY, |m| m.similarity)),
                    None => Ok(f32::NEG_INFINITY),
                })
                .collect::<Result<_>>()?;
            Some((n, best))
        }
        _ => None,
    };

    // The calibration: the 1:1 threshold from the impostor comparisons when there are any,
    // else (unknown faces against the gallery only) the gallery's direct 1:N threshold.
    let method = args.command.clone();
    let mut cal = match &one_to_one {
        Some(t) => Calibration {
            threshold: round_up4(t.threshold),
            far: args.far,
            threshold_ci95: t.threshold_ci95.map(round_up4),
            impostor_comparisons: imp.len() as u64,
            data: data.clone(),
            method,
            // No row: too few comparisons to say anything about the 1:N rule.
            one_to_n: (!far_table.is_empty()).then(|| OneToN {
                fpir,
                rule: ONE_TO_N_RULE.into(),
                far_table: far_table.iter().map(|f| [f.target_far, round_up4(f.threshold).to_string().parse().unwrap_or(1.0)]).collect(),
                gallery_size: None,
                gallery_threshold: None,
            }),
        },
        None => {
            let (n, best) = installed.as_ref().context("no impostor comparisons")?;
            let t = metrics::threshold_at_far(best, fpir).context("no unknown faces")?;
            Calibration {
                threshold: round_up4(t.threshold),
                far: fpir,
                threshold_ci95: t.threshold_ci95.map(round_up4),
                impostor_comparisons: best.len() as u64,
                data: format!("{} unknown faces under {} against the installed gallery ({n} identities)", best.len(), args.unknown_dir.as_deref().unwrap_or(Path::new("")).display()),
                method,
                one_to_n: None,
            }
        }
    };
    let mut check = None;
    if let Some((n, best)) = &installed {
        let (rule_t, past) = cal.threshold_for_gallery(*n);
        let direct = metrics::threshold_at_far(best, fpir);
        if let (Some(rule), Some(d)) = (cal.one_to_n.as_mut(), &direct) {
            rule.gallery_size = Some(*n);
            rule.gallery_threshold = Some(round_up4(d.threshold));
        }
        check = Some(report::OneToNCheck {
            gallery_size: *n,
            unknown_faces: best.len(),
            rule_threshold: rule_t,
            rule_past_table: past,
            observed_fpir_at_rule: r(metrics::accept_rate(best, rule_t), 6),
            direct,
        });
    }
    cal.validate().context("the calibration came out inconsistent")?;

    let mut plots = Vec::new();
    if let (Some(prefix), Some(t)) = (&args.plots, &one_to_one) {
        let mut sorted_imp = imp.clone();
        sorted_imp.sort_by(f32::total_cmp);
        let lo = sorted_imp.iter().copied().find(|s| s.is_finite()).unwrap_or(-1.0).max(-1.0);
        let curve: Vec<(f64, f64)> = (0..=400)
            .map(|i| {
                let th = lo + (1.0 - lo) * i as f32 / 400.0;
                let above = sorted_imp.len() - sorted_imp.partition_point(|&s| s < th);
                (th as f64, above as f64 / sorted_imp.len() as f64)
            })
            .collect();
        let p = plot_path(prefix, "far");
        plot::far_curve(
            &p,
            &format!("FAR vs threshold, {} impostors", imp.len()),
            &curve,
            (t.threshold as f64, args.far),
            [t.threshold_ci95[0] as f64, t.threshold_ci95[1] as f64],
        )?;
        plots.push(p.to_string_lossy().into_owned());
    }

    let caveat = "intervals assume independent comparisons; comparisons that share a photo or a person are not, so the true uncertainty is wider, and a threshold measured on one population (here the calibration data) may not hold on another";
    let fa = imp.iter().filter(|&&s| s >= cal.threshold).count();
    let rep = report::CalibrationReport {
        what: "calibrated thresholds: 1:1 at a false-accept rate, and the 1:N rule",
        run: run_info(ctx, args.command.clone(), images.len(), started),
        data: cal.data.clone(),
        faces_not_found: missing(
            &images,
            &seen,
            args.people_dir.as_deref().unwrap_or(&args.images_root),
            "images without a face take part in no comparison",
        ),
        impostor_comparisons: imp.len(),
        genuine_comparisons: gen.len(),
        one_to_one: one_to_one.clone(),
        far_ci95_at_threshold: (!imp.is_empty()).then(|| metrics::wilson95(fa, imp.len())),
        tar_at_threshold: (!gen.is_empty()).then(|| r(metrics::accept_rate(&gen, cal.threshold), 5)),
        far_table,
        duplicates_left_out: duplicates.len(),
        duplicate_pairs: duplicates.iter().take(50).cloned().collect(),
        top_impostor_scores: {
            let mut top: Vec<f32> = imp.iter().copied().filter(|s| s.is_finite()).collect();
            top.sort_by(|a, b| b.total_cmp(a));
            top.truncate(20);
            top
        },
        installed_gallery: check,
        calibration: cal.clone(),
        caveat,
        plots,
    };

    writeln!(
        out,
        "faces not found: {} images (+{} unreadable) of {}",
        rep.faces_not_found.images_without_face,
        rep.faces_not_found.images_unreadable,
        images.len()
    )?;
    if !duplicates.is_empty() {
        writeln!(
            out,
            "{} comparisons of different people at similarity >= {DUPLICATE_SIMILARITY} left out: the same photo under two names (listed in the report)",
            duplicates.len()
        )?;
    }
    if let Some(t) = &one_to_one {
        writeln!(
            out,
            "1:1 threshold for FAR {}: {:.4} (95% CI {:.4}-{:.4}) from {} impostor comparisons ({}; {} may score above){}",
            far_label(args.far),
            cal.threshold,
            cal.threshold_ci95[0],
            cal.threshold_ci95[1],
            imp.len(),
            data,
            t.allowed_above,
            match t.support {
                Support::Adequate => String::new(),
                Support::Weak => "; weak: set by the top few impostor scores".into(),
                Support::Insufficient => format!("; insufficient: FAR {} needs at least {:.0} comparisons, the threshold only clears every impostor seen", far_label(args.far), (1.0 / args.far).ceil()),
            }
        )?;
        if let Some(tar) = rep.tar_at_threshold {
            writeln!(out, "  TAR there: {:.2}% of {} genuine comparisons", 100.0 * tar, gen.len())?;
        }
    }
    if let Some(rule) = &cal.one_to_n {
        let sizes: Vec<String> = [1usize, 10, 100, 1000, 10_000]
            .iter()
            .map(|&n| {
                let (t, past) = cal.threshold_for_gallery(n);
                format!("N={n}: {t:.4}{}", if past { " (past the data)" } else { "" })
            })
            .collect();
        writeln!(out, "1:N rule for FPIR {}: {}", far_label(rule.fpir), sizes.join(", "))?;
    }
    if let Some(c) = &rep.installed_gallery {
        writeln!(
            out,
            "installed gallery: {} identities, {} unknown faces; rule threshold {:.4} gives FPIR {:.3}%{}",
            c.gallery_size,
            c.unknown_faces,
            c.rule_threshold,
            100.0 * c.observed_fpir_at_rule,
            match &c.direct {
                Some(d) => format!("; measured directly: {:.4} (95% CI {:.4}-{:.4}) for FPIR {}", d.threshold, d.threshold_ci95[0], d.threshold_ci95[1], far_label(fpir)),
                None => String::new(),
            }
        )?;
    }
    if let Some(path) = &args.write {
        let mut config = if path.exists() { Config::load(path)? } else { Config::default() };
        config.calibration = Some(cal.clone());
        config.save(path)?;
        writeln!(out, "written to {} (use it with --config {})", path.display(), path.display())?;
    }
    finish(out, args.report.as_deref(), &rep, &rep.plots)?;
    Ok(partial_if(rep.faces_not_found.images_unreadable > 0))
}
