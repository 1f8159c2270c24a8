//! A replay scene for the kiosk's tests, benchmark and soak run: real faces cut from photos,
//! moving over a plain 640×480 background. An enrolled person walks up, a stranger walks up,
//! then both stand side by side, with a corrupt frame after the first part.

use std::path::Path;

use anyhow::{Context as _, Result};
use image::{imageops, Rgb, RgbImage};

use crate::pipeline::{Pipeline, Want};

/// The largest face of `img` with a margin of half its size, as the pipeline detects it.
pub fn face_patch(pipeline: &Pipeline, img: &RgbImage) -> Result<RgbImage> {
    let faces = pipeline.analyze(img, Want::default())?;
    let b = faces.first().context("no face in the photo")?.detection.bbox;
    let (cx, cy, side) = ((b.x0 + b.x1) / 2.0, (b.y0 + b.y1) / 2.0, (b.x1 - b.x0).max(b.y1 - b.y0) * 1.5);
    let x0 = (cx - side / 2.0).max(0.0) as u32;
    let y0 = (cy - side / 2.0).max(0.0) as u32;
    let w = (side as u32).min(img.width() - x0);
    let h = (side as u32).min(img.height() - y0);
    Ok(imageops::crop_imm(img, x0, y0, w, h).to_image())
}

pub fn background() -> RgbImage {
    RgbImage::from_fn(640, 480, |x, y| Rgb([(60 + x / 8) as u8, (90 + y / 8) as u8, 120]))
}

/// One frame: `people` are (patch, centre x, centre y, height in pixels).
pub fn compose(people: &[(&RgbImage, f32, f32, f32)]) -> RgbImage {
    let mut canvas = background();
    for (patch, cx, cy, height) in people {
        let h = *height as u32;
        let w = (patch.width() as f32 * height / patch.height() as f32) as u32;
        let scaled = imageops::resize(*patch, w.max(1), h.max(1), imageops::FilterType::Triangle);
        imageops::overlay(&mut canvas, &scaled, (cx - w as f32 / 2.0) as i64, (cy - h as f32 / 2.0) as i64);
    }
    canvas
}

/// The scene's frames in order; `None` is the corrupt frame.
pub fn frames(known: &RgbImage, stranger: &RgbImage) -> (Vec<Option<RgbImage>>, [u64; 3]) {
    let mut out = Vec::new();
    let mut starts = [0; 3];
    let ramp = |i: usize| i as f32 / 15.0;
    for i in 0..16 {
        let t = ramp(i);
        out.push(Some(compose(&[(known, 260.0 + 60.0 * t, 250.0, 170.0 + 110.0 * t)])));
    }
    out.extend((0..10).map(|_| Some(background())));
    out.push(None);
    starts[1] = out.len() as u64;
    for i in 0..16 {
        let t = ramp(i);
        out.push(Some(compose(&[(stranger, 380.0 - 50.0 * t, 240.0, 180.0 + 90.0 * t)])));
    }
    out.extend((0..10).map(|_| Some(background())));
    starts[2] = out.len() as u64;
    for i in 0..16 {
        let t = ramp(i);
        out.push(Some(compose(&[(known, 170.0, 250.0, 200.0 + 40.0 * t), (stranger, 470.0, 240.0, 200.0 + 40.0 * t)])));
    }
    out.extend((0..10).map(|_| Some(background())));
    (out, starts)
}

const CORRUPT: &[u8] = b"\xFF\xD8\xFF\xE0 not really a jpeg";

fn jpeg(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)?;
    Ok(out.into_inner())
}

/// Writes the scene as `frame_NNNN.jpg` files; returns the frames at which parts 1–3 start.
pub fn write_scene(dir: &Path, known: &RgbImage, stranger: &RgbImage) -> Result<[u64; 3]> {
    let (frames, starts) = frames(known, stranger);
    for (n, f) in frames.iter().enumerate() {
        let bytes = match f {
            Some(img) => jpeg(img)?,
            None => CORRUPT.to_vec(),
        };
        std::fs::write(dir.join(format!("frame_{n:04}.jpg")), bytes)?;
    }
    Ok(starts)
}

/// The scene as one MJPEG stream (concatenated JPEGs), as a camera dump would be.
pub fn mjpeg(known: &RgbImage, stranger: &RgbImage) -> Result<Vec<u8>> {
    let (frames, _) = frames(known, stranger);
    let mut out = Vec::new();
    for f in &frames {
        match f {
            Some(img) => out.extend(jpeg(img)?),
            None => out.extend_from_slice(CORRUPT),
        }
    }
    Ok(out)
}
