//! The evaluation maths, as pure functions over similarity scores.
//!
//! Conventions shared by every function here: a score is a cosine similarity, a comparison is
//! *accepted* when `score >= threshold`, and a comparison whose face was not found carries
//! `f32::NEG_INFINITY`, so it is rejected at every threshold (a genuine pair with a missing
//! face is a false reject, an impostor pair a correct reject). Rates are `f64`.

/// Accepted (`score >= t`) when same, rejected when not: the fraction of pairs decided right.
pub fn accuracy_at(scores: &[f32], same: &[bool], t: f32) -> f64 {
    if scores.is_empty() {
        return f64::NAN;
    }
    let right = scores.iter().zip(same).filter(|&(&s, &g)| (s >= t) == g).count();
    right as f64 / scores.len() as f64
}

fn sorted(v: impl IntoIterator<Item = f32>) -> Vec<f32> {
    let mut v: Vec<f32> = v.into_iter().collect();
    v.sort_by(f32::total_cmp);
    v
}

/// How many of the ascending `sorted` values are `< t`.
fn count_below(sorted: &[f32], t: f32) -> usize {
    sorted.partition_point(|&s| s < t)
}

/// The accuracy-maximising threshold and its accuracy. Candidates are the midpoints between
/// consecutive distinct finite scores, plus one just below the lowest and one just above the
/// highest; among equally good candidates the middle one is taken (as `train/eval_verify.py`).
pub fn best_threshold(scores: &[f32], same: &[bool]) -> (f32, f64) {
    let mut finite: Vec<f32> = scores.iter().copied().filter(|s| s.is_finite()).collect();
    finite.sort_by(f32::total_cmp);
    finite.dedup();
    if finite.is_empty() || scores.is_empty() {
        return (f32::NAN, f64::NAN);
    }
    let mut cands = Vec::with_capacity(finite.len() + 1);
    cands.push(finite[0] - 1e-6);
    cands.extend(finite.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    cands.push(finite[finite.len() - 1] + 1e-6);
    let gen = sorted(scores.iter().zip(same).filter(|p| *p.1).map(|p| *p.0));
    let imp = sorted(scores.iter().zip(same).filter(|p| !*p.1).map(|p| *p.0));
    let right: Vec<usize> = cands
        .iter()
        .map(|&t| (gen.len() - count_below(&gen, t)) + count_below(&imp, t))
        .collect();
    let most = right.iter().copied().max().unwrap_or(0);
    let best: Vec<usize> = (0..cands.len()).filter(|&i| right[i] == most).collect();
    (cands[best[best.len() / 2]], most as f64 / scores.len() as f64)
}

/// One fold of a k-fold evaluation: the threshold chosen on the other folds, its accuracy
/// there, and its accuracy on this fold.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FoldResult {
    pub fold: usize,
    pub pairs: usize,
    pub threshold: f32,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
}

/// k-fold accuracy (the LFW protocol): for each fold, the accuracy-maximising threshold of the
/// other folds applied to it. `folds[i]` is pair `i`'s fold; folds are reported in ascending
/// order; a fold with no other fold to train on gets a NaN threshold.
pub fn k_fold(scores: &[f32], same: &[bool], folds: &[usize]) -> Vec<FoldResult> {
    let mut ids: Vec<usize> = folds.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.iter()
        .map(|&f| {
            let (mut tr_s, mut tr_g, mut te_s, mut te_g) = (vec![], vec![], vec![], vec![]);
            for i in 0..scores.len() {
                if folds[i] == f {
                    te_s.push(scores[i]);
                    te_g.push(same[i]);
                } else {
                    tr_s.push(scores[i]);
                    tr_g.push(same[i]);
                }
            }
            let (t, train_accuracy) = best_threshold(&tr_s, &tr_g);
            FoldResult { fold: f, pairs: te_s.len(), threshold: t, train_accuracy, test_accuracy: accuracy_at(&te_s, &te_g, t) }
        })
        .collect()
}

/// Mean, sample standard deviation (n − 1) and standard error of `v`.
pub fn mean_std_se(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt(), var.sqrt() / n.sqrt())
}

/// Folds for a pair list that has none: genuine and impostor pairs are dealt separately, each
/// in file order, into `k` contiguous blocks (the j-th of n genuine pairs goes to fold
/// ⌊j·k/n⌋). Each fold gets a near-equal share of both kinds, and a list written person by
/// person keeps most people within one fold.
pub fn assign_folds(same: &[bool], k: usize) -> Vec<usize> {
    let k = k.max(1);
    let n_gen = same.iter().filter(|&&s| s).count();
    let n_imp = same.len() - n_gen;
    let (mut j_gen, mut j_imp) = (0, 0);
    same.iter()
        .map(|&s| {
            let (j, n) = if s { (&mut j_gen, n_gen) } else { (&mut j_imp, n_imp) };
            let f = *j * k / n.max(1);
            *j += 1;
            f
        })
        .collect()
}

/// One operating point: accept when `score >= threshold`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct RocPoint {
    pub threshold: f32,
    /// Impostor comparisons accepted / impostor comparisons.
    pub far: f64,
    /// Genuine comparisons accepted / genuine comparisons.
    pub tar: f64,
}

/// The ROC at every distinct finite score, highest threshold first (FAR and TAR rising).
pub fn roc(genuine: &[f32], impostor: &[f32]) -> Vec<RocPoint> {
    let gen = sorted(genuine.iter().copied());
    let imp = sorted(impostor.iter().copied());
    let mut ts: Vec<f32> = gen.iter().chain(&imp).copied().filter(|s| s.is_finite()).collect();
    ts.sort_by(|a, b| b.total_cmp(a));
    ts.dedup();
    ts.iter()
        .map(|&t| RocPoint {
            threshold: t,
            far: rate(imp.len() - count_below(&imp, t), imp.len()),
            tar: rate(gen.len() - count_below(&gen, t), gen.len()),
        })
        .collect()
}

fn rate(k: usize, n: usize) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        k as f64 / n as f64
    }
}

/// The fraction of `scores` accepted at `t`.
pub fn accept_rate(scores: &[f32], t: f32) -> f64 {
    rate(scores.iter().filter(|&&s| s >= t).count(), scores.len())
}

/// Area under the ROC: P(genuine > impostor), ties counted ½ (Mann–Whitney).
pub fn auc(genuine: &[f32], impostor: &[f32]) -> f64 {
    let imp = sorted(impostor.iter().copied());
    let mut total = 0.0;
    for &g in genuine {
        let below = count_below(&imp, g);
        let tied = imp.partition_point(|&s| s <= g) - below;
        total += below as f64 + tied as f64 / 2.0;
    }
    total / (genuine.len() as f64 * imp.len() as f64)
}

/// The equal error rate: at the distinct finite score where |FAR − FRR| is smallest, their
/// mean. Returns (EER, threshold, FAR, FRR) there.
pub fn eer(genuine: &[f32], impostor: &[f32]) -> (f64, f32, f64, f64) {
    let mut best = (f64::NAN, f32::NAN, f64::NAN, f64::NAN);
    let mut gap = f64::INFINITY;
    for p in roc(genuine, impostor) {
        let frr = 1.0 - p.tar;
        if (p.far - frr).abs() < gap {
            gap = (p.far - frr).abs();
            best = ((p.far + frr) / 2.0, p.threshold, p.far, frr);
        }
    }
    best
}

/// How many comparisons a rate rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Support {
    /// At least 10 impostor comparisons may score above the threshold.
    Adequate,
    /// 1 to 9: the threshold is set by the top few impostor scores; indicative only.
    Weak,
    /// Fewer than 1/FAR comparisons: the rate cannot be measured on this data.
    Insufficient,
}

/// The threshold that holds the false-accept rate at or under a target.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FarThreshold {
    pub target_far: f64,
    /// The smallest threshold whose FAR on these impostor scores is `<= target_far`: just
    /// above the (k+1)-th highest impostor score, k = ⌊target_far · n⌋.
    pub threshold: f32,
    /// Impostor comparisons allowed above the threshold (k).
    pub allowed_above: usize,
    pub impostors: usize,
    /// The FAR observed at `threshold`.
    pub observed_far: f64,
    /// A 95% interval of the threshold: the order statistics at the 2.5% and 97.5% points of
    /// Binomial(n, target_far) (distribution-free, assuming independent comparisons).
    pub threshold_ci95: [f32; 2],
    pub support: Support,
}

/// Just above `v` (the smallest f32 greater than it).
pub fn next_up(v: f32) -> f32 {
    if v.is_nan() || v == f32::INFINITY {
        return v;
    }
    if v == f32::NEG_INFINITY {
        return f32::MIN;
    }
    let bits = v.to_bits();
    let up = if v == 0.0 {
        1
    } else if v > 0.0 {
        bits + 1
    } else {
        bits - 1
    };
    f32::from_bits(up)
}

/// See [`FarThreshold`]. `None` when there are no impostor scores or the target is not in
/// (0, 1).
pub fn threshold_at_far(impostor: &[f32], target_far: f64) -> Option<FarThreshold> {
    let n = impostor.len();
    if n == 0 || !(target_far > 0.0 && target_far < 1.0) {
        return None;
    }
    let mut desc: Vec<f32> = impostor.to_vec();
    desc.sort_by(|a, b| b.total_cmp(a));
    let at = |k: usize| next_up(desc[k.min(n - 1)]);
    let k = ((target_far * n as f64) + 1e-9).floor() as usize;
    let threshold = at(k);
    let (lo, hi) = binomial_interval(n as u64, target_far, 0.95);
    // More impostors allowed above = a lower threshold.
    let threshold_ci95 = [at(hi as usize), at(lo as usize)];
    let support = match k {
        0 => Support::Insufficient,
        1..=9 => Support::Weak,
        _ => Support::Adequate,
    };
    Some(FarThreshold {
        target_far,
        threshold,
        allowed_above: k,
        impostors: n,
        observed_far: accept_rate(impostor, threshold),
        threshold_ci95,
        support,
    })
}

/// Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.383577518672690e2, -3.066479806614716e1, 2.506628277459239];
    const B: [f64; 5] = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p <= 0.0 {
        f64::NEG_INFINITY
    } else if p >= 1.0 {
        f64::INFINITY
    } else if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The central `conf` interval of the count of Binomial(n, p): exact through the Poisson
/// limit when n·p < 100 (the rare-event case of a FAR), else the normal approximation.
pub fn binomial_interval(n: u64, p: f64, conf: f64) -> (u64, u64) {
    let lambda = n as f64 * p;
    let a = (1.0 - conf) / 2.0;
    if lambda < 100.0 {
        let (mut lo, mut hi) = (None, None);
        let mut term = (-lambda).exp();
        let mut cdf = term;
        let mut k = 0u64;
        loop {
            if lo.is_none() && cdf >= a {
                lo = Some(k);
            }
            if cdf >= 1.0 - a {
                hi = Some(k);
            }
            if hi.is_some() || k > n {
                break;
            }
            k += 1;
            term *= lambda / k as f64;
            cdf += term;
        }
        (lo.unwrap_or(0).min(n), hi.unwrap_or(n).min(n))
    } else {
        let sd = (lambda * (1.0 - p)).sqrt();
        let z = normal_quantile(1.0 - a);
        let lo = (lambda - z * sd).floor().max(0.0) as u64;
        let hi = (lambda + z * sd).ceil().min(n as f64) as u64;
        (lo, hi)
    }
}

/// Wilson score interval (95%) of a proportion k/n.
pub fn wilson95(k: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [f64::NAN, f64::NAN];
    }
    let (k, n) = (k as f64, n as f64);
    let z = 1.959963984540054;
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

/// One probe of an identification test, scored against every enrolled identity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeResult {
    /// The probe's own identity's score, `None` when that person is not enrolled (a
    /// non-mated probe). `NEG_INFINITY` when no face was found.
    pub mated_score: Option<f32>,
    /// The best score among the other enrolled identities (`NEG_INFINITY` if none or no face).
    pub best_other: f32,
    /// How many other identities scored strictly higher than the probe's own.
    pub others_above: usize,
}

impl ProbeResult {
    /// The highest score of the probe over the whole gallery.
    pub fn best(&self) -> f32 {
        self.mated_score.map_or(self.best_other, |m| m.max(self.best_other))
    }

    /// The rank of the probe's own identity (1 = top), `None` for a non-mated probe or a
    /// missing face.
    pub fn rank(&self) -> Option<usize> {
        match self.mated_score {
            Some(s) if s.is_finite() => Some(self.others_above + 1),
            _ => None,
        }
    }
}

/// Scores one probe against per-identity scores (`scores[i]` for identity `i`), its own
/// identity being `own` when enrolled.
pub fn probe_result(scores: &[f32], own: Option<usize>) -> ProbeResult {
    let mated_score = own.map(|o| scores[o]);
    let mut best_other = f32::NEG_INFINITY;
    let mut others_above = 0;
    for (i, &s) in scores.iter().enumerate() {
        if Some(i) == own {
            continue;
        }
        best_other = best_other.max(s);
        if let Some(m) = mated_score {
            if s > m {
                others_above += 1;
            }
        }
    }
    ProbeResult { mated_score, best_other, others_above }
}

/// The closed-set identification rate at rank k: mated probes whose own identity ranks in the
/// top k (a missing face is a miss).
pub fn rank_k(probes: &[ProbeResult], k: usize) -> f64 {
    let mated: Vec<&ProbeResult> = probes.iter().filter(|p| p.mated_score.is_some()).collect();
    rate(mated.iter().filter(|p| p.rank().is_some_and(|r| r <= k)).count(), mated.len())
}

/// The cumulative match curve: rank-1 … rank-`max_rank` rates.
pub fn cmc(probes: &[ProbeResult], max_rank: usize) -> Vec<f64> {
    (1..=max_rank).map(|k| rank_k(probes, k)).collect()
}

/// Open-set identification at one threshold.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OpenSetPoint {
    pub target_fpir: f64,
    pub threshold: f32,
    /// Non-mated probes whose best score clears the threshold / non-mated probes.
    pub fpir: f64,
    /// Mated probes whose own identity ranks first *and* clears the threshold / mated probes.
    pub dir: f64,
    pub nonmated: usize,
    pub mated: usize,
    pub threshold_ci95: [f32; 2],
    pub support: Support,
}

/// The detection and identification rate at the threshold that holds the false-positive
/// identification rate (unknown people named as someone) at or under `target_fpir`.
pub fn dir_at_fpir(probes: &[ProbeResult], target_fpir: f64) -> Option<OpenSetPoint> {
    let nonmated: Vec<f32> = probes.iter().filter(|p| p.mated_score.is_none()).map(|p| p.best()).collect();
    let t = threshold_at_far(&nonmated, target_fpir)?;
    Some(open_set_at(probes, t.threshold, target_fpir, t.threshold_ci95, t.support))
}

fn open_set_at(probes: &[ProbeResult], t: f32, target: f64, ci: [f32; 2], support: Support) -> OpenSetPoint {
    let nonmated: Vec<f32> = probes.iter().filter(|p| p.mated_score.is_none()).map(|p| p.best()).collect();
    let mated: Vec<&ProbeResult> = probes.iter().filter(|p| p.mated_score.is_some()).collect();
    let hits = mated.iter().filter(|p| p.rank() == Some(1) && p.mated_score.is_some_and(|s| s >= t)).count();
    OpenSetPoint {
        target_fpir: target,
        threshold: t,
        fpir: accept_rate(&nonmated, t),
        dir: rate(hits, mated.len()),
        nonmated: nonmated.len(),
        mated: mated.len(),
        threshold_ci95: ci,
        support,
    }
}

/// DIR and FPIR at a given threshold (e.g. the shipped one).
pub fn open_set_at_threshold(probes: &[ProbeResult], t: f32) -> OpenSetPoint {
    let nonmated = probes.iter().filter(|p| p.mated_score.is_none()).count();
    let support = if nonmated == 0 { Support::Insufficient } else { Support::Adequate };
    open_set_at(probes, t, f64::NAN, [t, t], support)
}

/// The per-comparison FAR that gives a false-positive identification rate `fpir` against a
/// gallery of `n` identities, if an unknown face's scores against different identities were
/// independent: 1 − (1 − fpir)^(1/n) (≈ fpir/n).
pub fn per_comparison_far(fpir: f64, n: usize) -> f64 {
    if n == 0 {
        return fpir;
    }
    -((-fpir).ln_1p() / n as f64).exp_m1()
}

/// Log-linear interpolation in a table of `[far, threshold]` rows (any order): the threshold
/// for `far`. `None` when `far` lies outside the table's FAR range (the data behind the table
/// cannot say).
pub fn interpolate_far_table(table: &[[f64; 2]], far: f64) -> Option<f32> {
    let mut rows: Vec<[f64; 2]> = table.iter().copied().filter(|r| r[0] > 0.0 && r[0].is_finite()).collect();
    rows.sort_by(|a, b| b[0].total_cmp(&a[0]));
    if rows.is_empty() || !(far > 0.0) {
        return None;
    }
    if rows.len() == 1 {
        return ((far - rows[0][0]).abs() <= 1e-12 * far).then_some(rows[0][1] as f32);
    }
    for w in rows.windows(2) {
        let ([f0, t0], [f1, t1]) = (w[0], w[1]);
        if far <= f0 * (1.0 + 1e-12) && far >= f1 * (1.0 - 1e-12) {
            let x = (f0.ln() - far.ln()) / (f0.ln() - f1.ln());
            return Some((t0 + x.clamp(0.0, 1.0) * (t1 - t0)) as f32);
        }
    }
    None
}

/// Age bands of the attribute report, inclusive: children, young adults, adults, older.
pub const AGE_BANDS: [(u32, u32); 4] = [(0, 12), (13, 29), (30, 49), (50, 200)];

/// One labelled photo and what the model said about it (`None`: no face found).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttrSample {
    pub age: f32,
    pub male: bool,
    pub predicted: Option<(f32, f32)>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AttrScore {
    pub label: String,
    /// Photos with a face found (counted in MAE and accuracy).
    pub n: usize,
    pub faces_not_found: usize,
    pub age_mae: f64,
    /// Mean of predicted − true age.
    pub age_bias: f64,
    /// male_prob >= 0.5 called male, as `analyze` does.
    pub gender_accuracy: f64,
}

fn score_attrs(label: String, samples: &[&AttrSample]) -> AttrScore {
    let found: Vec<(f32, bool, f32, f32)> =
        samples.iter().filter_map(|s| s.predicted.map(|(a, p)| (s.age, s.male, a, p))).collect();
    let n = found.len();
    let mean = |f: &dyn Fn(&(f32, bool, f32, f32)) -> f64| {
        if n == 0 {
            f64::NAN
        } else {
            found.iter().map(f).sum::<f64>() / n as f64
        }
    };
    AttrScore {
        label,
        n,
        faces_not_found: samples.len() - n,
        age_mae: mean(&|s| (s.2 - s.0).abs() as f64),
        age_bias: mean(&|s| (s.2 - s.0) as f64),
        gender_accuracy: mean(&|s| if (s.3 >= 0.5) == s.1 { 1.0 } else { 0.0 }),
    }
}

/// Age MAE and gender accuracy over all samples (first row, label "all") and per age band
/// (bands without samples are left out).
pub fn attribute_scores(samples: &[AttrSample]) -> Vec<AttrScore> {
    let mut rows = vec![score_attrs("all".into(), &samples.iter().collect::<Vec<_>>())];
    for (lo, hi) in AGE_BANDS {
        let band: Vec<&AttrSample> =
            samples.iter().filter(|s| s.age >= lo as f32 && s.age < (hi + 1) as f32).collect();
        if !band.is_empty() {
            let label = if hi >= 200 { format!("{lo}+") } else { format!("{lo}-{hi}") };
            rows.push(score_attrs(label, &band));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_up_is_the_next_float() {
        assert!(next_up(0.5) > 0.5 && next_up(0.5) - 0.5 < 1e-7);
        assert!(next_up(-0.5) > -0.5);
        assert_eq!(next_up(0.0), f32::from_bits(1));
        assert_eq!(next_up(f32::NEG_INFINITY), f32::MIN);
    }

    #[test]
    fn normal_quantile_known_points() {
        assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-8);
        assert!((normal_quantile(0.5)).abs() < 1e-12);
        assert!((normal_quantile(0.001) + 3.090232306167813).abs() < 1e-7);
    }

    #[test]
    fn poisson_interval_small_counts() {
        // Poisson(3): P(K<=0)=0.0498 >= 0.025 → lo 0; P(K<=6)=0.966, P(K<=7)=0.988 → hi 7.
        assert_eq!(binomial_interval(3000, 1e-3, 0.95), (0, 7));
        // Poisson(10): P(K<=3)=0.0103, P(K<=4)=0.0293 → lo 4; P(K<=16)=0.973, 17: 0.986 → 17.
        assert_eq!(binomial_interval(10_000, 1e-3, 0.95), (4, 17));
    }

    #[test]
    fn per_comparison_far_approaches_fpir_over_n() {
        assert!((per_comparison_far(0.01, 1) - 0.01).abs() < 1e-15);
        let p = per_comparison_far(1e-3, 100);
        assert!((p - 1e-5).abs() / 1e-5 < 1e-3, "{p}");
        assert!(((1.0 - p).powi(100) - (1.0 - 1e-3)).abs() < 1e-12);
    }
}
