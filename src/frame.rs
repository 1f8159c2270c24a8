//! Decoding image files into RGB frames.
//!
//! JPEG (through zune-jpeg inside `image`) and PNG. EXIF orientation is applied so phone photos
//! come out upright. Decoding errors are values, never panics.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageDecoder, ImageReader, RgbImage};

use crate::error::DecodeError;

/// Frames smaller than this on a side cannot hold a detectable face; larger ones are refused
/// before allocation so a hostile header cannot exhaust memory.
pub const MIN_SIDE: u32 = 16;
pub const MAX_SIDE: u32 = 16384;

/// The default pixel budget of one decoded image: 40 megapixels (a 7,300 × 5,500 photo).
/// `FACEGATE_MAX_PIXELS` sets another. The header's size is checked against it before any
/// pixel is allocated, so a small file that declares a huge picture (a decompression bomb)
/// costs nothing; the decoders' own allocations are capped to match.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// The pixel budget in force: `FACEGATE_MAX_PIXELS` when it is a number of at least 1, else
/// [`DEFAULT_MAX_PIXELS`].
pub fn max_pixels() -> u64 {
    std::env::var("FACEGATE_MAX_PIXELS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(DEFAULT_MAX_PIXELS)
}

/// The largest image file read (a 40-megapixel PNG compresses to far less).
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

pub fn read_image(path: &Path) -> Result<RgbImage, DecodeError> {
    let bytes =
        read_regular_file(path, MAX_IMAGE_BYTES).map_err(|source| DecodeError::Io { path: path.to_path_buf(), source })?;
    decode_image(&bytes)
}

/// Reads a regular file of at most `max` bytes. A FIFO, a device (`/dev/zero`), a directory or
/// a socket is refused without waiting for a writer or reading forever: the file is opened
/// non-blocking and checked from its handle before anything is read.
pub fn read_regular_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {max} bytes")));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows while it is read is cut at the limit and refused.
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

/// A UTF-8 text file (configuration, board profile, list) of at most `max` bytes, read as
/// [`read_regular_file`] does.
pub fn read_text_file(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_regular_file(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Format(e.to_string()))?;
    match reader.format() {
        Some(image::ImageFormat::Jpeg) | Some(image::ImageFormat::Png) => {}
        Some(other) => return Err(DecodeError::Format(format!("{other:?} is not supported"))),
        None => return Err(DecodeError::Format("unrecognised file signature".into())),
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        // zune-jpeg pads a cut-off scan with grey instead of failing; a half picture must not
        // reach enrolment or matching.
        return Err(DecodeError::Corrupt("JPEG ends before its end-of-image marker".into()));
    }
    let mut decoder = reader.into_decoder().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if width < MIN_SIDE || height < MIN_SIDE || width > MAX_SIDE || height > MAX_SIDE {
        return Err(DecodeError::Size { width, height, min: MIN_SIDE, max: MAX_SIDE });
    }
    let budget = max_pixels();
    if width as u64 * height as u64 > budget {
        return Err(DecodeError::Pixels { width, height, budget });
    }
    // The decoder's working memory: at most 16-bit RGBA of the budget, twice over.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(budget.saturating_mul(16));
    decoder.set_limits(limits).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img =
        image::DynamicImage::from_decoder(decoder).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// Walks the JPEG's marker segments and entropy-coded scans up to the end-of-image marker.
/// `false` when the data runs out first (a truncated file) or the structure is broken.
/// Image files (jpg, jpeg, png; case-insensitive) directly in `dir`, sorted by name.
pub fn images_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) && p.is_file() {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

pub fn jpeg_is_complete(b: &[u8]) -> bool {
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return false;
    }
    let mut i = 2;
    loop {
        // Fill bytes (0xFF) may precede a marker.
        while i < b.len() && b[i] == 0xFF && b.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if i + 1 >= b.len() || b[i] != 0xFF {
            return false;
        }
        let marker = b[i + 1];
        i += 2;
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        if i + 1 >= b.len() {
            return false;
        }
        let len = u16::from_be_bytes([b[i], b[i + 1]]) as usize;
        if len < 2 {
            return false;
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data: 0xFF is stuffed as FF 00; restart markers stay in the scan.
            loop {
                if i + 1 >= b.len() {
                    return false;
                }
                if b[i] == 0xFF && b[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&b[i + 1]) {
                    break;
                }
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_pixel(w, h, image::Rgb([10, 20, 30]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn decodes_png() {
        let img = decode_image(&png(40, 30)).unwrap();
        assert_eq!((img.width(), img.height()), (40, 30));
        assert_eq!(img.get_pixel(3, 3).0, [10, 20, 30]);
    }

    #[test]
    fn truncated_png_is_an_error() {
        let bytes = png(40, 30);
        // A cut inside IEND leaves every pixel intact and may decode; cuts before it must not.
        for cut in [0, 8, 20, bytes.len() / 2, bytes.len() - 13] {
            assert!(decode_image(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn truncated_jpeg_is_an_error() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90]));
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
        assert!(jpeg_is_complete(&jpeg));
        assert!(decode_image(&jpeg).is_ok());
        for cut in [3, 100, jpeg.len() / 2, jpeg.len() - 2] {
            assert!(!jpeg_is_complete(&jpeg[..cut]), "cut {cut}");
            assert!(matches!(decode_image(&jpeg[..cut]), Err(DecodeError::Corrupt(_))), "cut {cut}");
        }
    }

    #[test]
    fn a_png_over_the_pixel_budget_is_refused_before_decoding() {
        // 8000 × 6000 = 48 MP > 40 MP: a few kilobytes of zeros.
        let img = image::GrayImage::new(8000, 6000);
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        assert!(matches!(decode_image(&bytes), Err(DecodeError::Pixels { width: 8000, height: 6000, .. })));
    }

    #[test]
    fn tiny_or_unknown_images_are_errors() {
        assert!(matches!(decode_image(&png(8, 8)), Err(DecodeError::Size { .. })));
        assert!(matches!(decode_image(b"hello, world"), Err(DecodeError::Format(_))));
    }
}
