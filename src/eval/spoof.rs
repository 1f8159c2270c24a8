//! `eval spoof` and `calibrate --spoof-labels`: presentation-attack detection measured as
//! ISO/IEC 30107-3 does, on a labelled list of live and attack photos.
//!
//! Each image is analysed once (largest face, liveness only) and scored by the fused live
//! probability. Images without a face, or that could not be read or scored, are
//! non-responses: counted per class and species and left out of APCER and BPCER, as the
//! standard reports failure to acquire apart. The rates come from [`super::pad`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use super::inputs::{self, SpoofLabel};
use super::pad::{self, ErrorCount, Species, SpeciesApcer};
use super::report::{self, r, NonResponses, PadCounts, ScoredFile};
use super::{analyse_all, finish, partial_if, plot, plot_path, run_info, shown, Seen};
use crate::commands::{Context, Outcome};
use crate::config::Config;
use crate::liveness::LivenessCalibration;
use crate::pipeline::Want;

/// The APCER targets at which BPCER is reported.
pub const APCERS: [f64; 3] = [0.01, 0.05, 0.10];

const NON_RESPONSE_RULE: &str = "no face found, or the image could not be read or scored: a failure to acquire, counted apart and left out of APCER and BPCER (ISO/IEC 30107-3)";

const CAVEAT: &str = "intervals assume independent presentations; several photos of one person, one attack instrument or one session are not, so the true uncertainty is wider, and rates measured on these species, this camera and this light may not hold for others";

/// A list scored: the labels, what became of each image, and the scores by class.
struct ScoredList {
    labels: Vec<SpoofLabel>,
    seen: Vec<Seen<f32>>,
    presentations: PadCounts,
    scored: PadCounts,
    species: Species,
    live: Vec<f32>,
}

fn class(l: &SpoofLabel) -> &str {
    l.attack.as_deref().unwrap_or("live")
}

fn count(counts: &mut PadCounts, l: &SpoofLabel) {
    match &l.attack {
        None => counts.bona_fide += 1,
        Some(s) => {
            counts.attacks += 1;
            *counts.attacks_per_species.entry(s.clone()).or_default() += 1;
        }
    }
}

fn score_list(ctx: &Context, labels_file: &Path, root: &Path, out: &mut dyn Write) -> Result<ScoredList> {
    if ctx.pipeline.liveness.is_none() {
        bail!("the liveness models are not loaded");
    }
    let labels = inputs::read_spoof_labels(labels_file, root)?;
    let mut presentations = PadCounts::default();
    labels.iter().for_each(|l| count(&mut presentations, l));
    writeln!(
        out,
        "{}: {} presentations: {} live, {} attacks ({})",
        labels_file.display(),
        labels.len(),
        presentations.bona_fide,
        presentations.attacks,
        species_list(&presentations.attacks_per_species)
    )?;
    let images: Vec<PathBuf> = labels.iter().map(|l| l.path.clone()).collect();
    let seen = analyse_all(ctx, &images, Want { embedding: false, attributes: false, liveness: true }, |f| f.analysis.liveness)?;
    let (mut species, mut live, mut scored) = (Species::new(), Vec::new(), PadCounts::default());
    for (l, s) in labels.iter().zip(&seen) {
        if let Some(&v) = s.face() {
            count(&mut scored, l);
            match &l.attack {
                None => live.push(v),
                Some(name) => species.entry(name.clone()).or_default().push(v),
            }
        }
    }
    Ok(ScoredList { labels, seen, presentations, scored, species, live })
}

impl ScoredList {
    fn non_responses(&self, root: &Path) -> NonResponses {
        let mut n = NonResponses { rule: NON_RESPONSE_RULE, counts: PadCounts::default(), unreadable: 0, files: Vec::new() };
        for (l, s) in self.labels.iter().zip(&self.seen) {
            let reason = match s {
                Seen::Face(_) => continue,
                Seen::NoFace => "no face found".to_string(),
                Seen::Unreadable(e) => {
                    n.unreadable += 1;
                    e.clone()
                }
            };
            count(&mut n.counts, l);
            n.files.push(ScoredFile { file: shown(&l.path, root), class: class(l).into(), score: None, reason: Some(reason) });
        }
        n
    }

    /// Up to `n` scored presentations of one class, most nearly misjudged first.
    fn extremes(&self, root: &Path, attacks: bool, n: usize) -> Vec<ScoredFile> {
        let mut v: Vec<(&SpoofLabel, f32)> = self
            .labels
            .iter()
            .zip(&self.seen)
            .filter(|(l, _)| l.attack.is_some() == attacks)
            .filter_map(|(l, s)| Some((l, *s.face()?)))
            .collect();
        v.sort_by(|a, b| if attacks { b.1.total_cmp(&a.1) } else { a.1.total_cmp(&b.1) });
        v.into_iter()
            .take(n)
            .map(|(l, s)| ScoredFile { file: shown(&l.path, root), class: class(l).into(), score: Some(r(s as f64, 4) as f32), reason: None })
            .collect()
    }

    fn pooled_attacks(&self) -> Vec<f32> {
        self.species.values().flatten().copied().collect()
    }
}

fn species_list(counts: &BTreeMap<String, usize>) -> String {
    counts.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", ")
}

fn rounded(c: &ErrorCount) -> ErrorCount {
    ErrorCount { rate: r(c.rate, 5), ci95: c.ci95.map(|v| r(v, 5)), ..c.clone() }
}

fn rounded_species(v: &[SpeciesApcer]) -> Vec<SpeciesApcer> {
    v.iter().map(|s| SpeciesApcer { species: s.species.clone(), apcer: rounded(&s.apcer) }).collect()
}

/// "12.50% (1 of 8, 95% CI 2.24-47.09%)".
fn pct(c: &ErrorCount) -> String {
    if c.presentations == 0 {
        return "not measured (no presentations with a face)".into();
    }
    format!("{:.2}% ({} of {}, 95% CI {:.2}-{:.2}%)", 100.0 * c.rate, c.errors, c.presentations, 100.0 * c.ci95[0], 100.0 * c.ci95[1])
}

fn percent(v: f64) -> String {
    format!("{}%", r(100.0 * v, 4))
}

fn liveness_models() -> Result<Vec<report::ModelRef>> {
    crate::liveness::MODELS
        .iter()
        .map(|&name| Ok(report::ModelRef { name: name.into(), sha256: crate::model::embedded_manifest(name)?.sha256 }))
        .collect()
}

fn histogram(path: &Path, title: &str, list: &ScoredList, lines: &[(String, f32)]) -> Result<()> {
    let scale = plot::HistScale {
        lo: 0.0,
        x_desc: "liveness (fused live probability)",
        y_desc: "fraction of presentations per 0.02 bin",
        names: ["live", "attack"],
    };
    plot::histogram_on(path, title, &scale, &list.live, &list.pooled_attacks(), lines)
}

/// `eval spoof` options.
pub struct SpoofArgs {
    pub labels: PathBuf,
    pub images_root: PathBuf,
    pub report: Option<PathBuf>,
    pub plots: Option<PathBuf>,
    pub command: String,
}

pub fn spoof(ctx: &Context, args: &SpoofArgs, out: &mut dyn Write) -> Result<Outcome> {
    let started = Instant::now();
    let list = score_list(ctx, &args.labels, &args.images_root, out)?;
    let root = &args.images_root;
    let t = ctx.liveness_threshold;
    let per = pad::apcer_per_species(&list.species, t);
    let worst = pad::apcer_max(&per).cloned();
    let bpcer = pad::bpcer(&list.live, t);
    let acer = pad::acer(worst.as_ref().map_or(f64::NAN, |w| w.apcer.rate), bpcer.rate);
    let at_apcer: Vec<pad::BpcerAtApcer> = APCERS.iter().map(|&a| pad::bpcer_at_apcer(&list.species, &list.live, a)).collect();
    let pooled = list.pooled_attacks();
    let (eer, t_eer, apcer_eer, bpcer_eer) = metrics_eer(&list.live, &pooled);
    let auc = if list.live.is_empty() || pooled.is_empty() { f64::NAN } else { super::metrics::auc(&list.live, &pooled) };

    let mut plots = Vec::new();
    if let Some(prefix) = &args.plots {
        let title = args.labels.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let curve: Vec<(f64, f64)> = pad::det(&list.species, &list.live).iter().map(|p| (p.apcer_max, p.bpcer)).collect();
        let mut marks = vec![(format!("t={t:.3}"), worst.as_ref().map_or(f64::NAN, |w| w.apcer.rate), bpcer.rate)];
        marks.extend(at_apcer.iter().filter_map(|a| Some((format!("APCER {}", percent(a.target_apcer)), a.apcer_max?, a.bpcer.as_ref()?.rate))));
        marks.retain(|m| m.1 > 0.0 && m.2 > 0.0);
        let p = plot_path(prefix, "det");
        plot::det_with_axes(&p, &format!("PAD DET, {title}"), ("APCER (worst species)", "BPCER"), &curve, &marks)?;
        plots.push(p.to_string_lossy().into_owned());
        let mut lines = vec![(format!("t={t:.3}"), t)];
        if t_eer.is_finite() {
            lines.push((format!("EER {t_eer:.3}"), t_eer));
        }
        let p = plot_path(prefix, "hist");
        histogram(&p, &format!("liveness, {title}"), &list, &lines)?;
        plots.push(p.to_string_lossy().into_owned());
    }

    let rep = report::SpoofReport {
        what: "presentation-attack detection after ISO/IEC 30107-3 on a live/spoof list; largest face per image; judged live when liveness >= threshold",
        labels_file: args.labels.to_string_lossy().into_owned(),
        images_root: root.to_string_lossy().into_owned(),
        score: "liveness: the mean of the liveness models' live-class probabilities",
        liveness_models: liveness_models()?,
        run: run_info(ctx, args.command.clone(), list.labels.len(), started),
        non_responses: list.non_responses(root),
        at_threshold: report::PadAtThreshold {
            source: "the threshold in force (--liveness-threshold, [liveness] threshold of --config, or the shipped one)".into(),
            threshold: t,
            apcer_per_species: rounded_species(&per),
            apcer_max: worst.as_ref().map(|w| SpeciesApcer { species: w.species.clone(), apcer: rounded(&w.apcer) }),
            bpcer: rounded(&bpcer),
            acer: report::Acer { value: r(acer, 5), note: report::ACER_NOTE },
        },
        bpcer_at_apcer: at_apcer
            .iter()
            .map(|a| pad::BpcerAtApcer { apcer_max: a.apcer_max.map(|v| r(v, 5)), bpcer: a.bpcer.as_ref().map(rounded), ..a.clone() })
            .collect(),
        eer: report::PadEer {
            eer: r(eer, 5),
            threshold: t_eer,
            apcer_pooled: r(apcer_eer, 5),
            bpcer: r(bpcer_eer, 5),
            note: "over all attacks pooled (APCER_max does not pool; this is a summary of separation only)",
        },
        roc_auc: r(auc, 5),
        highest_attack_scores: list.extremes(root, true, 10),
        lowest_bona_fide_scores: list.extremes(root, false, 10),
        presentations: list.presentations,
        scored: list.scored,
        caveat: CAVEAT,
        plots,
    };

    let nr = &rep.non_responses;
    writeln!(
        out,
        "non-responses (no face or unreadable; left out of the rates): {} live, {} attacks{} ({} unreadable)",
        nr.counts.bona_fide,
        nr.counts.attacks,
        if nr.counts.attacks > 0 { format!(" ({})", species_list(&nr.counts.attacks_per_species)) } else { String::new() },
        nr.unreadable
    )?;
    let a = &rep.at_threshold;
    writeln!(out, "at liveness threshold {t:.4}:")?;
    for s in &a.apcer_per_species {
        writeln!(out, "  APCER {:>12}: {}", s.species, pct(&s.apcer))?;
    }
    for species in rep.presentations.attacks_per_species.keys().filter(|s| !rep.scored.attacks_per_species.contains_key(*s)) {
        writeln!(out, "  APCER {species:>12}: not measured (no attack with a face)")?;
    }
    match &a.apcer_max {
        Some(w) => writeln!(out, "  APCER_max: {:.2}% ({})", 100.0 * w.apcer.rate, w.species)?,
        None => writeln!(out, "  APCER_max: not measured (no attack with a face)")?,
    }
    writeln!(out, "  BPCER: {}", pct(&a.bpcer))?;
    writeln!(out, "  ACER {:.2}%: {}", 100.0 * a.acer.value, report::ACER_NOTE)?;
    for x in &rep.bpcer_at_apcer {
        match (&x.bpcer, x.threshold) {
            (Some(b), Some(th)) => writeln!(
                out,
                "BPCER @ APCER {}: {} at threshold {th:.4} (set by {}){}",
                percent(x.target_apcer),
                pct(b),
                x.limiting_species.as_deref().unwrap_or(""),
                if x.note.is_empty() { String::new() } else { format!("; weak: {}", x.note) }
            )?,
            _ => writeln!(out, "BPCER @ APCER {}: not measurable: {}", percent(x.target_apcer), x.note)?,
        }
    }
    writeln!(
        out,
        "EER {:.2}% at threshold {:.4} (attacks pooled); ROC AUC {:.5}",
        100.0 * rep.eer.eer,
        rep.eer.threshold,
        rep.roc_auc
    )?;
    finish(out, args.report.as_deref(), &rep, &rep.plots)?;
    Ok(partial_if(rep.non_responses.unreadable > 0))
}

/// [`super::metrics::eer`] with live presentations as genuine and attacks as impostors (a
/// presentation is accepted, judged live, at `score >= t`): (EER, threshold, APCER pooled,
/// BPCER). NaN when either class is empty.
fn metrics_eer(live: &[f32], attacks: &[f32]) -> (f64, f32, f64, f64) {
    if live.is_empty() || attacks.is_empty() {
        return (f64::NAN, f32::NAN, f64::NAN, f64::NAN);
    }
    super::metrics::eer(live, attacks)
}

/// `calibrate --spoof-labels` options.
pub struct SpoofCalibrateArgs {
    pub labels: PathBuf,
    pub images_root: PathBuf,
    pub apcer: f64,
    pub write: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub plots: Option<PathBuf>,
    pub command: String,
}

/// Rounds a liveness threshold up at 4 decimals (a rounded threshold never admits more
/// attacks), within [0, 1].
fn round_up4(t: f32) -> f32 {
    super::round_up4_within(t, [0.0, 1.0])
}

pub fn calibrate_spoof(ctx: &Context, args: &SpoofCalibrateArgs, out: &mut dyn Write) -> Result<Outcome> {
    let started = Instant::now();
    if !(args.apcer > 0.0 && args.apcer < 1.0) {
        bail!("--apcer {} must be in (0, 1)", args.apcer);
    }
    let list = score_list(ctx, &args.labels, &args.images_root, out)?;
    let root = &args.images_root;
    let target = args.apcer;
    let chosen = pad::threshold_at_apcer(&list.species, target)
        .context("no attack presentation with a face: nothing to calibrate the liveness threshold on")?;
    let t = round_up4(chosen.threshold);
    let per = pad::apcer_per_species(&list.species, t);
    let worst = pad::apcer_max(&per).cloned();
    let worst_rate = worst.as_ref().map_or(0.0, |w| w.apcer.rate);
    let bpcer = pad::bpcer(&list.live, t);
    let measurable = chosen.support != super::metrics::Support::Insufficient;
    let target_met = worst_rate <= target;

    let mut warnings = Vec::new();
    let need = (1.0 / target).ceil() as usize;
    let thin: Vec<String> =
        chosen.species.iter().filter(|s| s.allowed_above == 0).map(|s| format!("{} ({})", s.species, s.attacks)).collect();
    if !measurable {
        warnings.push(format!(
            "APCER {} cannot be measured on this data: {} attacks with a face per species are needed, and {} {} fewer; the threshold only rejects every attack seen of {}, so the rate it holds is unknown: collect more attacks",
            percent(target),
            need,
            thin.join(", "),
            if thin.len() == 1 { "has" } else { "have" },
            if thin.len() == 1 { "that species" } else { "those species" }
        ));
    }
    if !target_met {
        warnings.push(format!(
            "the target is not met: APCER_max is {} ({}) even at the highest threshold {t}: attacks of it score {}",
            percent(worst_rate),
            worst.as_ref().map_or("", |w| w.species.as_str()),
            list.species.get(worst.as_ref().map_or("", |w| w.species.as_str())).map_or(f32::NAN, |v| v.iter().copied().fold(0.0, f32::max))
        ));
    }
    if list.live.is_empty() {
        warnings.push("no live presentation with a face: BPCER is not measured".into());
    }
    for w in &warnings {
        log::warn!("{w}");
    }

    let non_responses = list.non_responses(root);
    let data = format!(
        "{}: {} live and {} attack presentations with a face ({}); non-responses left out: {}",
        args.labels.display(),
        list.scored.bona_fide,
        list.scored.attacks,
        species_list(&list.scored.attacks_per_species),
        non_responses.files.len()
    );
    let calibration = LivenessCalibration {
        threshold: t,
        apcer: Some(r(worst_rate, 5)),
        bpcer: (bpcer.presentations > 0).then(|| r(bpcer.rate, 5)),
        attacks: Some(list.scored.attacks as u64),
        bona_fide: Some(list.scored.bona_fide as u64),
        data,
        method: args.command.clone(),
    };
    calibration.validate().context("the liveness calibration came out inconsistent")?;

    let mut plots = Vec::new();
    if let Some(prefix) = &args.plots {
        let p = plot_path(prefix, "hist");
        histogram(&p, &format!("liveness threshold for APCER {}", percent(target)), &list, &[(format!("t={t:.4}"), t)])?;
        plots.push(p.to_string_lossy().into_owned());
    }

    let rep = report::SpoofCalibrationReport {
        what: "the liveness threshold: the smallest at which the worst attack species' APCER is at most the target, on the attacks with a face",
        run: run_info(ctx, args.command.clone(), list.labels.len(), started),
        labels_file: args.labels.to_string_lossy().into_owned(),
        non_responses,
        target_apcer: target,
        threshold: t,
        apcer_per_species: rounded_species(&per),
        apcer_max: worst.as_ref().map(|w| SpeciesApcer { species: w.species.clone(), apcer: rounded(&w.apcer) }),
        bpcer: rounded(&bpcer),
        measurable,
        target_met,
        warnings,
        calibration: calibration.clone(),
        chosen,
        presentations: list.presentations,
        scored: list.scored,
        caveat: CAVEAT,
        plots,
    };

    let nr = &rep.non_responses;
    writeln!(out, "non-responses (no face or unreadable; left out): {} live, {} attacks ({} unreadable)", nr.counts.bona_fide, nr.counts.attacks, nr.unreadable)?;
    writeln!(out, "liveness threshold for APCER {}: {t:.4} (the smallest that meets it: {})", percent(target), rep.chosen.threshold)?;
    match &rep.apcer_max {
        Some(w) => writeln!(out, "  APCER_max there: {}: {}; the threshold is set by {}", w.species, pct(&w.apcer), rep.chosen.limiting_species)?,
        None => writeln!(out, "  APCER_max there: not measured")?,
    }
    writeln!(out, "  BPCER there: {}", pct(&rep.bpcer))?;
    let rests: Vec<String> = rep.chosen.species.iter().map(|s| format!("{} {} ({} may pass)", s.species, s.attacks, s.allowed_above)).collect();
    writeln!(out, "  rests on: {} live presentations; attacks per species: {}", rep.scored.bona_fide, rests.join(", "))?;
    if measurable && rep.chosen.support == super::metrics::Support::Weak {
        writeln!(out, "  weak: a species allows fewer than 10 attacks above the threshold, so its top few scores set it")?;
    }
    for w in &rep.warnings {
        writeln!(out, "WARNING: {w}")?;
    }
    if let Some(path) = &args.write {
        let mut config = if path.exists() { Config::load(path)? } else { Config::default() };
        config.liveness = Some(calibration);
        config.save(path)?;
        writeln!(out, "written to {} as [liveness] (use it with --config {})", path.display(), path.display())?;
    }
    finish(out, args.report.as_deref(), &rep, &rep.plots)?;
    Ok(partial_if(rep.non_responses.unreadable > 0))
}
