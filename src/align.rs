//! Face alignment: the 5-point template, the least-squares similarity transform onto it, and a
//! bilinear warp. Pure geometry, independent of any model.

use image::{Rgb, RgbImage};

/// A point in image pixels (x right, y down).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

impl Point {
    pub const fn new(x: f32, y: f32) -> Point {
        Point { x, y }
    }
}

/// The ArcFace 112×112 template (insightface `utils/face_align.py`, `arcface_dst`): image-left
/// eye, image-right eye, nose tip, image-left and image-right mouth corners.
pub const ARCFACE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// `template` (given for a 112-pixel crop) mapped to an `out_size` crop with `zoom`:
/// `t' = (t − 56)·zoom·out_size/112 + out_size/2`. `zoom < 1` shows more context.
pub fn scaled_template(template: &[[f32; 2]; 5], out_size: usize, zoom: f32) -> [Point; 5] {
    let k = zoom * out_size as f32 / 112.0;
    let c = out_size as f32 / 2.0;
    template.map(|[x, y]| Point::new((x - 56.0) * k + c, (y - 56.0) * k + c))
}

/// `p ↦ (a·x − b·y + tx, b·x + a·y + ty)`: rotation, uniform scale and translation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Similarity {
    pub fn apply(&self, p: Point) -> Point {
        Point::new(self.a * p.x - self.b * p.y + self.tx, self.b * p.x + self.a * p.y + self.ty)
    }

    /// The inverse transform, or `None` when this one is degenerate (zero scale).
    pub fn inverse(&self) -> Option<Similarity> {
        let n = self.a * self.a + self.b * self.b;
        if !(n.is_finite() && n > 1e-12) {
            return None;
        }
        let (a, b) = (self.a / n, -self.b / n);
        Some(Similarity { a, b, tx: -(a * self.tx - b * self.ty), ty: -(b * self.tx + a * self.ty) })
    }

    pub fn scale(&self) -> f32 {
        (self.a * self.a + self.b * self.b).sqrt()
    }
}

/// Least-squares similarity transform taking `src` onto `dst` (Umeyama's method restricted to
/// 2-D without reflection, which has this closed form). `None` if the source points coincide.
pub fn similarity_transform(src: &[Point], dst: &[Point]) -> Option<Similarity> {
    let n = src.len().min(dst.len());
    if n < 2 {
        return None;
    }
    let mean = |ps: &[Point]| {
        let (sx, sy) = ps[..n].iter().fold((0.0f64, 0.0f64), |(x, y), p| (x + p.x as f64, y + p.y as f64));
        (sx / n as f64, sy / n as f64)
    };
    let (sx, sy) = mean(src);
    let (dx, dy) = mean(dst);
    let (mut dot, mut cross, mut norm) = (0.0f64, 0.0f64, 0.0f64);
    for (p, q) in src[..n].iter().zip(&dst[..n]) {
        let (px, py) = (p.x as f64 - sx, p.y as f64 - sy);
        let (qx, qy) = (q.x as f64 - dx, q.y as f64 - dy);
        dot += px * qx + py * qy;
        cross += px * qy - py * qx;
        norm += px * px + py * py;
    }
    if !(norm.is_finite() && norm > 1e-9) {
        return None;
    }
    let (a, b) = (dot / norm, cross / norm);
    let tx = dx - (a * sx - b * sy);
    let ty = dy - (b * sx + a * sy);
    Some(Similarity { a: a as f32, b: b as f32, tx: tx as f32, ty: ty as f32 })
}

/// Warps `img` into an `out_w`×`out_h` crop where output pixel `q` takes the bilinear sample at
/// `to_crop⁻¹(q)`. Samples outside the image are black, as in OpenCV's `warpAffine` default.
pub fn warp(img: &RgbImage, to_crop: &Similarity, out_w: u32, out_h: u32) -> Option<RgbImage> {
    // The baseline x86-64 target has no rounding instruction: `floor` and `round` are libm
    // calls there (6 % of `analyze`). SSE4.1's `roundss` gives the same results.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.1") {
        // SAFETY: the CPU was just checked for SSE4.1, the only feature `warp_sse41` enables.
        return unsafe { warp_sse41(img, to_crop, out_w, out_h) };
    }
    warp_portable(img, to_crop, out_w, out_h)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
unsafe fn warp_sse41(img: &RgbImage, to_crop: &Similarity, out_w: u32, out_h: u32) -> Option<RgbImage> {
    warp_portable(img, to_crop, out_w, out_h)
}

/// The warp itself; `inline(always)` so that `warp_sse41` compiles its own copy.
#[inline(always)]
fn warp_portable(img: &RgbImage, to_crop: &Similarity, out_w: u32, out_h: u32) -> Option<RgbImage> {
    let inv = to_crop.inverse()?;
    let (w, h) = (img.width() as i64, img.height() as i64);
    let src = img.as_raw();
    let px = |x: i64, y: i64, c: usize| -> f32 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            src[((y * w + x) * 3) as usize + c] as f32
        }
    };
    let mut out = RgbImage::new(out_w, out_h);
    for (qx, qy, pixel) in out.enumerate_pixels_mut() {
        let p = inv.apply(Point::new(qx as f32, qy as f32));
        if !(p.x.is_finite() && p.y.is_finite()) {
            continue;
        }
        let (fx, fy) = (p.x.floor(), p.y.floor());
        let (x0, y0) = (fx as i64, fy as i64);
        let (ax, ay) = (p.x - fx, p.y - fy);
        let mut rgb = [0u8; 3];
        if x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h {
            // All four neighbours inside (nearly every pixel of a crop): read them as two runs
            // of two pixels, without a bounds check per sample; the same arithmetic as below.
            let at = ((y0 * w + x0) * 3) as usize;
            let (upper, lower) = (&src[at..at + 6], &src[at + 3 * w as usize..][..6]);
            for (c, v) in rgb.iter_mut().enumerate() {
                let top = upper[c] as f32 * (1.0 - ax) + upper[3 + c] as f32 * ax;
                let bottom = lower[c] as f32 * (1.0 - ax) + lower[3 + c] as f32 * ax;
                *v = (top * (1.0 - ay) + bottom * ay).round().clamp(0.0, 255.0) as u8;
            }
        } else {
            for (c, v) in rgb.iter_mut().enumerate() {
                let top = px(x0, y0, c) * (1.0 - ax) + px(x0 + 1, y0, c) * ax;
                let bottom = px(x0, y0 + 1, c) * (1.0 - ax) + px(x0 + 1, y0 + 1, c) * ax;
                *v = (top * (1.0 - ay) + bottom * ay).round().clamp(0.0, 255.0) as u8;
            }
        }
        *pixel = Rgb(rgb);
    }
    Some(out)
}

/// Aligns the face with `landmarks` onto `template` scaled to an `out_size` square crop.
pub fn align(
    img: &RgbImage,
    landmarks: &[Point; 5],
    template: &[[f32; 2]; 5],
    out_size: usize,
    zoom: f32,
) -> Option<RgbImage> {
    let dst = scaled_template(template, out_size, zoom);
    let t = similarity_transform(landmarks, &dst)?;
    warp(img, &t, out_size as u32, out_size as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn recovers_a_known_transform() {
        // 30° rotation, scale 1.7, shift (12, -5).
        let (s, th) = (1.7f32, 30f32.to_radians());
        let t = Similarity { a: s * th.cos(), b: s * th.sin(), tx: 12.0, ty: -5.0 };
        let src: Vec<Point> = ARCFACE_112.iter().map(|&[x, y]| Point::new(x, y)).collect();
        let dst: Vec<Point> = src.iter().map(|&p| t.apply(p)).collect();
        let est = similarity_transform(&src, &dst).unwrap();
        assert!(close(est.a, t.a, 1e-4) && close(est.b, t.b, 1e-4), "{est:?} vs {t:?}");
        assert!(close(est.tx, 12.0, 1e-3) && close(est.ty, -5.0, 1e-3), "{est:?}");
    }

    #[test]
    fn known_numbers_for_a_face() {
        // Landmarks of a face twice the template size, shifted by (100, 50): the transform
        // onto the template is scale 0.5, no rotation, translation (-50, -25).
        let lm: Vec<Point> =
            ARCFACE_112.iter().map(|&[x, y]| Point::new(2.0 * x + 100.0, 2.0 * y + 50.0)).collect();
        let dst = scaled_template(&ARCFACE_112, 112, 1.0);
        let t = similarity_transform(&lm, &dst).unwrap();
        assert!(close(t.a, 0.5, 1e-5) && close(t.b, 0.0, 1e-5), "{t:?}");
        assert!(close(t.tx, -50.0, 1e-3) && close(t.ty, -25.0, 1e-3), "{t:?}");
    }

    #[test]
    fn inverse_round_trips() {
        let t = Similarity { a: 0.8, b: -0.3, tx: 4.0, ty: 9.0 };
        let inv = t.inverse().unwrap();
        let p = Point::new(13.0, -7.5);
        let q = inv.apply(t.apply(p));
        assert!(close(p.x, q.x, 1e-4) && close(p.y, q.y, 1e-4));
    }

    #[test]
    fn degenerate_inputs_give_none() {
        let same = [Point::new(3.0, 3.0); 5];
        assert!(similarity_transform(&same, &same).is_none());
        let nan = [Point::new(f32::NAN, 1.0); 5];
        assert!(similarity_transform(&nan, &same).is_none());
        assert!(Similarity { a: 0.0, b: 0.0, tx: 1.0, ty: 1.0 }.inverse().is_none());
    }

    #[test]
    fn identity_warp_copies_pixels() {
        let img = RgbImage::from_fn(8, 6, |x, y| Rgb([x as u8 * 10, y as u8 * 20, 7]));
        let id = Similarity { a: 1.0, b: 0.0, tx: 0.0, ty: 0.0 };
        assert_eq!(warp(&img, &id, 8, 6).unwrap(), img);
    }

    #[test]
    fn warp_matches_per_sample_bilinear() {
        // A rotated, scaled crop that runs off the image on two sides: the in-image fast path
        // and the border path must both give what sampling each neighbour on its own gives.
        let img = RgbImage::from_fn(61, 47, |x, y| Rgb([(x * 37 + y * 11) as u8, (x * y) as u8, (200 - x) as u8]));
        let t = Similarity { a: 1.3, b: 0.4, tx: -9.5, ty: 3.25 };
        let got = warp(&img, &t, 64, 64).unwrap();
        let inv = t.inverse().unwrap();
        let sample = |x: i64, y: i64, c: usize| -> f32 {
            if (0..61).contains(&x) && (0..47).contains(&y) {
                img.get_pixel(x as u32, y as u32).0[c] as f32
            } else {
                0.0
            }
        };
        let (mut inside, mut border) = (0, 0);
        for (qx, qy, pixel) in got.enumerate_pixels() {
            let p = inv.apply(Point::new(qx as f32, qy as f32));
            let (fx, fy) = (p.x.floor(), p.y.floor());
            let (x0, y0, ax, ay) = (fx as i64, fy as i64, p.x - fx, p.y - fy);
            if (0..60).contains(&x0) && (0..46).contains(&y0) {
                inside += 1;
            } else {
                border += 1;
            }
            for c in 0..3 {
                let top = sample(x0, y0, c) * (1.0 - ax) + sample(x0 + 1, y0, c) * ax;
                let bottom = sample(x0, y0 + 1, c) * (1.0 - ax) + sample(x0 + 1, y0 + 1, c) * ax;
                let want = (top * (1.0 - ay) + bottom * ay).round().clamp(0.0, 255.0) as u8;
                assert_eq!(pixel.0[c], want, "({qx}, {qy}) channel {c}");
            }
        }
        assert!(inside > 100 && border > 100, "both paths exercised: {inside} inside, {border} at the border");
    }

    #[test]
    fn zoom_scales_about_the_centre() {
        let t = scaled_template(&ARCFACE_112, 224, 0.5);
        // zoom 0.5 at 224 px keeps the 112-px geometry, centred.
        assert!(close(t[0].x, 38.2946 + 56.0, 1e-4) && close(t[0].y, 51.6963 + 56.0, 1e-4));
    }
}
