//! The kiosk on replayed 640×480 MJPEG: frames per second, per-frame latency and where the time
//! goes; and, with `--soak-minutes M`, a soak run that replays the scene for M minutes and
//! watches resident memory and error events.
//!
//! ```text
//! cargo bench --bench kiosk_replay -- [--frames 150] [--detector-size WxH] [--out FILE]
//! cargo bench --bench kiosk_replay -- --soak-minutes 30 [--out FILE]
//! ```
//!
//! The detector input is the kiosk's default (`[kiosk] detector_size`) unless `--detector-size`
//! says otherwise; the person is enrolled with the full-size detector, as `facegate enroll` does.
//! Benchmark: one enrolled person standing in view (the face 200–260 px high), `--frames`
//! frames, replayed as fast as the loop goes (a camera would drop frames instead), three runs;
//! medians of the runs. Soak: the full scene of `facegate::scene` (known person, stranger, both,
//! one corrupt frame per pass) over and over; resident memory is read from /proc/self/status
//! after every pass.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use facegate::act::{DryRun, Event, EventSink};
use facegate::gallery::{Dtype, Gallery, GalleryWriter, ModelKey, Person};
use facegate::kiosk::{Clock, Control, Kiosk, KioskConfig, Settings, Stats};
use facegate::pipeline::{Pipeline, PipelineConfig, Want};
use facegate::scene;
use facegate::source::{MjpegFile, Paced};

fn arg<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn sample(name: &str) -> image::RgbImage {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples").join(name);
    image::open(p).unwrap().to_rgb8()
}

fn pct(v: &mut [f32], p: f64) -> f64 {
    v.sort_by(f32::total_cmp);
    v.get(((v.len().saturating_sub(1)) as f64 * p).round() as usize).copied().unwrap_or(0.0) as f64 * 1e3
}

fn main() {
    let soak_minutes: Option<f64> = arg("--soak-minutes");
    let n_frames: usize = arg("--frames").unwrap_or(150);
    let out: Option<String> = arg("--out");
    let mut kiosk_config = KioskConfig::default();
    if let Some(size) = arg::<String>("--detector-size") {
        kiosk_config.detector_size = size;
    }
    let detector_size = kiosk_config.detector_size.clone();
    let pipeline = Pipeline::new(&kiosk_config.pipeline_config(PipelineConfig::default()).unwrap()).unwrap();
    let enrolling = Pipeline::new(&PipelineConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = ModelKey { dim: pipeline.embedder.dim(), fingerprint: facegate::model::fingerprint("mobilefacenet").unwrap() };
    let gallery_path = dir.path().join("door.fgg");
    let templates = ["obama.jpg", "obama2.jpg"]
        .iter()
        .map(|p| enrolling.analyze(&sample(p), Want { embedding: true, attributes: false, liveness: false }).unwrap()[0].analysis.embedding.clone().unwrap())
        .collect();
    GalleryWriter::create(&gallery_path, key, Dtype::F32).unwrap().enrol(&[Person { name: "obama".into(), templates }]).unwrap();
    let known = scene::face_patch(&enrolling, &sample("obama3.jpg")).unwrap();
    let stranger = scene::face_patch(&enrolling, &sample("biden.jpg")).unwrap();
    let control = Control::default();
    let threshold = pipeline.embedder.model.manifest.match_threshold;
    let run_once = |path: &std::path::Path, events: Arc<Mutex<Vec<Event>>>| -> Stats {
        let mut kc = kiosk_config.clone();
        kc.policy.threshold = threshold;
        let mut kiosk = Kiosk {
            pipeline: &pipeline,
            gallery: Gallery::open(&gallery_path, key).unwrap(),
            config: kc,
            settings: Settings::default(),
            clock: Clock::Frames { fps: 25.0 },
            events: EventSink::Memory(events),
            relay: Box::new(DryRun::default()),
            control: &control,
        };
        let mut source = Paced::new(MjpegFile::open(path).unwrap(), 0.0);
        kiosk.run(&mut source)
    };

    let report = if let Some(minutes) = soak_minutes {
        let path = dir.path().join("scene.mjpeg");
        std::fs::write(&path, scene::mjpeg(&known, &stranger).unwrap()).unwrap();
        let start = Instant::now();
        let (mut passes, mut frames, mut grants, mut errors, mut bad) = (0u64, 0u64, 0usize, 0usize, 0u64);
        let mut rss = Vec::new();
        while start.elapsed().as_secs_f64() < minutes * 60.0 {
            let events = Arc::new(Mutex::new(Vec::new()));
            let stats = run_once(&path, events.clone());
            let events = events.lock().unwrap();
            passes += 1;
            frames += stats.frames;
            bad += stats.bad_frames;
            grants += events.iter().filter(|e| e.event == "grant").count();
            errors += events.iter().filter(|e| matches!(e.event, "source_gone" | "source_lost" | "reload")).count();
            rss.push((start.elapsed().as_secs_f64(), rss_kib()));
            if passes % 10 == 0 {
                eprintln!("{:.1} min: {passes} passes, RSS {} KiB", start.elapsed().as_secs_f64() / 60.0, rss_kib());
            }
        }
        // Warm-up: the first tenth of the run (plans built, allocator settled).
        let warm = rss.iter().find(|(t, _)| *t >= minutes * 6.0).map_or(rss[0].1, |r| r.1);
        let last = rss.last().unwrap().1;
        let peak = rss.iter().map(|r| r.1).max().unwrap();
        serde_json::json!({
            "mode": "soak", "detector_size": detector_size, "minutes": start.elapsed().as_secs_f64() / 60.0, "passes": passes, "frames": frames,
            "grants": grants, "bad_frames": bad, "expected_bad_frames": passes, "error_events": errors,
            "rss_after_warmup_kib": warm, "rss_last_kib": last, "rss_peak_kib": peak,
            "growth_after_warmup_pct": (last as f64 - warm as f64) / warm as f64 * 100.0,
            "rss_samples": rss.iter().step_by((rss.len() / 50).max(1)).collect::<Vec<_>>(),
        })
    } else {
        // One enrolled person in view for the whole replay.
        let path = dir.path().join("one_face.mjpeg");
        let mut bytes = Vec::new();
        for i in 0..n_frames {
            let t = (i % 30) as f32 / 29.0;
            let img = scene::compose(&[(&known, 300.0 + 20.0 * t, 240.0, 230.0 + 30.0 * t)]);
            let mut c = std::io::Cursor::new(Vec::new());
            img.write_to(&mut c, image::ImageFormat::Jpeg).unwrap();
            bytes.extend(c.into_inner());
        }
        std::fs::write(&path, bytes).unwrap();
        let mut runs = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let mut s = run_once(&path, Arc::new(Mutex::new(Vec::new())));
            let wall = t.elapsed().as_secs_f64();
            let n = s.frames as f64;
            let (p50, p95) = (pct(&mut s.latencies, 0.5), pct(&mut s.latencies, 0.95));
            let total = s.decode_s + s.detect_s + s.embed_s + s.match_s;
            eprintln!("{} frames in {wall:.1} s: {:.1} fps, p50 {p50:.1} ms, p95 {p95:.1} ms", s.frames, n / wall);
            runs.push(serde_json::json!({
                "fps": n / wall, "p50_ms": p50, "p95_ms": p95, "embeddings": s.embeddings,
                "decode_ms": s.decode_s * 1e3 / n, "detect_ms": s.detect_s * 1e3 / n,
                "embed_ms": s.embed_s * 1e3 / n, "match_ms": s.match_s * 1e3 / n,
                "share": {"decode": s.decode_s / total, "detect": s.detect_s / total, "embed": s.embed_s / total, "match": s.match_s / total},
            }));
        }
        let mut fps: Vec<f64> = runs.iter().map(|r| r["fps"].as_f64().unwrap()).collect();
        fps.sort_by(f64::total_cmp);
        serde_json::json!({"mode": "benchmark", "frames": n_frames, "detector_size": detector_size, "median_fps": fps[1], "runs": runs})
    };
    let text = serde_json::to_string_pretty(&report).unwrap();
    println!("{text}");
    if let Some(p) = out {
        std::fs::write(p, text).unwrap();
    }
}
