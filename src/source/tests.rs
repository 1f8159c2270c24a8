use std::io::Read;

use image::{Rgb, RgbImage};

use super::*;

fn jpeg_of(w: u32, h: u32, shade: u8) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| Rgb([shade, (x * 7) as u8, (y * 5) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// A reader that hands out at most `step` bytes per call, to cut frames at every place.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn outcomes(data: Vec<u8>, step: usize) -> Vec<Result<(u32, u32), String>> {
    let mut split = MjpegSplitter::new(Trickle { data, at: 0, step });
    let mut out = Vec::new();
    while let Some(r) = split.next_jpeg().unwrap() {
        out.push(r.and_then(|b| decode_image(&b).map(|i| i.dimensions()).map_err(|e| e.to_string())));
        assert!(out.len() < 100, "the splitter does not advance");
    }
    out
}

#[test]
fn mjpeg_stream_splits_into_its_frames_whatever_the_read_sizes() {
    let frames = [jpeg_of(64, 48, 10), jpeg_of(32, 32, 200), jpeg_of(80, 16, 90)];
    let stream = frames.concat();
    for step in [1, 2, 3, 7, 64, 1 << 20] {
        let got = outcomes(stream.clone(), step);
        assert_eq!(got, vec![Ok((64, 48)), Ok((32, 32)), Ok((80, 16))], "read size {step}");
    }
}

#[test]
fn bad_frames_inside_a_stream_are_reported_and_skipped() {
    let good = jpeg_of(64, 48, 10);
    let truncated = good[..good.len() / 2].to_vec();
    // Its structure splits fine but it cannot be decoded: the quantisation tables are gone
    // (their segments relabelled as application data).
    let mut corrupt = jpeg_of(40, 40, 50);
    let sos = corrupt.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let mut i = 2;
    while i < sos {
        let len = u16::from_be_bytes([corrupt[i + 2], corrupt[i + 3]]) as usize;
        if corrupt[i + 1] == 0xDB {
            corrupt[i + 1] = 0xE6;
        }
        i += 2 + len;
    }
    let stream = [good.clone(), b"junk!".to_vec(), truncated, good.clone(), corrupt, good.clone(), good[..100].to_vec()].concat();
    for step in [5, 4096] {
        let got = outcomes(stream.clone(), step);
        assert_eq!(got.len(), 7, "{got:?}");
        assert_eq!(got[0], Ok((64, 48)));
        assert!(got[1].as_ref().is_err_and(|e| e.contains("not a frame")), "{:?}", got[1]);
        assert!(got[2].as_ref().is_err_and(|e| e.contains("truncated")), "{:?}", got[2]);
        assert_eq!(got[3], Ok((64, 48)));
        assert!(got[4].is_err(), "scrambled frame decoded: {:?}", got[4]);
        assert_eq!(got[5], Ok((64, 48)));
        assert!(got[6].as_ref().is_err_and(|e| e.contains("end of the stream")), "{:?}", got[6]);
    }
}

#[test]
fn mjpeg_file_source_numbers_frames_and_goes_on_after_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cam.mjpeg");
    let good = jpeg_of(64, 48, 10);
    std::fs::write(&path, [good.clone(), good[..300].to_vec(), good.clone()].concat()).unwrap();
    let mut src = MjpegFile::open(&path).unwrap();
    assert_eq!(src.next_frame().unwrap().unwrap().number, 0);
    assert!(matches!(src.next_frame(), Err(SourceError::BadFrame { number: 1, .. })));
    let f = src.next_frame().unwrap().unwrap();
    assert_eq!((f.number, f.image.dimensions()), (2, (64, 48)));
    assert!(src.next_frame().unwrap().is_none());
    assert!(src.reopen().is_err(), "a file cannot come back");
}

/// BT.601 limited range, the textbook formula.
fn reference_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let (y, u, v) = (1.164 * (y as f32 - 16.0), u as f32 - 128.0, v as f32 - 128.0);
    let c = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    [c(y + 1.596 * v), c(y - 0.392 * u - 0.813 * v), c(y + 2.017 * u)]
}

#[test]
fn yuyv_converts_like_the_bt601_formula() {
    let (w, h) = (64u32, 4u32);
    let mut yuyv = Vec::new();
    let mut expect = Vec::new();
    for row in 0..h {
        for pair in 0..w / 2 {
            let (y0, y1) = ((16 + pair * 7 + row * 3) as u8, (30 + pair * 6) as u8);
            let (u, v) = ((60 + pair * 4) as u8, (200 - pair * 3 - row) as u8);
            yuyv.extend_from_slice(&[y0, u, y1, v]);
            expect.push(reference_rgb(y0, u, v));
            expect.push(reference_rgb(y1, u, v));
        }
    }
    let img = yuyv_to_rgb(&yuyv, w, h).unwrap();
    for (p, e) in img.pixels().zip(&expect) {
        for c in 0..3 {
            assert!((p.0[c] as i32 - e[c] as i32).abs() <= 3, "{:?} vs {e:?}", p.0);
        }
    }
    assert!(yuyv_to_rgb(&yuyv[..100], w, h).is_err(), "short frame");
    assert!(yuyv_to_rgb(&yuyv, 63, 4).is_err(), "odd width");
}

#[test]
fn yuyv_file_reports_a_partial_last_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cam.yuyv");
    let frame: Vec<u8> = (0..8 * 2 * 2).map(|i| [128u8, 128][i % 2]).collect();
    std::fs::write(&path, [frame.clone(), frame.clone(), frame[..10].to_vec()].concat()).unwrap();
    let mut src = YuyvFile::open(&path, 8, 2).unwrap();
    assert_eq!(src.next_frame().unwrap().unwrap().image.dimensions(), (8, 2));
    assert_eq!(src.next_frame().unwrap().unwrap().number, 1);
    assert!(matches!(src.next_frame(), Err(SourceError::BadFrame { number: 2, .. })));
    assert!(src.next_frame().unwrap().is_none());
    assert!(YuyvFile::open(&path, 7, 2).is_err());
}

#[test]
fn images_replay_in_name_order_at_the_asked_rate() {
    let dir = tempfile::tempdir().unwrap();
    for (name, w) in [("b.jpg", 20), ("a.jpg", 16), ("c.png", 30)] {
        let img = RgbImage::new(w, 16);
        img.save(dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("d.jpg"), b"not a jpeg").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
    let mut src = Paced::new(ImageFiles::open(dir.path()).unwrap(), 100.0);
    let start = Instant::now();
    let widths: Vec<_> = (0..3).map(|_| src.next_frame().unwrap().unwrap().image.width()).collect();
    assert_eq!(widths, [16, 20, 30]);
    assert!(matches!(src.next_frame(), Err(SourceError::BadFrame { number: 3, .. })));
    assert!(src.next_frame().unwrap().is_none());
    assert!(start.elapsed() >= Duration::from_millis(35), "4 frames at 100 fps: {:?}", start.elapsed());
    assert!(matches!(ImageFiles::open(&dir.path().join("missing")), Err(SourceError::Config { .. })));
}
