//! Presentation-attack detection (PAD) metrics after ISO/IEC 30107-3, as pure functions over
//! liveness scores.
//!
//! Conventions: a score is the probability that a presentation is live, and a presentation is
//! *judged live* when `score >= threshold`. An attack judged live is an attack presentation
//! classification error, counted per attack species (APCER); a live (bona fide) presentation
//! judged an attack is a bona fide presentation classification error (BPCER). The standard
//! rates a system by its most successful species, APCER_max, not by attacks pooled: a door
//! that stops every print but half the phone replays is as weak as the replays. Presentations
//! without a score (no face found: a failure to acquire) are not passed here; the standard
//! reports them apart, and so does `eval spoof`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::metrics::{self, Support};

/// Scores of the attacks with a face, per attack species (the species' name as key).
pub type Species = BTreeMap<String, Vec<f32>>;

/// The count behind an error rate: `errors` of `presentations`, the rate and its 95% Wilson
/// interval (assuming independent presentations).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorCount {
    pub errors: usize,
    pub presentations: usize,
    /// NaN (null in JSON) when there are no presentations.
    pub rate: f64,
    pub ci95: [f64; 2],
}

impl ErrorCount {
    pub fn new(errors: usize, presentations: usize) -> ErrorCount {
        let rate = if presentations == 0 { f64::NAN } else { errors as f64 / presentations as f64 };
        ErrorCount { errors, presentations, rate, ci95: metrics::wilson95(errors, presentations) }
    }
}

/// APCER of one species at `t`: its attacks judged live (`score >= t`).
pub fn apcer(attacks: &[f32], t: f32) -> ErrorCount {
    ErrorCount::new(attacks.iter().filter(|&&s| s >= t).count(), attacks.len())
}

/// BPCER at `t`: live presentations judged attacks (`score < t`).
pub fn bpcer(bona_fide: &[f32], t: f32) -> ErrorCount {
    ErrorCount::new(bona_fide.iter().filter(|&&s| s < t).count(), bona_fide.len())
}

/// One species' APCER.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpeciesApcer {
    pub species: String,
    #[serde(flatten)]
    pub apcer: ErrorCount,
}

/// APCER of every species with at least one attack, in name order.
pub fn apcer_per_species(species: &Species, t: f32) -> Vec<SpeciesApcer> {
    species
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(name, s)| SpeciesApcer { species: name.clone(), apcer: apcer(s, t) })
        .collect()
}

/// APCER_max: the species with the highest APCER (of equal rates, the first by name).
/// `None` when no species has an attack.
pub fn apcer_max(per_species: &[SpeciesApcer]) -> Option<&SpeciesApcer> {
    per_species.iter().fold(None, |best: Option<&SpeciesApcer>, s| match best {
        Some(b) if b.apcer.rate >= s.apcer.rate => Some(b),
        _ => Some(s),
    })
}

/// The average classification error rate, (APCER_max + BPCER) / 2. Outside ISO/IEC 30107-3,
/// which deprecates it (it mixes two errors whose costs differ); reported only to compare with
/// papers that still use it.
pub fn acer(apcer_max: f64, bpcer: f64) -> f64 {
    (apcer_max + bpcer) / 2.0
}

/// What one species contributes to [`threshold_at_apcer`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpeciesSupport {
    pub species: String,
    pub attacks: usize,
    /// Attacks of this species that may score at or above the threshold: ⌊target · attacks⌋.
    pub allowed_above: usize,
    /// The smallest threshold that holds this species' APCER at or under the target.
    pub threshold: f32,
}

/// The smallest threshold at which every species' APCER is at most a target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApcerThreshold {
    pub target_apcer: f64,
    /// The highest of the species' own thresholds: just above the (k+1)-th highest score of
    /// the limiting species, k = ⌊target · its attacks⌋.
    pub threshold: f32,
    /// The species whose attacks set the threshold.
    pub limiting_species: String,
    /// The worst over species: insufficient when some species has fewer than 1/target
    /// attacks (no attack of it may pass, so the threshold only clears every attack seen and
    /// the target rate is not measured), weak when some species allows only 1 to 9 above.
    pub support: Support,
    pub species: Vec<SpeciesSupport>,
}

impl ApcerThreshold {
    /// The species with the fewest attacks (the one that limits what can be measured).
    pub fn thinnest(&self) -> Option<&SpeciesSupport> {
        self.species.iter().min_by_key(|s| s.attacks)
    }
}

/// See [`ApcerThreshold`]. `None` when no species has an attack or the target is not in
/// (0, 1). Each species' threshold is [`metrics::threshold_at_far`] of its scores.
pub fn threshold_at_apcer(species: &Species, target_apcer: f64) -> Option<ApcerThreshold> {
    let mut per = Vec::new();
    let mut support = Support::Adequate;
    for (name, scores) in species.iter().filter(|(_, s)| !s.is_empty()) {
        let t = metrics::threshold_at_far(scores, target_apcer)?;
        support = match (support, t.support) {
            (Support::Insufficient, _) | (_, Support::Insufficient) => Support::Insufficient,
            (Support::Weak, _) | (_, Support::Weak) => Support::Weak,
            _ => Support::Adequate,
        };
        per.push(SpeciesSupport { species: name.clone(), attacks: scores.len(), allowed_above: t.allowed_above, threshold: t.threshold });
    }
    let limiting = per.iter().fold(None, |best: Option<&SpeciesSupport>, s| match best {
        Some(b) if b.threshold >= s.threshold => Some(b),
        _ => Some(s),
    })?;
    let (threshold, limiting_species) = (limiting.threshold, limiting.species.clone());
    Some(ApcerThreshold { target_apcer, threshold, limiting_species, support, species: per })
}

/// BPCER at the threshold that holds APCER_max at or under a target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BpcerAtApcer {
    pub target_apcer: f64,
    /// `None` when the data cannot measure the target (`support` = insufficient).
    pub threshold: Option<f32>,
    /// APCER_max observed at the threshold.
    pub apcer_max: Option<f64>,
    pub bpcer: Option<ErrorCount>,
    pub limiting_species: Option<String>,
    pub support: Support,
    pub note: String,
}

/// See [`BpcerAtApcer`]; "not measurable" (insufficient, no values) when some species has
/// fewer than 1/target attacks, as `eval verify` treats a FAR it cannot measure.
pub fn bpcer_at_apcer(species: &Species, bona_fide: &[f32], target_apcer: f64) -> BpcerAtApcer {
    let none = |note: String| BpcerAtApcer {
        target_apcer,
        threshold: None,
        apcer_max: None,
        bpcer: None,
        limiting_species: None,
        support: Support::Insufficient,
        note,
    };
    let Some(t) = threshold_at_apcer(species, target_apcer) else {
        return none("no attack presentations with a face".into());
    };
    let need = (1.0 / target_apcer).ceil();
    match t.support {
        Support::Insufficient => {
            let thin = t.species.iter().filter(|s| s.allowed_above == 0).min_by_key(|s| s.attacks).or(t.thinnest());
            let (name, n) = thin.map_or((String::new(), 0), |s| (s.species.clone(), s.attacks));
            none(format!(
                "species {name:?} has {n} attack{} with a face; measuring APCER {}% needs at least {need:.0} per species",
                if n == 1 { "" } else { "s" },
                (target_apcer * 1e6).round() / 1e4
            ))
        }
        support => {
            let per = apcer_per_species(species, t.threshold);
            let note = match t.species.iter().filter(|s| s.allowed_above < 10).min_by_key(|s| s.allowed_above) {
                Some(s) if support == Support::Weak => format!(
                    "only {} of {} {:?} attacks may score above the threshold: it is set by the top {} scores of that species",
                    s.allowed_above,
                    s.attacks,
                    s.species,
                    s.allowed_above + 1
                ),
                _ => String::new(),
            };
            BpcerAtApcer {
                target_apcer,
                threshold: Some(t.threshold),
                apcer_max: apcer_max(&per).map(|s| s.apcer.rate),
                bpcer: Some(bpcer(bona_fide, t.threshold)),
                limiting_species: Some(t.limiting_species),
                support,
                note,
            }
        }
    }
}

/// One point of the PAD detection error trade-off.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PadPoint {
    pub threshold: f32,
    pub apcer_max: f64,
    pub bpcer: f64,
}

/// APCER_max and BPCER at every distinct finite score, threshold ascending (APCER_max
/// falling, BPCER rising).
pub fn det(species: &Species, bona_fide: &[f32]) -> Vec<PadPoint> {
    let sorted = |v: &[f32]| {
        let mut v = v.to_vec();
        v.sort_by(f32::total_cmp);
        v
    };
    let attacks: Vec<Vec<f32>> = species.values().filter(|s| !s.is_empty()).map(|s| sorted(s.as_slice())).collect();
    let live = sorted(bona_fide);
    let mut ts: Vec<f32> = live.iter().chain(attacks.iter().flatten()).copied().filter(|s| s.is_finite()).collect();
    ts.sort_by(f32::total_cmp);
    ts.dedup();
    let below = |v: &[f32], t: f32| v.partition_point(|&s| s < t);
    ts.into_iter()
        .map(|t| PadPoint {
            threshold: t,
            apcer_max: attacks.iter().map(|a| (a.len() - below(a, t)) as f64 / a.len() as f64).fold(0.0, f64::max),
            bpcer: if live.is_empty() { f64::NAN } else { below(&live, t) as f64 / live.len() as f64 },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// print 0.9 0.6 0.3 0.2 0.1, replay 0.8 0.4; live 0.95 0.85 0.7 0.5 0.45.
    fn fixture() -> (Species, Vec<f32>) {
        let mut s = Species::new();
        s.insert("print".into(), vec![0.9, 0.6, 0.3, 0.2, 0.1]);
        s.insert("replay".into(), vec![0.8, 0.4]);
        (s, vec![0.95, 0.85, 0.7, 0.5, 0.45])
    }

    #[test]
    fn rates_at_a_threshold_by_hand() {
        let (s, live) = fixture();
        // At 0.5: print 0.9 and 0.6 pass (2/5), replay 0.8 passes (1/2); live 0.45 is refused.
        let per = apcer_per_species(&s, 0.5);
        assert_eq!((per[0].apcer.errors, per[0].apcer.presentations), (2, 5));
        assert_eq!((per[1].apcer.errors, per[1].apcer.presentations), (1, 2));
        let worst = apcer_max(&per).unwrap();
        assert_eq!((worst.species.as_str(), worst.apcer.rate), ("replay", 0.5));
        let b = bpcer(&live, 0.5);
        assert_eq!((b.errors, b.presentations, b.rate), (1, 5, 0.2));
        assert_eq!(b.ci95, metrics::wilson95(1, 5));
        // A score equal to the threshold is judged live.
        assert_eq!(bpcer(&live, 0.45).errors, 0);
        assert!((acer(worst.apcer.rate, b.rate) - 0.35).abs() < 1e-12);
        // Ties go to the first species by name.
        let per = apcer_per_species(&s, 2.0);
        assert_eq!(apcer_max(&per).unwrap().species, "print");
        assert!(ErrorCount::new(0, 0).rate.is_nan());
    }

    #[test]
    fn threshold_for_the_worst_species() {
        let (s, live) = fixture();
        // APCER 0.5: print may let ⌊2.5⌋ = 2 pass (just above 0.3), replay ⌊1⌋ = 1 (just
        // above 0.4); the replay sets the threshold.
        let t = threshold_at_apcer(&s, 0.5).unwrap();
        assert_eq!(t.threshold, metrics::next_up(0.4));
        assert_eq!(t.limiting_species, "replay");
        assert_eq!(t.support, Support::Weak);
        assert_eq!(t.species.iter().map(|x| x.allowed_above).collect::<Vec<_>>(), vec![2, 1]);
        let b = bpcer_at_apcer(&s, &live, 0.5);
        assert_eq!(b.threshold, Some(metrics::next_up(0.4)));
        assert_eq!(b.apcer_max, Some(0.5), "print 2/5, replay 1/2");
        assert_eq!(b.bpcer.as_ref().map(|c| c.errors), Some(0));
        assert!(b.note.contains("replay"), "{}", b.note);
        // APCER 0.2: replay has 2 attacks, fewer than 1/0.2 = 5: no replay may pass, the
        // threshold clears the top replay (0.8) and the rate is not measured.
        let t = threshold_at_apcer(&s, 0.2).unwrap();
        assert_eq!((t.threshold, t.limiting_species.as_str(), t.support), (metrics::next_up(0.8), "replay", Support::Insufficient));
        assert_eq!(t.thinnest().unwrap().species, "replay");
        let b = bpcer_at_apcer(&s, &live, 0.2);
        assert_eq!((b.threshold, b.bpcer.clone(), b.support), (None, None, Support::Insufficient));
        assert!(b.note.contains("\"replay\" has 2") && b.note.contains("at least 5"), "{}", b.note);
        assert!(threshold_at_apcer(&Species::new(), 0.1).is_none());
        assert!(threshold_at_apcer(&s, 1.0).is_none());
    }

    #[test]
    fn enough_attacks_is_adequate() {
        let mut s = Species::new();
        s.insert("print".into(), (0..100).map(|i| i as f32 / 100.0).collect());
        // APCER 0.1 of 100: 10 may pass, just above the 11th highest (0.89).
        let t = threshold_at_apcer(&s, 0.1).unwrap();
        assert_eq!((t.threshold, t.support), (metrics::next_up(0.89), Support::Adequate));
        let b = bpcer_at_apcer(&s, &[0.5, 0.95], 0.1);
        assert_eq!((b.apcer_max, b.bpcer.map(|c| c.errors)), (Some(0.1), Some(1)));
        assert!(b.note.is_empty());
    }

    #[test]
    fn det_and_the_pooled_conventions() {
        let (s, live) = fixture();
        let d = det(&s, &live);
        assert!(d.windows(2).all(|w| w[0].threshold < w[1].threshold && w[0].apcer_max >= w[1].apcer_max && w[0].bpcer <= w[1].bpcer));
        let at = d.iter().find(|p| p.threshold == 0.5).unwrap();
        assert_eq!((at.apcer_max, at.bpcer), (0.5, 0.2));
        assert_eq!(d.first().map(|p| (p.apcer_max, p.bpcer)), Some((1.0, 0.0)));
        // metrics::eer and auc with genuine = live and impostor = the pooled attacks: at 0.6
        // APCER 3/7, BPCER 2/5, the closest pair.
        let pooled: Vec<f32> = s.values().flatten().copied().collect();
        let (e, t, apcer, bpcer) = metrics::eer(&live, &pooled);
        assert_eq!(t, 0.6);
        assert!((apcer - 3.0 / 7.0).abs() < 1e-12 && (bpcer - 0.4).abs() < 1e-12);
        assert!((e - (3.0 / 7.0 + 0.4) / 2.0).abs() < 1e-12);
        // Live above attack in 7 + 6 + 5 + 4 + 4 of 35 pairings.
        assert!((metrics::auc(&live, &pooled) - 26.0 / 35.0).abs() < 1e-12);
    }
}
