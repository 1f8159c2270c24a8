//! The configuration file and the calibrated decision thresholds.
//!
//! Layers, lowest first: the embedder manifest's `match_threshold` and `[calibration]`
//! (shipped, measured on development data), a configuration file given with `--config`
//! (written by `facegate calibrate` on the installer's own photos), then `--threshold`.
//! The file is validated into [`Config`] before any model is loaded; an out-of-range value is
//! refused with its field's name.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::eval::metrics::{interpolate_far_table, per_comparison_far};

/// A calibrated 1:1 threshold and 1:N rule, with what they rest on. The same table appears as
/// `[calibration]` in the embedder manifest and in a configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Cosine similarity at or above which two faces are called the same person (1:1).
    #[serde(serialize_with = "short")]
    pub threshold: f32,
    /// The false-accept rate (impostor comparisons accepted) the threshold was chosen for.
    pub far: f64,
    /// 95% interval of the threshold given the impostor comparisons it rests on.
    #[serde(serialize_with = "short2")]
    pub threshold_ci95: [f32; 2],
    /// Impostor comparisons behind the threshold.
    pub impostor_comparisons: u64,
    /// The data the comparisons came from.
    pub data: String,
    /// How it was made (the command line).
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub one_to_n: Option<OneToN>,
}

/// The 1:N rule: the threshold grows with the gallery size so that an unknown face is named as
/// someone at most `fpir` of the time.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OneToN {
    /// Target false-positive identification rate per unknown face.
    pub fpir: f64,
    /// How `far_table` is used (for people reading the file).
    pub rule: String,
    /// `[per-comparison FAR, threshold]` rows measured on the calibration data, FAR descending.
    pub far_table: Vec<[f64; 2]>,
    /// Set when calibrated against an installed gallery: its size and the threshold measured
    /// directly from unknown faces against it.
    #[serde(default)]
    pub gallery_size: Option<usize>,
    #[serde(default, serialize_with = "short_opt")]
    pub gallery_threshold: Option<f32>,
}

pub const ONE_TO_N_RULE: &str = "threshold(N) = far_table threshold at per-comparison FAR 1-(1-fpir)^(1/N) \
(log-linear between rows), never below the 1:1 threshold; past the table's last row the gallery is too \
large for the calibration data and the last row's threshold is used (a warning is logged)";

/// An f32 written with the fewest digits that read back to it (0.4321, not 0.43209999799728394).
fn short_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

pub(crate) fn short<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(short_f64(*v))
}

fn short2<S: serde::Serializer>(v: &[f32; 2], s: S) -> Result<S::Ok, S::Error> {
    [short_f64(v[0]), short_f64(v[1])].serialize(s)
}

fn short_opt<S: serde::Serializer>(v: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
    v.map(short_f64).serialize(s)
}

impl Calibration {
    pub fn validate(&self) -> Result<()> {
        let in_range = |v: f32| (-1.0..=1.0).contains(&v);
        if !in_range(self.threshold) {
            bail!("calibration.threshold {} is outside [-1, 1]", self.threshold);
        }
        if !(self.far > 0.0 && self.far < 1.0) {
            bail!("calibration.far {} is outside (0, 1)", self.far);
        }
        if !self.threshold_ci95.iter().all(|&v| in_range(v)) {
            bail!("calibration.threshold_ci95 {:?} is outside [-1, 1]", self.threshold_ci95);
        }
        if let Some(r) = &self.one_to_n {
            if !(r.fpir > 0.0 && r.fpir < 1.0) {
                bail!("calibration.one_to_n.fpir {} is outside (0, 1)", r.fpir);
            }
            if r.far_table.is_empty() {
                bail!("calibration.one_to_n.far_table is empty");
            }
            for row in &r.far_table {
                if !(row[0] > 0.0 && row[0] < 1.0) || !in_range(row[1] as f32) {
                    bail!("calibration.one_to_n.far_table row {row:?}: FAR must be in (0, 1), threshold in [-1, 1]");
                }
            }
            if r.far_table.windows(2).any(|w| w[1][0] >= w[0][0] || w[1][1] < w[0][1]) {
                bail!("calibration.one_to_n.far_table must have FAR falling and threshold rising row by row");
            }
            if r.gallery_threshold.is_some_and(|t| !in_range(t)) {
                bail!("calibration.one_to_n.gallery_threshold is outside [-1, 1]");
            }
        }
        Ok(())
    }

    /// The threshold for identification against `n` identities: see [`ONE_TO_N_RULE`]. With
    /// no 1:N rule, the 1:1 threshold. The flag says the gallery is past the table.
    pub fn threshold_for_gallery(&self, n: usize) -> (f32, bool) {
        let Some(rule) = &self.one_to_n else { return (self.threshold, false) };
        if let (Some(size), Some(t)) = (rule.gallery_size, rule.gallery_threshold) {
            if size == n {
                return (t.max(self.threshold), false);
            }
        }
        let far = per_comparison_far(rule.fpir, n.max(1));
        match interpolate_far_table(&rule.far_table, far) {
            Some(t) => (t.max(self.threshold), false),
            None => {
                let last = rule.far_table.iter().min_by(|a, b| a[0].total_cmp(&b[0])).map_or(self.threshold, |r| r[1] as f32);
                let first = rule.far_table.iter().max_by(|a, b| a[0].total_cmp(&b[0])).map_or(0.0, |r| r[0]);
                // Above the table's highest FAR (a tiny gallery and a loose fpir): the 1:1 rule.
                if far > first {
                    (self.threshold, false)
                } else {
                    (last.max(self.threshold), true)
                }
            }
        }
    }
}

/// `WIDTHxHEIGHT`.
pub fn parse_wxh(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or("expected WIDTHxHEIGHT")?;
    let w = w.trim().parse().map_err(|_| "width is not a number")?;
    let h = h.trim().parse().map_err(|_| "height is not a number")?;
    Ok((w, h))
}

/// A detector input size, `WIDTHxHEIGHT` in multiples of 32, as `[height, width]`.
pub fn parse_detector_size(s: &str) -> Result<[usize; 2], String> {
    let (w, h) = parse_wxh(s)?;
    if w == 0 || h == 0 || !w.is_multiple_of(32) || !h.is_multiple_of(32) || w > 4096 || h > 4096 {
        return Err("width and height must be multiples of 32 between 32 and 4096".into());
    }
    Ok([h as usize, w as usize])
}

/// The configuration file (TOML).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// `facegate run`'s settings: `[kiosk]`, `[kiosk.policy]`, `[kiosk.quality]`,
    /// `[kiosk.tracker]`, `[kiosk.relay]`. Kept as written, since they go over a board profile's
    /// key by key; [`Config::kiosk_config`] checks them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kiosk: Option<toml::Table>,
    /// The liveness threshold chosen on the site's own camera (`facegate calibrate
    /// --spoof-labels`); it replaces the shipped one for every command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<crate::liveness::LivenessCalibration>,
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        let c: Config = toml::from_str(text)?;
        if let Some(cal) = &c.calibration {
            cal.validate()?;
        }
        if let Some(l) = &c.liveness {
            l.validate()?;
        }
        Ok(c)
    }

    /// The kiosk settings: this file's `[kiosk]` over `board`'s (or over the defaults), checked.
    pub fn kiosk_config(&self, board: Option<&crate::board::Board>) -> Result<crate::kiosk::KioskConfig> {
        match board {
            Some(b) => b.kiosk_config(self.kiosk.as_ref()),
            None => crate::kiosk::KioskConfig::from_table(self.kiosk.clone().unwrap_or_default()),
        }
        .map_err(|e| e.context("[kiosk]"))
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text = crate::frame::read_text_file(path, 1 << 20).with_context(|| format!("reading config {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Writes the file whole (a temporary file renamed over it, so a reader never sees half).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = format!(
            "# facegate configuration; [calibration] written by `facegate calibrate`.\n{}",
            toml::to_string(self)?
        );
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal() -> Calibration {
        Calibration {
            threshold: 0.5,
            far: 1e-3,
            threshold_ci95: [0.375, 0.625],
            impostor_comparisons: 1_000_000,
            data: "test".into(),
            method: String::new(),
            one_to_n: Some(OneToN {
                fpir: 1e-3,
                rule: ONE_TO_N_RULE.into(),
                far_table: vec![[1e-3, 0.5], [1e-4, 0.625], [1e-5, 0.75]],
                gallery_size: None,
                gallery_threshold: None,
            }),
        }
    }

    #[test]
    fn one_to_n_threshold_grows_with_the_gallery() {
        let c = cal();
        c.validate().unwrap();
        assert!((c.threshold_for_gallery(1).0 - 0.5).abs() < 1e-4);
        // FPIR 1e-3 over 10 identities: per-comparison ≈ 1e-4.
        assert!((c.threshold_for_gallery(10).0 - 0.625).abs() < 1e-3);
        let (t, past) = c.threshold_for_gallery(1000);
        assert!(past && (t - 0.75).abs() < 1e-6);
        let (t31, _) = c.threshold_for_gallery(31);
        assert!(t31 > 0.625 && t31 < 0.75, "{t31}");
    }

    #[test]
    fn config_round_trips_and_rejects_bad_fields() {
        let c = Config { calibration: Some(cal()), kiosk: None, liveness: None };
        let text = toml::to_string_pretty(&c).unwrap();
        assert_eq!(Config::parse(&text).unwrap(), c);
        let bad = text.replace("threshold = 0.5\n", "threshold = 1.5\n");
        let e = Config::parse(&bad).unwrap_err();
        assert!(format!("{e:#}").contains("calibration.threshold"), "{e:#}");
        assert!(Config::parse("[calibration]\nthreshold = 0.4\nfrobs = 1\n").is_err());
    }
}
