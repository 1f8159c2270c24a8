//! Presentation-attack detection (passive liveness): is the face in front of the camera a live
//! person, or a printed photo or a screen?
//!
//! Two MiniFASNet models from minivision-ai/Silent-Face-Anti-Spoofing (`models/minifasnet-*`,
//! converted by `train/liveness/`) look at the face in its surroundings: each takes an 80×80
//! crop of the **original frame** around the detector's box, scaled by the model's
//! `crop_scale` (2.7 and 4.0), so that it sees the edges of a phone or a sheet of paper, the
//! moiré of a screen, the flat lighting of a print. The aligned 112-px face would hide all of
//! that. The crop rule is the reference's (`src/generate_patches.py`): the integer box
//! `[x, y, w, h]` that its detector returns, scaled about its centre, the scale clamped to the
//! largest that fits the frame, shifted (never padded) to stay inside, then resized to 80×80
//! with OpenCV's `INTER_LINEAR` arithmetic, BGR 0–255, no mean or std. [`crop_box`] and
//! [`resize_like_opencv`] are checked against the reference's numbers
//! (`models/golden/liveness-crops.json`, `tests/liveness.rs`).
//!
//! The score of a face is the mean over the models of their probability of class 1 (live), as
//! the reference sums the models' softmax outputs. It is a number in [0, 1]; a face is judged
//! live at or above the threshold in force ([`SHIPPED_THRESHOLD`], or `[liveness] threshold` of
//! a configuration file written by `facegate calibrate --spoof-labels`).
//!
//! The models answer "live" to noise (uniform noise scores about 0.99): they only judge faces
//! that the detector found and, in the kiosk, that passed the quality gate.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::detect::BBox;
use crate::error::ModelError;
use crate::model::{Model, Task};

/// The liveness models, by embedded name, fused by the mean of their live probabilities.
pub const MODELS: [&str; 2] = ["minifasnet-v2", "minifasnet-v1se"];

/// The fused live probability at or above which a face is judged live when no calibration is
/// in force. What it rests on: README "Liveness" and `models/MODEL_CARD.md`.
pub const SHIPPED_THRESHOLD: f32 = 0.5;

/// Whether a face with this fused live probability is judged live at `threshold`.
pub fn is_live(liveness: f32, threshold: f32) -> bool {
    liveness >= threshold
}

/// A liveness threshold chosen by `facegate calibrate --spoof-labels`, with what it rests on:
/// `[liveness]` of a configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LivenessCalibration {
    /// Fused live probability at or above which a face is judged live.
    #[serde(serialize_with = "crate::config::short")]
    pub threshold: f32,
    /// The attack presentation classification error rate of the worst species measured at the
    /// threshold (at most the target asked for, when the data could meet it).
    #[serde(default)]
    pub apcer: Option<f64>,
    /// The bona fide rejection rate measured at the threshold.
    #[serde(default)]
    pub bpcer: Option<f64>,
    /// Attack and bona fide presentations it rests on.
    #[serde(default)]
    pub attacks: Option<u64>,
    #[serde(default)]
    pub bona_fide: Option<u64>,
    /// The data and the command line.
    #[serde(default)]
    pub data: String,
    #[serde(default)]
    pub method: String,
}

impl LivenessCalibration {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.threshold) {
            anyhow::bail!("liveness.threshold {} is outside [0, 1]", self.threshold);
        }
        for (name, v) in [("apcer", self.apcer), ("bpcer", self.bpcer)] {
            if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                anyhow::bail!("liveness.{name} is outside [0, 1]");
            }
        }
        Ok(())
    }
}

/// The integer face box `[x, y, w, h]` the reference's detector hands to its crop:
/// `[int(left), int(top), int(right - left + 1), int(bottom - top + 1)]`. `None` for a box
/// with a non-finite or negative corner.
pub fn reference_box(b: &BBox) -> Option<[i64; 4]> {
    let c = [b.x0, b.y0, b.x1, b.y1].map(f64::from);
    if c.iter().any(|v| !v.is_finite() || *v < 0.0 || *v > 1e7) {
        return None;
    }
    // `as` truncates toward zero, as Python's int() does.
    Some([c[0] as i64, c[1] as i64, (c[2] - c[0] + 1.0) as i64, (c[3] - c[1] + 1.0) as i64])
}

/// The reference's crop rectangle, `[left, top, right, bottom]` with right and bottom
/// inclusive, for the box `[x, y, w, h]` in a `src_w`×`src_h` frame at `scale`: the box scaled
/// about its centre, the scale clamped to `min((src_h − 1)/h, (src_w − 1)/w)`, shifted back
/// inside the frame, each side truncated toward zero. Computed in f64 as the reference does in
/// Python. `None` when the box or the frame is empty.
pub fn crop_box(src_w: u32, src_h: u32, bbox: [i64; 4], scale: f64) -> Option<[i64; 4]> {
    let [x, y, w, h] = bbox.map(|v| v as f64);
    if w < 1.0 || h < 1.0 || src_w < 2 || src_h < 2 || !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    let (sw, sh) = (src_w as f64, src_h as f64);
    let scale = scale.min((sw - 1.0) / w).min((sh - 1.0) / h);
    let (new_w, new_h) = (w * scale, h * scale);
    let (cx, cy) = (w / 2.0 + x, h / 2.0 + y);
    let (mut l, mut t, mut r, mut b) = (cx - new_w / 2.0, cy - new_h / 2.0, cx + new_w / 2.0, cy + new_h / 2.0);
    if l < 0.0 {
        r -= l;
        l = 0.0;
    }
    if t < 0.0 {
        b -= t;
        t = 0.0;
    }
    if r > sw - 1.0 {
        l -= r - sw + 1.0;
        r = sw - 1.0;
    }
    if b > sh - 1.0 {
        t -= b - sh + 1.0;
        b = sh - 1.0;
    }
    // A box far outside the frame could still end outside after the shifts: clamp, so the
    // crop always reads pixels of the frame.
    let clamp = |v: f64, max: f64| (v as i64).clamp(0, max as i64);
    let out = [clamp(l, sw - 1.0), clamp(t, sh - 1.0), clamp(r, sw - 1.0), clamp(b, sh - 1.0)];
    (out[2] >= out[0] && out[3] >= out[1]).then_some(out)
}

/// Resizes the inclusive rectangle `[left, top, right, bottom]` of `img` to `out_w`×`out_h` as
/// OpenCV's `cv2.resize(..., INTER_LINEAR)` does for 8-bit images: half-pixel centres, edge
/// samples clamped, weights in 11-bit fixed point, the vertical pass as its SIMD code rounds
/// it; an exact 2× reduction goes through its area average, as OpenCV switches it.
pub fn resize_like_opencv(img: &RgbImage, rect: [i64; 4], out_w: u32, out_h: u32) -> RgbImage {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let mut out = RgbImage::new(out_w, out_h);
    if iw == 0 || ih == 0 || out_w == 0 || out_h == 0 {
        return out;
    }
    // Any rectangle is brought inside the image, so every read below is in bounds.
    let [l, t, r, b] = rect.map(|v| v.max(0) as usize);
    let (r, b) = (r.min(iw - 1), b.min(ih - 1));
    let (l, t) = (l.min(r), t.min(b));
    let (sw, sh) = (r + 1 - l, b + 1 - t);
    let (ow, oh) = (out_w as usize, out_h as usize);
    let px = img.as_raw();
    let at = |x: usize, y: usize, c: usize| px[((t + y) * iw + l + x) * 3 + c] as i32;
    if sw == 2 * ow && sh == 2 * oh {
        for (i, p) in out.as_mut().chunks_exact_mut(3).enumerate() {
            let (x, y) = (i % ow * 2, i / ow * 2);
            for (c, v) in p.iter_mut().enumerate() {
                *v = ((at(x, y, c) + at(x + 1, y, c) + at(x, y + 1, c) + at(x + 1, y + 1, c) + 2) >> 2) as u8;
            }
        }
        return out;
    }
    // (index of the first source sample, its weight, the second's) per output position.
    let taps = |src: usize, dst: usize| -> Vec<(usize, i32, i32)> {
        let scale = src as f64 / dst as f64;
        (0..dst)
            .map(|d| {
                // OpenCV keeps the position in single precision and rounds the weights half
                // to even (cvRound).
                let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
                let mut s = f.floor();
                let mut frac = f - s;
                if s < 0.0 {
                    s = 0.0;
                    frac = 0.0;
                }
                if s >= (src - 1) as f32 {
                    s = (src - 1) as f32;
                    frac = 0.0;
                }
                let w1 = (frac * 2048.0).round_ties_even() as i32;
                let w0 = ((1.0 - frac) * 2048.0).round_ties_even() as i32;
                (s as usize, w0, w1)
            })
            .collect()
    };
    let (xs, ys) = (taps(sw, ow), taps(sh, oh));
    // Horizontal pass per source row that the vertical pass reads, values × 2048.
    let row = |y: usize| -> Vec<i32> {
        let mut v = Vec::with_capacity(ow * 3);
        for &(s, w0, w1) in &xs {
            let s1 = (s + 1).min(sw - 1);
            for c in 0..3 {
                v.push(if w1 == 0 { at(s, y, c) * 2048 } else { at(s, y, c) * w0 + at(s1, y, c) * w1 });
            }
        }
        v
    };
    let dst = out.as_mut();
    // The source rows the output rows read only move down: keep the last pair.
    let mut pair: Option<(usize, Vec<i32>, Vec<i32>)> = None;
    for (oy, &(s, w0, w1)) in ys.iter().enumerate() {
        let (r0, r1) = match pair.take() {
            Some((at, r0, r1)) if at == s => (r0, r1),
            Some((at, _, r1)) if at + 1 == s => (r1, row((s + 1).min(sh - 1))),
            _ => (row(s), row((s + 1).min(sh - 1))),
        };
        let (w0, w1) = if w1 == 0 { (2048, 0) } else { (w0, w1) };
        for (i, (a, b)) in r0.iter().zip(&r1).enumerate() {
            let v = ((((a >> 4) * w0) >> 16) + (((b >> 4) * w1) >> 16) + 2) >> 2;
            dst[oy * ow * 3 + i] = v.clamp(0, 255) as u8;
        }
        pair = Some((s, r0, r1));
    }
    out
}

/// One liveness model with its crop scale and the index of its live class.
struct Scorer {
    model: Model,
    scale: f64,
    live_class: usize,
}

/// The liveness models, loaded once; [`Liveness::score`] per face.
pub struct Liveness {
    scorers: Vec<Scorer>,
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.scorers.iter().map(|s| s.model.name())).finish()
    }
}

impl Liveness {
    /// Loads the embedded liveness models ([`MODELS`]).
    pub fn new() -> Result<Liveness, ModelError> {
        let scorers = MODELS
            .iter()
            .map(|name| {
                let model = Model::embedded(name)?;
                let m = &model.manifest;
                let bad = |detail: &str| ModelError::Manifest { model: name.to_string(), detail: detail.into() };
                if m.task != Task::Liveness {
                    return Err(bad("not a liveness model"));
                }
                let scale = m.crop_scale.ok_or_else(|| bad("a liveness model needs crop_scale"))? as f64;
                let live_class = m.live_class.ok_or_else(|| bad("a liveness model needs live_class"))?;
                Ok(Scorer { model, scale, live_class })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Liveness { scorers })
    }

    /// Probability that the face in `bbox` is live: the mean of the models' live-class
    /// probabilities.
    pub fn score(&self, img: &RgbImage, bbox: &BBox) -> Result<f32, ModelError> {
        let mut sum = 0.0;
        for s in &self.scorers {
            sum += s.run(&s.crop(img, bbox)?)?;
        }
        Ok((sum / self.scorers.len().max(1) as f32).clamp(0.0, 1.0))
    }
}

impl Scorer {
    fn crop(&self, img: &RgbImage, bbox: &BBox) -> Result<RgbImage, ModelError> {
        let contract = |detail: &str| ModelError::Contract { model: self.model.name().to_string(), detail: detail.into() };
        let rect = reference_box(bbox)
            .and_then(|b| crop_box(img.width(), img.height(), b, self.scale))
            .ok_or_else(|| contract("the face box is empty or outside the frame"))?;
        let [h, w] = self.model.input_hw();
        Ok(resize_like_opencv(img, rect, w as u32, h as u32))
    }

    fn run(&self, crop: &RgbImage) -> Result<f32, ModelError> {
        let outputs = self.model.run(self.model.input_from_rgb(crop)?)?;
        let (probs, _) = self.model.output(&outputs, "probs")?;
        match probs.get(self.live_class) {
            Some(p) if p.is_finite() => Ok(p.clamp(0.0, 1.0)),
            _ => Err(ModelError::Contract {
                model: self.model.name().to_string(),
                detail: "the live probability is missing or not finite".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_box_scales_clamps_and_shifts() {
        // Inside: 100×100 box at (200, 100) in 640×480, ×2 about its centre (250, 150).
        assert_eq!(crop_box(640, 480, [200, 100, 100, 100], 2.0), Some([150, 50, 350, 250]));
        // Overflows the top-left: shifted, not padded.
        assert_eq!(crop_box(640, 480, [0, 0, 100, 100], 2.7), Some([0, 0, 270, 270]));
        // Too big for the frame: the scale is clamped to (480 − 1) / 200.
        let b = crop_box(640, 480, [220, 140, 200, 200], 4.0).unwrap();
        assert_eq!((b[1], b[3]), (0, 479));
        assert!(crop_box(640, 480, [0, 0, 0, 10], 2.7).is_none());
        assert!(crop_box(1, 480, [0, 0, 1, 10], 2.7).is_none());
    }

    #[test]
    fn crop_box_stays_inside_for_any_box() {
        for &(x, y, w, h) in &[(-500, -500, 40, 40), (10_000, 10_000, 40, 40), (0, 0, 1, 1), (639, 479, 1, 1), (-5, 3, 700, 20)] {
            if let Some([l, t, r, b]) = crop_box(640, 480, [x, y, w, h], 4.0) {
                assert!(l >= 0 && t >= 0 && r <= 639 && b <= 479 && l <= r && t <= b, "{x},{y},{w},{h}");
            }
        }
    }

    #[test]
    fn resize_reads_inside_the_image_whatever_the_rectangle() {
        let img = RgbImage::from_pixel(10, 8, image::Rgb([9, 9, 9]));
        for rect in [[-5, -5, 100, 100], [50, 50, 60, 60], [7, 6, 2, 1], [0, 0, 0, 0], [9, 7, 9, 7]] {
            let out = resize_like_opencv(&img, rect, 80, 80);
            assert!(out.pixels().all(|p| p.0 == [9, 9, 9]), "{rect:?}");
        }
        assert_eq!(resize_like_opencv(&RgbImage::new(0, 0), [0, 0, 5, 5], 4, 4).dimensions(), (4, 4));
    }

    #[test]
    fn identity_and_halving_resizes() {
        let img = RgbImage::from_fn(8, 6, |x, y| image::Rgb([(x * 30) as u8, (y * 40) as u8, 7]));
        let same = resize_like_opencv(&img, [2, 1, 5, 4], 4, 4);
        for (x, y, p) in same.enumerate_pixels() {
            assert_eq!(p, img.get_pixel(x + 2, y + 1));
        }
        let half = resize_like_opencv(&img, [0, 0, 7, 5], 4, 3);
        // Area average of the 2×2 block at (2, 2): x = 60, 90 → 75; y = 80, 120 → 100.
        assert_eq!(half.get_pixel(1, 1).0, [75, 100, 7]);
    }
}
