//! The V4L2 camera (feature `camera`): the thin layer over the `v4l` crate's ioctls. Everything
//! above it (decoding, replay, reconnection, the kiosk loop) is tested with file sources,
//! because the build machines have no V4L2 at all.
//!
//! MJPEG (or YUYV, as the board profile says) is asked for; the driver may answer with another format and that answer is used (MJPEG
//! or YUYV; anything else is refused). Each buffer is cut to `bytesused`, since the crate hands
//! out the whole mapped buffer. A capture that times out or fails drops the stream and reports
//! the camera gone; the kiosk then reopens it with backoff.

use std::time::Duration;

use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::{yuyv_to_rgb, Frame, FrameSource, SourceError};
use crate::frame::decode_image;

/// Capture timeout: a camera that sends nothing for this long is taken as gone.
const TIMEOUT: Duration = Duration::from_secs(2);

pub struct Camera {
    path: String,
    size: Option<(u32, u32)>,
    fps: f64,
    stream: Option<Stream<'static>>,
    format: Option<(u32, u32, [u8; 4])>,
    asked: super::PixelFormat,
    number: u64,
}

impl Camera {
    pub fn open(path: &str, size: Option<(u32, u32)>, fps: f64, asked: super::PixelFormat) -> Result<Camera, SourceError> {
        let mut cam = Camera { path: path.into(), size, fps, stream: None, format: None, asked, number: 0 };
        cam.connect()?;
        Ok(cam)
    }

    fn connect(&mut self) -> Result<(), SourceError> {
        let what = self.path.clone();
        let fail = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::PermissionDenied => SourceError::Config { what: what.clone(), reason: e.to_string() },
            _ => SourceError::Gone { what: what.clone(), reason: e.to_string() },
        };
        let dev = Device::with_path(&self.path).map_err(fail)?;
        let mut fmt = dev.format().map_err(fail)?;
        if let Some((w, h)) = self.size {
            fmt.width = w;
            fmt.height = h;
        }
        fmt.fourcc = FourCC::new(&self.asked.fourcc());
        let fmt = dev.set_format(&fmt).map_err(fail)?;
        if &fmt.fourcc.repr != b"MJPG" && &fmt.fourcc.repr != b"YUYV" {
            return Err(SourceError::Config {
                what,
                reason: format!("the camera offers {} instead of MJPG or YUYV", fmt.fourcc),
            });
        }
        if self.fps > 0.0 {
            if let Err(e) = dev.set_params(&Parameters::with_fps(self.fps.round() as u32)) {
                log::warn!("{}: frame rate not set: {e}", self.path);
            }
        }
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, 4).map_err(fail)?;
        stream.set_timeout(TIMEOUT);
        log::info!("{}: {}x{} {}", self.path, fmt.width, fmt.height, fmt.fourcc);
        self.format = Some((fmt.width, fmt.height, fmt.fourcc.repr));
        self.stream = Some(stream);
        Ok(())
    }
}

impl FrameSource for Camera {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let gone = |reason: String| SourceError::Gone { what: self.path.clone(), reason };
        let (Some(stream), Some((w, h, fourcc))) = (self.stream.as_mut(), self.format) else {
            return Err(gone("not connected".into()));
        };
        let result = stream.next().map(|(buf, meta)| {
            let used = (meta.bytesused as usize).min(buf.len());
            match &fourcc {
                b"MJPG" => decode_image(&buf[..used]).map_err(|e| e.to_string()),
                _ => yuyv_to_rgb(&buf[..used], w, h),
            }
        });
        let number = self.number;
        match result {
            Ok(decoded) => {
                self.number += 1;
                let image = decoded.map_err(|reason| SourceError::BadFrame { number, reason })?;
                Ok(Some(Frame { number, image }))
            }
            Err(e) => {
                self.stream = None;
                Err(gone(e.to_string()))
            }
        }
    }

    fn describe(&self) -> String {
        match self.format {
            Some((w, h, f)) => format!("{} ({w}x{h} {})", self.path, String::from_utf8_lossy(&f)),
            None => self.path.clone(),
        }
    }

    fn reopen(&mut self) -> Result<(), SourceError> {
        self.stream = None;
        self.connect()
    }
}
