//! Drawing results onto a frame: boxes, landmarks and a label per face, with the public-domain
//! 8×8 bitmap font from `font8x8` (no font file to ship).

use font8x8::{UnicodeFonts, BASIC_FONTS};
use image::{Rgb, RgbImage};

use crate::detect::BBox;
use crate::align::Point;

const LANDMARK_COLOURS: [[u8; 3]; 5] =
    [[255, 64, 64], [64, 160, 255], [64, 255, 64], [255, 200, 0], [255, 0, 255]];

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

fn to_i(v: f32) -> i64 {
    if v.is_finite() {
        v.round().clamp(-1e6, 1e6) as i64
    } else {
        0
    }
}

/// A rectangle outline `thickness` pixels wide.
pub fn draw_box(img: &mut RgbImage, b: &BBox, colour: [u8; 3], thickness: i64) {
    let (x0, y0, x1, y1) = (to_i(b.x0), to_i(b.y0), to_i(b.x1), to_i(b.y1));
    let (w, h) = (img.width() as i64, img.height() as i64);
    for t in 0..thickness {
        for x in (x0 - t).max(0)..=(x1 + t).min(w - 1) {
            put(img, x, y0 - t, colour);
            put(img, x, y1 + t, colour);
        }
        for y in (y0 - t).max(0)..=(y1 + t).min(h - 1) {
            put(img, x0 - t, y, colour);
            put(img, x1 + t, y, colour);
        }
    }
}

pub fn draw_landmarks(img: &mut RgbImage, points: &[Point; 5], radius: i64) {
    for (p, c) in points.iter().zip(LANDMARK_COLOURS) {
        let (cx, cy) = (to_i(p.x), to_i(p.y));
        for dy in -radius..=radius {
            for dx in -radius..=radius {
                if dx * dx + dy * dy <= radius * radius {
                    put(img, cx + dx, cy + dy, c);
                }
            }
        }
    }
}

/// Text at `(x, y)` (top-left), each font pixel drawn `scale`×`scale`, on a dark band.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, colour: [u8; 3], scale: i64) {
    let glyph_w = 8 * scale;
    let width = glyph_w * text.chars().count() as i64;
    for yy in y - scale..y + 8 * scale + scale {
        for xx in x - scale..x + width + scale {
            put(img, xx, yy, [0, 0, 0]);
        }
    }
    for (i, ch) in text.chars().enumerate() {
        let glyph = BASIC_FONTS.get(ch).or_else(|| BASIC_FONTS.get('?')).unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    for sy in 0..scale {
                        for sx in 0..scale {
                            let px = x + i as i64 * glyph_w + col * scale + sx;
                            put(img, px, y + row as i64 * scale + sy, colour);
                        }
                    }
                }
            }
        }
    }
}

/// Draws one face: its box, landmarks and `label` above the box (inside it at the top edge).
pub fn draw_face(img: &mut RgbImage, b: &BBox, landmarks: &[Point; 5], label: &str, colour: [u8; 3]) {
    let side = img.width().max(img.height()) as i64;
    let thickness = (side / 400).clamp(1, 6);
    let scale = (side / 500).clamp(1, 4);
    draw_box(img, b, colour, thickness);
    draw_landmarks(img, landmarks, thickness + 1);
    let ty = to_i(b.y0) - 10 * scale - thickness;
    let ty = if ty < 0 { to_i(b.y1) + thickness + scale } else { ty };
    draw_text(img, to_i(b.x0), ty, label, colour, scale);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawing_outside_the_image_is_clipped() {
        let mut img = RgbImage::new(20, 20);
        let b = BBox { x0: -50.0, y0: 5.0, x1: 1e9, y1: f32::NAN };
        draw_box(&mut img, &b, [255, 0, 0], 3);
        draw_text(&mut img, 15, 15, "héllo", [255, 255, 255], 2);
        draw_landmarks(&mut img, &[Point::new(-3.0, 40.0); 5], 3);
        assert_eq!(img.get_pixel(5, 5).0, [255, 0, 0]);
    }
}
