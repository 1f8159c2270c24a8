//! Frame sources behind one trait: a V4L2 camera (feature `camera`, `v4l2.rs`) and file-backed
//! sources for replay and tests: one image, a directory of images, an MJPEG stream file (as
//! written by `ffmpeg -f mjpeg` or a camera dump) and a raw YUYV file (as written by
//! `v4l2-ctl --stream-to`). [`Paced`] replays any of them at a fixed frame rate.
//!
//! A source distinguishes a frame it could not decode ([`SourceError::BadFrame`]: log it and
//! ask for the next one) from a source that is gone ([`SourceError::Gone`]: reconnect with
//! backoff) and from its end (`Ok(None)`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::frame::{decode_image, read_image};

#[cfg(feature = "camera")]
pub mod v4l2;

/// One captured or replayed frame.
pub struct Frame {
    /// 0, 1, 2, … in the order the source produced them, bad frames included.
    pub number: u64,
    pub image: RgbImage,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// This frame is unusable (corrupt, truncated, wrong size); the next one may be fine.
    #[error("frame {number}: {reason}")]
    BadFrame { number: u64, reason: String },
    /// The source stopped delivering (camera unplugged, file vanished); reopen it to go on.
    #[error("source {what} is gone: {reason}")]
    Gone { what: String, reason: String },
    /// The source cannot be opened or is misconfigured; retrying will not help.
    #[error("source {what}: {reason}")]
    Config { what: String, reason: String },
}

/// Anything that yields frames.
pub trait FrameSource: Send {
    /// The next frame; `Ok(None)` at the end of a finite source.
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;
    /// For logs and events.
    fn describe(&self) -> String;
    /// Reopens after [`SourceError::Gone`]. File sources cannot come back and say so.
    fn reopen(&mut self) -> Result<(), SourceError> {
        Err(SourceError::Config { what: self.describe(), reason: "cannot be reopened".into() })
    }
}

/// A list of image files, in order; one file is a list of one.
pub struct ImageFiles {
    what: String,
    files: Vec<PathBuf>,
    next: usize,
    number: u64,
}

impl ImageFiles {
    /// One image, or every JPEG/PNG of a directory in name order.
    pub fn open(path: &Path) -> Result<ImageFiles, SourceError> {
        let what = path.display().to_string();
        let config = |reason: String| SourceError::Config { what: what.clone(), reason };
        let files = if path.is_dir() {
            let v = crate::frame::images_in(path).map_err(|e| config(e.to_string()))?;
            if v.is_empty() {
                return Err(config("no JPEG or PNG files in the directory".into()));
            }
            v
        } else if path.is_file() {
            vec![path.to_path_buf()]
        } else {
            return Err(config("no such file or directory".into()));
        };
        Ok(ImageFiles { what, files, next: 0, number: 0 })
    }
}

impl FrameSource for ImageFiles {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let Some(path) = self.files.get(self.next) else { return Ok(None) };
        self.next += 1;
        let number = self.number;
        self.number += 1;
        match read_image(path) {
            Ok(image) => Ok(Some(Frame { number, image })),
            Err(e) => Err(SourceError::BadFrame { number, reason: format!("{}: {e}", path.display()) }),
        }
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// Largest JPEG accepted inside a stream; a stream without an end marker past this is resynced.
const MAX_JPEG: usize = 16 << 20;

/// Splits a byte stream of concatenated JPEGs (MJPEG) at SOI/EOI markers.
///
/// Inside entropy-coded data 0xFF is always followed by 0x00 (stuffing) or a restart marker, so
/// 0xFFD9 only occurs as the real end marker; thumbnails in EXIF segments are skipped by walking
/// the marker segments up to the start of scan.
pub struct MjpegSplitter<R> {
    reader: R,
    buf: Vec<u8>,
    eof: bool,
}

impl<R: Read> MjpegSplitter<R> {
    pub fn new(reader: R) -> MjpegSplitter<R> {
        MjpegSplitter { reader, buf: Vec::new(), eof: false }
    }

    fn fill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = self.reader.read(&mut chunk)?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(true)
    }

    /// Where the JPEG starting at `buf[0]` (FF D8) ends.
    fn scan(buf: &[u8]) -> Scan {
        let mut i = 2;
        // Marker segments up to the start of scan; a thumbnail inside APP1 is skipped whole.
        loop {
            while buf.get(i) == Some(&0xFF) && buf.get(i + 1) == Some(&0xFF) {
                i += 1;
            }
            let (Some(&ff), Some(&m)) = (buf.get(i), buf.get(i + 1)) else { return Scan::NeedMore };
            if ff != 0xFF {
                return Scan::Corrupt;
            }
            match m {
                0xD9 => return Scan::Complete(i + 2),
                0xD8 => return Scan::Truncated(i),
                0x01 | 0xD0..=0xD7 => i += 2,
                _ => {
                    let (Some(&hi), Some(&lo)) = (buf.get(i + 2), buf.get(i + 3)) else { return Scan::NeedMore };
                    let end = i + 2 + u16::from_be_bytes([hi, lo]) as usize;
                    // Only APP1 (EXIF) and APP2 (MPF) segments hold embedded JPEGs (thumbnails,
                    // previews); a start marker inside any other segment means this frame was
                    // cut there and the next one began.
                    if m != 0xE1 && m != 0xE2 {
                        let body = &buf[(i + 2).min(buf.len())..end.min(buf.len())];
                        if let Some(p) = body.windows(3).position(|w| w == [0xFF, 0xD8, 0xFF]) {
                            return Scan::Truncated(i + 2 + p);
                        }
                    }
                    i = end;
                    if m == 0xDA {
                        break;
                    }
                }
            }
        }
        // Entropy-coded data: 0xFF is followed by 0x00 or a restart marker, so the first FF D9
        // is the end, and an FF D8 means this frame was cut short and the next one began.
        let Some(data) = buf.get(i..) else { return Scan::NeedMore };
        match data.windows(2).position(|w| w[0] == 0xFF && (w[1] == 0xD9 || w[1] == 0xD8)) {
            Some(p) if data[p + 1] == 0xD9 => Scan::Complete(i + p + 2),
            Some(p) => Scan::Truncated(i + p),
            None => Scan::NeedMore,
        }
    }

    /// The next complete JPEG; `Err` with the reason for bytes that are not one (the splitter
    /// has then skipped them); `Ok(None)` at the end of the stream.
    pub fn next_jpeg(&mut self) -> std::io::Result<Option<Result<Vec<u8>, String>>> {
        loop {
            match self.buf.windows(2).position(|w| w == [0xFF, 0xD8]) {
                Some(0) => {}
                Some(p) => {
                    self.buf.drain(..p);
                    return Ok(Some(Err(format!("{p} bytes that are not a frame skipped"))));
                }
                None if self.fill()? => continue,
                None => {
                    let left = std::mem::take(&mut self.buf);
                    return Ok((left.len() > 1).then(|| Err(format!("{} trailing bytes that are not a frame", left.len()))));
                }
            }
            match Self::scan(&self.buf) {
                Scan::Complete(end) => return Ok(Some(Ok(self.buf.drain(..end).collect()))),
                Scan::Truncated(next) => {
                    self.buf.drain(..next);
                    return Ok(Some(Err("truncated frame: the next frame starts before its end".into())));
                }
                Scan::Corrupt => {
                    let next = self.buf[2..].windows(2).position(|w| w == [0xFF, 0xD8]).map_or(self.buf.len(), |p| p + 2);
                    self.buf.drain(..next);
                    return Ok(Some(Err("corrupt frame: no marker where the JPEG structure needs one".into())));
                }
                Scan::NeedMore if self.buf.len() > MAX_JPEG => {
                    self.buf.drain(..2);
                    return Ok(Some(Err("frame larger than 16 MiB skipped".into())));
                }
                Scan::NeedMore if self.fill()? => {}
                Scan::NeedMore => {
                    let left = std::mem::take(&mut self.buf);
                    return Ok(Some(Err(format!("truncated frame at the end of the stream ({} bytes)", left.len()))));
                }
            }
        }
    }
}

enum Scan {
    Complete(usize),
    /// Cut short; the next frame starts at this offset.
    Truncated(usize),
    /// Not a JPEG structure: no marker where one must be.
    Corrupt,
    NeedMore,
}

/// An MJPEG stream file.
pub struct MjpegFile {
    what: String,
    split: MjpegSplitter<std::io::BufReader<std::fs::File>>,
    number: u64,
}

impl MjpegFile {
    pub fn open(path: &Path) -> Result<MjpegFile, SourceError> {
        let what = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|e| SourceError::Config { what: what.clone(), reason: e.to_string() })?;
        Ok(MjpegFile { what, split: MjpegSplitter::new(std::io::BufReader::new(f)), number: 0 })
    }
}

impl FrameSource for MjpegFile {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let next = self.split.next_jpeg().map_err(|e| SourceError::Gone { what: self.what.clone(), reason: e.to_string() })?;
        let Some(jpeg) = next else { return Ok(None) };
        let number = self.number;
        self.number += 1;
        let bad = |reason: String| SourceError::BadFrame { number, reason };
        let bytes = jpeg.map_err(bad)?;
        let image = decode_image(&bytes).map_err(|e| bad(e.to_string()))?;
        Ok(Some(Frame { number, image }))
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// Converts one YUYV (YUV 4:2:2 packed, BT.601 limited range, as UVC cameras send) frame.
pub fn yuyv_to_rgb(yuyv: &[u8], width: u32, height: u32) -> Result<RgbImage, String> {
    if width == 0 || height == 0 || !width.is_multiple_of(2) {
        return Err(format!("YUYV needs an even width and a nonzero size, not {width}x{height}"));
    }
    let need = width as usize * height as usize * 2;
    if yuyv.len() < need {
        return Err(format!("YUYV frame of {} bytes, {width}x{height} needs {need}", yuyv.len()));
    }
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    let packed = yuvutils_rs::YuvPackedImage { yuy: &yuyv[..need], yuy_stride: width * 2, width, height };
    yuvutils_rs::yuyv422_to_rgb(
        &packed,
        &mut rgb,
        width * 3,
        yuvutils_rs::YuvRange::Limited,
        yuvutils_rs::YuvStandardMatrix::Bt601,
    )
    .map_err(|e| format!("YUYV conversion: {e:?}"))?;
    RgbImage::from_raw(width, height, rgb).ok_or_else(|| "YUYV conversion: size mismatch".to_string())
}

/// A raw YUYV file: frames of exactly width × height × 2 bytes, back to back.
pub struct YuyvFile {
    what: String,
    file: std::io::BufReader<std::fs::File>,
    width: u32,
    height: u32,
    number: u64,
}

impl YuyvFile {
    pub fn open(path: &Path, width: u32, height: u32) -> Result<YuyvFile, SourceError> {
        let what = path.display().to_string();
        let config = |reason: String| SourceError::Config { what: what.clone(), reason };
        if width == 0 || height == 0 || !width.is_multiple_of(2) || width > 8192 || height > 8192 {
            return Err(config(format!("YUYV needs an even width and a size up to 8192, not {width}x{height}")));
        }
        let f = std::fs::File::open(path).map_err(|e| config(e.to_string()))?;
        Ok(YuyvFile { what, file: std::io::BufReader::new(f), width, height, number: 0 })
    }
}

impl FrameSource for YuyvFile {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let need = self.width as usize * self.height as usize * 2;
        let mut buf = Vec::with_capacity(need);
        let got = (&mut self.file)
            .take(need as u64)
            .read_to_end(&mut buf)
            .map_err(|e| SourceError::Gone { what: self.what.clone(), reason: e.to_string() })?;
        if got == 0 {
            return Ok(None);
        }
        let number = self.number;
        self.number += 1;
        let image = yuyv_to_rgb(&buf, self.width, self.height).map_err(|reason| SourceError::BadFrame { number, reason })?;
        Ok(Some(Frame { number, image }))
    }

    fn describe(&self) -> String {
        format!("{} (YUYV {}x{})", self.what, self.width, self.height)
    }
}

/// Replays a source at `fps` frames per second (0: as fast as it goes), like a camera would.
pub struct Paced<S> {
    inner: S,
    period: Option<Duration>,
    due: Option<Instant>,
}

impl<S: FrameSource> Paced<S> {
    pub fn new(inner: S, fps: f64) -> Paced<S> {
        let period = (fps > 0.0 && fps.is_finite()).then(|| Duration::from_secs_f64(1.0 / fps));
        Paced { inner, period, due: None }
    }
}

impl<S: FrameSource> FrameSource for Paced<S> {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if let Some(period) = self.period {
            let now = Instant::now();
            let due = self.due.unwrap_or(now);
            if due > now {
                std::thread::sleep(due - now);
            }
            // A slow consumer does not get a burst of frames to catch up: a camera drops them.
            self.due = Some(due.max(now) + period);
        }
        self.inner.next_frame()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn reopen(&mut self) -> Result<(), SourceError> {
        self.inner.reopen()
    }
}

/// A source named on the command line: `FILE.mjpeg|.mjpg`, `FILE.yuyv` (with `size`), an image
/// or a directory of images, or (feature `camera`) `/dev/videoN`.
/// What a camera is asked to send; the driver may answer with the other, which is used then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum PixelFormat {
    /// Motion JPEG: small over USB, decoded here (about 1 ms at 640x480).
    #[default]
    #[serde(rename = "MJPG")]
    Mjpeg,
    /// Raw YUYV 4:2:2: no decoding, but twice the USB bandwidth of the image.
    #[serde(rename = "YUYV")]
    Yuyv,
}

impl PixelFormat {
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
        }
    }
}

/// Opens a camera (`/dev/videoN`, asked for `format`), an MJPEG or raw YUYV stream file, an
/// image or a directory of images, by what `spec` names.
pub fn open(path: &Path, size: Option<(u32, u32)>, fps: f64, format: PixelFormat) -> Result<Box<dyn FrameSource>, SourceError> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    // File paths need not be UTF-8; a camera's is /dev/videoN.
    if let Some(spec) = path.to_str().filter(|s| is_camera(s)) {
        #[cfg(feature = "camera")]
        return Ok(Box::new(v4l2::Camera::open(spec, size, fps, format)?));
        #[cfg(not(feature = "camera"))]
        let _ = format;
        #[cfg(not(feature = "camera"))]
        return Err(SourceError::Config {
            what: spec.into(),
            reason: "this build has no camera support (build with --features camera)".into(),
        });
    }
    let spec = path.display();
    Ok(match ext.as_deref() {
        Some("mjpeg" | "mjpg") => Box::new(Paced::new(MjpegFile::open(path)?, fps)),
        Some("yuyv" | "yuv") => {
            let (w, h) = size.ok_or_else(|| SourceError::Config {
                what: spec.to_string(),
                reason: "a raw YUYV file needs --size WIDTHxHEIGHT".into(),
            })?;
            Box::new(Paced::new(YuyvFile::open(path, w, h)?, fps))
        }
        _ => Box::new(Paced::new(ImageFiles::open(path)?, fps)),
    })
}

/// Whether a source names a V4L2 camera (`/dev/videoN`) rather than a file.
pub fn is_camera(spec: &str) -> bool {
    spec.starts_with("/dev/video")
}

#[cfg(test)]
mod tests;
