//! The JSON reports of `eval` and `calibrate`: one document per run, for machines and for the
//! committed results under `docs/eval/`. Rates are fractions (0–1), rounded to 5 significant
//! decimals; paths are as given on the command line or relative to `--images-root`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::metrics::{AttrScore, FarThreshold, FoldResult, OpenSetPoint, Support};
use super::pad::{ApcerThreshold, BpcerAtApcer, ErrorCount, SpeciesApcer};
use crate::config::Calibration;
use crate::liveness::LivenessCalibration;

/// Rounds for the report (the JSON stays readable; nothing downstream needs more digits).
pub fn r(v: f64, digits: i32) -> f64 {
    if !v.is_finite() {
        return v;
    }
    let k = 10f64.powi(digits);
    (v * k).round() / k
}

/// What the run was: the binary, the model and the settings, so a report says what produced it.
#[derive(Serialize)]
pub struct RunInfo {
    pub facegate: String,
    pub embedder: String,
    pub embedder_sha256: String,
    pub command: String,
    pub threads: usize,
    pub wall_s: f64,
    pub images: usize,
    pub images_per_s: f64,
}

/// Images without a usable face, and what they did to the comparisons.
#[derive(Serialize, Default)]
pub struct Missing {
    pub images_without_face: usize,
    pub images_unreadable: usize,
    /// Unreadable images with the reason, then images without a face.
    pub files: Vec<String>,
    pub rule: &'static str,
}

#[derive(Serialize)]
pub struct TarAtFar {
    pub target_far: f64,
    /// `None` when the data cannot measure this FAR (`support` = insufficient).
    pub tar: Option<f64>,
    pub tar_ci95: Option<[f64; 2]>,
    pub threshold: Option<f32>,
    pub threshold_ci95: Option<[f32; 2]>,
    pub observed_far: Option<f64>,
    pub impostors: usize,
    pub impostors_allowed_above: usize,
    pub support: Support,
    pub note: String,
}

#[derive(Serialize)]
pub struct AtThreshold {
    pub source: String,
    pub threshold: f32,
    pub accuracy: f64,
    pub tar: f64,
    pub far: f64,
    pub far_ci95: [f64; 2],
    pub false_accepts: usize,
    pub false_rejects: usize,
}

#[derive(Serialize)]
pub struct KFold {
    pub folds: usize,
    pub folds_from: String,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub accuracy_se: f64,
    pub threshold_mean: f64,
    pub per_fold: Vec<FoldResult>,
}

#[derive(Serialize)]
pub struct Similarity {
    pub genuine_mean: f64,
    pub genuine_std: f64,
    pub impostor_mean: f64,
    pub impostor_std: f64,
    pub genuine_min: f64,
    pub impostor_max: f64,
    pub top_impostor_scores: Vec<f64>,
    pub note: &'static str,
}

#[derive(Serialize)]
pub struct Eer {
    pub eer: f64,
    pub threshold: f32,
    pub far: f64,
    pub frr: f64,
}

#[derive(Serialize)]
pub struct VerifyReport {
    pub what: &'static str,
    pub pairs_file: String,
    pub format: &'static str,
    pub pairs: usize,
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
    pub images: usize,
    pub score: &'static str,
    pub run: RunInfo,
    pub faces_not_found: Missing,
    pub genuine_pairs_missing_a_face: usize,
    pub impostor_pairs_missing_a_face: usize,
    pub ten_fold: KFold,
    pub at_threshold: AtThreshold,
    pub tar_at_far: Vec<TarAtFar>,
    pub eer: Eer,
    pub roc_auc: f64,
    pub similarity: Similarity,
    pub plots: Vec<String>,
}

#[derive(Serialize)]
pub struct IdentReport {
    pub what: &'static str,
    pub gallery_dir: String,
    pub probe_dir: String,
    pub distractor_dir: Option<String>,
    pub split: String,
    pub run: RunInfo,
    pub faces_not_found: Missing,
    /// People with at least one enrolment photo where a face was found.
    pub gallery_identities: usize,
    pub gallery_templates: usize,
    pub gallery_people_without_face: Vec<String>,
    pub mated_probes: usize,
    pub nonmated_probes: usize,
    pub rank_1: f64,
    pub rank_5: f64,
    pub cmc: Vec<f64>,
    pub dir_at_fpir: Vec<OpenSetPoint>,
    /// DIR and FPIR at the thresholds the binary would use: the 1:1 one and the 1:N rule's for
    /// this gallery size.
    pub at_thresholds: BTreeMap<String, OpenSetPoint>,
    pub plots: Vec<String>,
}

#[derive(Serialize)]
pub struct AttrSet {
    pub labels_file: String,
    pub photos: usize,
    pub unreadable: usize,
    pub scores: Vec<AttrScore>,
    pub faces_not_found_files: Vec<String>,
}

#[derive(Serialize)]
pub struct AttrsReport {
    pub what: &'static str,
    pub rules: &'static str,
    pub run: RunInfo,
    pub sets: Vec<AttrSet>,
    pub plots: Vec<String>,
}

#[derive(Serialize)]
pub struct OneToNCheck {
    pub gallery_size: usize,
    pub unknown_faces: usize,
    pub rule_threshold: f32,
    pub rule_past_table: bool,
    pub observed_fpir_at_rule: f64,
    pub direct: Option<FarThreshold>,
}

#[derive(Serialize)]
pub struct CalibrationReport {
    pub what: &'static str,
    pub run: RunInfo,
    pub data: String,
    pub faces_not_found: Missing,
    pub impostor_comparisons: usize,
    pub genuine_comparisons: usize,
    pub one_to_one: Option<FarThreshold>,
    pub far_ci95_at_threshold: Option<[f64; 2]>,
    pub tar_at_threshold: Option<f64>,
    pub far_table: Vec<FarThreshold>,
    /// Impostor comparisons at or above `DUPLICATE_SIMILARITY`, left out, and (up to 50) the
    /// photo pairs behind them.
    pub duplicates_left_out: usize,
    pub duplicate_pairs: Vec<[String; 2]>,
    pub top_impostor_scores: Vec<f32>,
    pub installed_gallery: Option<OneToNCheck>,
    pub calibration: Calibration,
    pub caveat: &'static str,
    pub plots: Vec<String>,
}

/// Presentations of a live/spoof list by class: live, attacks, attacks per species.
#[derive(Serialize, Default)]
pub struct PadCounts {
    pub bona_fide: usize,
    pub attacks: usize,
    pub attacks_per_species: BTreeMap<String, usize>,
}

/// Presentations without a score (no face found, or the image could not be read or scored):
/// failures to acquire, counted per class and species and left out of APCER and BPCER.
#[derive(Serialize)]
pub struct NonResponses {
    pub rule: &'static str,
    #[serde(flatten)]
    pub counts: PadCounts,
    /// Of those, images that could not be read or scored.
    pub unreadable: usize,
    pub files: Vec<ScoredFile>,
}

/// One presentation named in a report: the file (relative to `--images-root`), its class
/// (`live` or the attack species), and its score or what became of it.
#[derive(Serialize)]
pub struct ScoredFile {
    pub file: String,
    pub class: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// (APCER_max + BPCER) / 2, labelled as what it is.
#[derive(Serialize)]
pub struct Acer {
    pub value: f64,
    pub note: &'static str,
}

pub const ACER_NOTE: &str = "outside ISO/IEC 30107-3 (deprecated there): (APCER_max + BPCER) / 2, for comparison with papers only";

/// Error rates at one liveness threshold.
#[derive(Serialize)]
pub struct PadAtThreshold {
    pub source: String,
    pub threshold: f32,
    pub apcer_per_species: Vec<SpeciesApcer>,
    /// The most successful species' APCER.
    pub apcer_max: Option<SpeciesApcer>,
    pub bpcer: ErrorCount,
    pub acer: Acer,
}

/// The equal error point over all attacks pooled against the live presentations.
#[derive(Serialize)]
pub struct PadEer {
    pub eer: f64,
    pub threshold: f32,
    pub apcer_pooled: f64,
    pub bpcer: f64,
    pub note: &'static str,
}

/// The liveness models that scored: name and weights hash.
#[derive(Serialize)]
pub struct ModelRef {
    pub name: String,
    pub sha256: String,
}

#[derive(Serialize)]
pub struct SpoofReport {
    pub what: &'static str,
    pub labels_file: String,
    pub images_root: String,
    pub score: &'static str,
    pub liveness_models: Vec<ModelRef>,
    pub run: RunInfo,
    /// Every presentation listed.
    pub presentations: PadCounts,
    pub non_responses: NonResponses,
    /// The presentations the rates rest on.
    pub scored: PadCounts,
    pub at_threshold: PadAtThreshold,
    pub bpcer_at_apcer: Vec<BpcerAtApcer>,
    pub eer: PadEer,
    pub roc_auc: f64,
    /// The attacks most nearly judged live, and the live presentations most nearly refused.
    pub highest_attack_scores: Vec<ScoredFile>,
    pub lowest_bona_fide_scores: Vec<ScoredFile>,
    pub caveat: &'static str,
    pub plots: Vec<String>,
}

#[derive(Serialize)]
pub struct SpoofCalibrationReport {
    pub what: &'static str,
    pub run: RunInfo,
    pub labels_file: String,
    pub presentations: PadCounts,
    pub non_responses: NonResponses,
    pub scored: PadCounts,
    pub target_apcer: f64,
    /// The smallest threshold that meets the target on these attacks, before rounding.
    pub chosen: ApcerThreshold,
    /// `chosen.threshold` rounded up at 4 decimals (never admitting more attacks), within [0, 1].
    pub threshold: f32,
    pub apcer_per_species: Vec<SpeciesApcer>,
    pub apcer_max: Option<SpeciesApcer>,
    pub bpcer: ErrorCount,
    /// False when some species has fewer than 1/target attacks: the threshold then only
    /// clears every attack seen, and the target rate is not measured.
    pub measurable: bool,
    /// False when APCER_max at the threshold is above the target (attacks scoring 1.0).
    pub target_met: bool,
    pub warnings: Vec<String>,
    pub calibration: LivenessCalibration,
    pub caveat: &'static str,
    pub plots: Vec<String>,
}

pub fn write_json<T: Serialize>(path: &Path, report: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
