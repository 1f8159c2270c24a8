//! Following faces across frames, and deciding which crops are worth embedding.
//!
//! [`Tracker`] matches each frame's detections to live tracks greedily by a cost that mixes box
//! overlap (IoU) with how far the landmarks moved relative to the face size, so two people
//! passing each other keep their tracks. A track that is not seen for `max_missed` frames ends.
//! [`Quality`] scores a face from its landmarks (size, yaw, roll, pitch) and its aligned crop
//! (sharpness); only crops that pass the gate are embedded.

use image::RgbImage;

use crate::align::Point;
use crate::detect::Detection;

#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// Least overlap for a detection to continue a track.
    pub min_iou: f32,
    /// Frames a track survives unseen.
    pub max_missed: u32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig { min_iou: 0.2, max_missed: 8 }
    }
}

#[derive(Clone, Debug)]
pub struct Track {
    pub id: u64,
    pub detection: Detection,
    pub first_frame: u64,
    pub last_frame: u64,
    /// Frames since it was last seen.
    pub missed: u32,
}

/// Live tracks and the next id.
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

/// Mean landmark displacement divided by the face's diagonal.
fn landmark_shift(a: &Detection, b: &Detection) -> f32 {
    let diag = (a.bbox.width().hypot(a.bbox.height())).max(1.0);
    let d: f32 = a.landmarks.iter().zip(&b.landmarks).map(|(p, q)| (p.x - q.x).hypot(p.y - q.y)).sum();
    d / 5.0 / diag
}

/// What one frame did to the tracks.
#[derive(Debug, Default)]
pub struct Update {
    /// (index into the frame's detections, track id), new tracks included.
    pub assigned: Vec<(usize, u64)>,
    /// Tracks that ended this frame.
    pub ended: Vec<u64>,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Tracker {
        Tracker { config, tracks: Vec::new(), next_id: 1 }
    }

    /// New settings (a reload); tracks in progress go on.
    pub fn reconfigure(&mut self, config: TrackerConfig) {
        self.config = config;
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub fn update(&mut self, frame: u64, detections: &[Detection]) -> Update {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            for (di, d) in detections.iter().enumerate() {
                let iou = t.detection.bbox.iou(&d.bbox);
                if iou >= self.config.min_iou {
                    pairs.push((iou - landmark_shift(&t.detection, d), ti, di));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_used = vec![false; self.tracks.len()];
        let mut det_used = vec![false; detections.len()];
        let mut update = Update::default();
        for (_, ti, di) in pairs {
            if track_used[ti] || det_used[di] {
                continue;
            }
            track_used[ti] = true;
            det_used[di] = true;
            let t = &mut self.tracks[ti];
            t.detection = detections[di].clone();
            t.last_frame = frame;
            t.missed = 0;
            update.assigned.push((di, t.id));
        }
        for (t, used) in self.tracks.iter_mut().zip(&track_used) {
            if !used {
                t.missed += 1;
            }
        }
        let max_missed = self.config.max_missed;
        self.tracks.retain(|t| {
            let keep = t.missed <= max_missed;
            if !keep {
                update.ended.push(t.id);
            }
            keep
        });
        for (di, d) in detections.iter().enumerate().filter(|(i, _)| !det_used[*i]) {
            let id = self.next_id;
            self.next_id += 1;
            self.tracks.push(Track { id, detection: d.clone(), first_frame: frame, last_frame: frame, missed: 0 });
            update.assigned.push((di, id));
        }
        update.assigned.sort();
        update
    }

    /// Ends every track (the source ended or the kiosk stops).
    pub fn end_all(&mut self) -> Vec<u64> {
        self.tracks.drain(..).map(|t| t.id).collect()
    }

}

#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Least distance between the eyes, in pixels.
    pub min_eye_distance: f32,
    /// Largest |yaw| proxy: the nose's horizontal offset from the eyes' midpoint over the eye
    /// distance (0 frontal, about 0.5 at 45°).
    pub max_yaw: f32,
    /// Largest tilt of the eye line, degrees.
    pub max_roll_deg: f32,
    /// Accepted range of the nose's height between the eye line (0) and the mouth line (1).
    pub pitch_range: [f32; 2],
    /// Least variance of the Laplacian of the aligned grey crop (sharpness).
    pub min_sharpness: f32,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig { min_eye_distance: 20.0, max_yaw: 0.35, max_roll_deg: 25.0, pitch_range: [0.2, 0.8], min_sharpness: 20.0 }
    }
}

/// Why a face was not embedded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    TooSmall,
    Turned,
    Tilted,
    Pitched,
    Blurred,
}

/// Pose and size measured from the 5 landmarks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    pub eye_distance: f32,
    pub yaw: f32,
    pub roll_deg: f32,
    pub pitch: f32,
}

pub fn pose(lm: &[Point; 5]) -> Pose {
    let [le, re, nose, lm_, rm] = *lm;
    let (dx, dy) = (re.x - le.x, re.y - le.y);
    let eye_distance = dx.hypot(dy).max(1e-3);
    let mid_eye = Point { x: (le.x + re.x) / 2.0, y: (le.y + re.y) / 2.0 };
    let mid_mouth = Point { x: (lm_.x + rm.x) / 2.0, y: (lm_.y + rm.y) / 2.0 };
    // Work in the frame of the eye line so that roll does not leak into yaw and pitch.
    let (c, s) = (dx / eye_distance, dy / eye_distance);
    let rot = |p: Point| ((p.x - mid_eye.x) * c + (p.y - mid_eye.y) * s, -(p.x - mid_eye.x) * s + (p.y - mid_eye.y) * c);
    let (nx, ny) = rot(nose);
    let (_, my) = rot(mid_mouth);
    Pose {
        eye_distance,
        yaw: nx / eye_distance,
        roll_deg: dy.atan2(dx).to_degrees(),
        pitch: if my.abs() > 1e-3 { ny / my } else { f32::NAN },
    }
}

/// Variance of the 4-neighbour Laplacian of the crop's luma.
pub fn sharpness(crop: &RgbImage) -> f32 {
    let (w, h) = (crop.width() as usize, crop.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let luma: Vec<f32> = crop.pixels().map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect();
    let (mut sum, mut sum2, mut n) = (0f64, 0f64, 0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            let l = (luma[i - 1] + luma[i + 1] + luma[i - w] + luma[i + w] - 4.0 * luma[i]) as f64;
            sum += l;
            sum2 += l * l;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum2 / n - mean * mean) as f32
}

/// The gate on landmarks alone (cheap, before aligning).
pub fn check_pose(c: &QualityConfig, lm: &[Point; 5]) -> Result<Pose, Reject> {
    let p = pose(lm);
    if p.eye_distance < c.min_eye_distance {
        Err(Reject::TooSmall)
    } else if p.yaw.abs() > c.max_yaw {
        Err(Reject::Turned)
    } else if p.roll_deg.abs() > c.max_roll_deg {
        Err(Reject::Tilted)
    } else if !(c.pitch_range[0]..=c.pitch_range[1]).contains(&p.pitch) {
        Err(Reject::Pitched)
    } else {
        Ok(p)
    }
}

/// The gate on the aligned crop.
pub fn check_crop(c: &QualityConfig, crop: &RgbImage) -> Result<f32, Reject> {
    let s = sharpness(crop);
    if s < c.min_sharpness {
        Err(Reject::Blurred)
    } else {
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::BBox;
    use proptest::prelude::*;

    fn det(x: f32, y: f32, size: f32) -> Detection {
        let p = |u: f32, v: f32| Point { x: x + u * size, y: y + v * size };
        Detection {
            bbox: BBox { x0: x, y0: y, x1: x + size, y1: y + size },
            score: 0.9,
            landmarks: [p(0.3, 0.4), p(0.7, 0.4), p(0.5, 0.6), p(0.35, 0.8), p(0.65, 0.8)],
        }
    }

    #[test]
    fn tracks_follow_moving_faces_and_end_when_gone() {
        let mut t = Tracker::new(TrackerConfig { min_iou: 0.2, max_missed: 2 });
        let u = t.update(0, &[det(10.0, 10.0, 100.0), det(300.0, 10.0, 100.0)]);
        assert_eq!(u.assigned, [(0, 1), (1, 2)]);
        // They move a little, and the order of detections changes.
        let u = t.update(1, &[det(305.0, 12.0, 100.0), det(18.0, 10.0, 102.0)]);
        assert_eq!(u.assigned, [(0, 2), (1, 1)]);
        // Track 2 is lost for three frames: it ends; a new face far away is a new track.
        for f in 2..5 {
            let u = t.update(f, &[det(20.0, 10.0, 102.0)]);
            assert_eq!(u.assigned, [(0, 1)]);
            assert_eq!(u.ended, if f == 4 { vec![2] } else { vec![] });
        }
        let u = t.update(5, &[det(20.0, 10.0, 102.0), det(500.0, 300.0, 80.0)]);
        assert_eq!(u.assigned, [(0, 1), (1, 3)]);
        assert_eq!(t.end_all(), [1, 3]);
    }

    #[test]
    fn pose_of_a_frontal_face_and_turned_ones() {
        let d = det(0.0, 0.0, 100.0);
        let p = pose(&d.landmarks);
        assert!((p.eye_distance - 40.0).abs() < 1e-3 && p.yaw.abs() < 1e-6 && p.roll_deg.abs() < 1e-6);
        assert!((p.pitch - 0.5).abs() < 1e-6);
        let c = QualityConfig::default();
        assert!(check_pose(&c, &d.landmarks).is_ok());
        let mut turned = d.landmarks;
        turned[2].x += 20.0;
        assert_eq!(check_pose(&c, &turned), Err(Reject::Turned));
        assert_eq!(check_pose(&c, &det(0.0, 0.0, 30.0).landmarks), Err(Reject::TooSmall));
    }

    proptest! {
        /// Rotating a face in the image plane changes roll only.
        #[test]
        fn roll_does_not_leak_into_yaw_or_pitch(angle in -60.0f32..60.0) {
            let d = det(0.0, 0.0, 100.0);
            let (s, c) = angle.to_radians().sin_cos();
            let lm = d.landmarks.map(|p| Point { x: 200.0 + p.x * c - p.y * s, y: 200.0 + p.x * s + p.y * c });
            let p = pose(&lm);
            prop_assert!((p.roll_deg - angle).abs() < 1e-2);
            prop_assert!(p.yaw.abs() < 1e-4);
            prop_assert!((p.pitch - 0.5).abs() < 1e-4);
        }
    }

    #[test]
    fn blur_lowers_sharpness() {
        let sharp = RgbImage::from_fn(112, 112, |x, y| image::Rgb(if (x / 4 + y / 4) % 2 == 0 { [220; 3] } else { [30; 3] }));
        let blurred = image::imageops::blur(&sharp, 3.0);
        assert!(sharpness(&sharp) > 10.0 * sharpness(&blurred));
        assert_eq!(sharpness(&RgbImage::new(112, 112)), 0.0);
    }
}
