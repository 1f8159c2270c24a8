//! The kiosk end to end on a replayed scene made from the bundled sample photos: an enrolled
//! person walks up, then a stranger, then both at once, over a plain background, with a corrupt
//! frame in the middle. The real models, a real gallery file, real JPEG frames on disk.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use facegate::act::{DryRun, Event, EventSink};
use facegate::gallery::{Dtype, Gallery, GalleryWriter, ModelKey, Person};
use facegate::kiosk::{Clock, Control, Kiosk, KioskConfig, Settings};
use facegate::pipeline::{Pipeline, PipelineConfig, Want};
use facegate::scene;
use facegate::policy::Verdict;
use facegate::source::{FrameSource, ImageFiles};
use image::RgbImage;

const FPS: f64 = 10.0;

/// The face of a bundled photo with some margin, as the pipeline detects it.
fn face_patch(pipeline: &Pipeline, photo: &str) -> RgbImage {
    scene::face_patch(pipeline, &image::open(sample(photo)).unwrap().to_rgb8()).unwrap()
}

fn background() -> RgbImage {
    scene::background()
}

fn write_scene(dir: &Path, known: &RgbImage, stranger: &RgbImage) -> [u64; 3] {
    scene::write_scene(dir, known, stranger).unwrap()
}

/// What one replay of the scene produced.
struct Replay {
    events: Vec<Event>,
    stats: facegate::kiosk::Stats,
    pulses: usize,
    starts: [u64; 3],
    config: KioskConfig,
}

/// Replays the scene through a kiosk at its default settings (detector input included), the
/// person enrolled from two other photos with the full-size detector, as `facegate enroll` does.
/// With `reload_from`, a reload request is pending when the kiosk starts.
fn replay_scene(reload_from: Option<&str>) -> Replay {
    let enrolling = Pipeline::new(&PipelineConfig::default()).unwrap();
    // The scene is made of photos pasted on a drawn background: a presentation attack in
    // everything but intent. Liveness is tested on camera footage (tests/liveness.rs).
    let kiosk_config = KioskConfig { liveness: false, ..KioskConfig::default() };
    let pipeline = Pipeline::new(&kiosk_config.pipeline_config(PipelineConfig::default()).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let known = face_patch(&enrolling, "obama3.jpg");
    let stranger = face_patch(&enrolling, "biden.jpg");
    let starts = write_scene(&frames, &known, &stranger);

    let key = ModelKey { dim: pipeline.embedder.dim(), fingerprint: facegate::model::fingerprint("mobilefacenet").unwrap() };
    let gallery_path = dir.path().join("door.fgg");
    let templates = ["obama.jpg", "obama2.jpg"]
        .iter()
        .map(|p| {
            let img = image::open(sample(p)).unwrap().to_rgb8();
            let faces = enrolling.analyze(&img, Want { embedding: true, attributes: false, liveness: false }).unwrap();
            faces[0].analysis.embedding.clone().unwrap()
        })
        .collect();
    GalleryWriter::create(&gallery_path, key, Dtype::F32).unwrap().enrol(&[Person { name: "obama".into(), templates }]).unwrap();

    let events = Arc::new(Mutex::new(Vec::<Event>::new()));
    let relay = DryRun::default();
    let control = Control::default();
    let config_file = reload_from.map(|text| {
        let path = dir.path().join("facegate.toml");
        std::fs::write(&path, text).unwrap();
        control.reload.store(true, std::sync::atomic::Ordering::Relaxed);
        path
    });
    let mut config = kiosk_config;
    config.policy.cooldown_s = 2.0;
    let mut kiosk = Kiosk {
        pipeline: &pipeline,
        gallery: Gallery::open(&gallery_path, key).unwrap(),
        config,
        settings: Settings { board: None, file: config_file, liveness_threshold: None },
        clock: Clock::Frames { fps: FPS },
        events: EventSink::Memory(events.clone()),
        relay: Box::new(relay.clone()),
        control: &control,
    };
    let mut source = ImageFiles::open(&frames).unwrap();
    let stats = kiosk.run(&mut source as &mut dyn FrameSource);
    let pulses = relay.pulses.lock().unwrap().len();
    let events = events.lock().unwrap().clone();
    Replay { events, stats, pulses, starts, config: kiosk.config.clone() }
}

fn decisions(events: &[Event]) -> Vec<&Event> {
    events.iter().filter(|e| e.event == "grant" || e.event == "refuse").collect()
}

#[test]
fn replayed_scene_grants_the_enrolled_person_only() {
    let Replay { events, stats, pulses, starts, config } = replay_scene(None);
    let decisions = decisions(&events);
    let summary: Vec<(&str, Option<&str>, Option<Verdict>, u64)> = decisions
        .iter()
        .map(|e| (e.event, e.identity.as_deref(), e.decision.clone(), e.frame.unwrap()))
        .collect();
    eprintln!("{summary:#?}");
    assert_eq!(decisions.len(), 4, "{summary:#?}");
    // Part 1: granted, with age and gender, on its own track.
    let d = decisions[0];
    assert_eq!((d.event, d.identity.as_deref(), d.decision.clone(), d.relay), ("grant", Some("obama"), Some(Verdict::Granted), Some(true)));
    assert!(d.frame.unwrap() < starts[1] && d.age.is_some() && d.gender.is_some());
    assert!(d.similarity.unwrap() >= config.policy.threshold.unwrap_or(0.0).max(0.4));
    // Part 2: the stranger is refused as unknown.
    let d = decisions[1];
    assert_eq!((d.event, d.decision.clone(), d.relay), ("refuse", Some(Verdict::Unknown), None));
    assert!((starts[1]..starts[2]).contains(&d.frame.unwrap()));
    // Part 3: both; the enrolled one granted again (the cooldown has passed), the other refused.
    let mut last: Vec<_> = decisions[2..].iter().map(|e| (e.event, e.decision.clone())).collect();
    last.sort_by_key(|x| x.0);
    assert_eq!(last, [("grant", Some(Verdict::Granted)), ("refuse", Some(Verdict::Unknown))]);
    assert!(decisions[2..].iter().all(|e| e.frame.unwrap() >= starts[2]));
    let tracks: std::collections::BTreeSet<u64> = decisions.iter().map(|e| e.track.unwrap()).collect();
    assert_eq!(tracks.len(), 4, "one track per appearance");
    // The relay pulsed for the enrolled person only: once per grant.
    assert_eq!(pulses, 2);
    // The corrupt frame was reported and skipped.
    assert_eq!(stats.bad_frames, 1);
    assert_eq!(events.iter().filter(|e| e.event == "bad_frame").count(), 1);
    assert_eq!(events.first().unwrap().event, "start");
    assert_eq!(events.last().unwrap().event, "stop");
    // The embedder ran for the tracks that needed it, not on every frame with a face.
    let face_frames = 16 * 4;
    assert!(stats.embeddings < face_frames / 2, "{} embeddings", stats.embeddings);
    // The multi-task face head passed every crop of these real faces.
    assert_eq!(stats.not_faces, 0);
}

#[test]
fn a_reload_applies_the_new_policy_and_a_bad_file_changes_nothing() {
    // A threshold no one reaches: the enrolled person is refused too, and nothing pulses.
    let strict = replay_scene(Some("[kiosk.policy]\nthreshold = 0.99\ncooldown_s = 2.0\n"));
    let reload = strict.events.iter().find(|e| e.event == "reload").expect("a reload event");
    assert!(reload.detail.as_deref().unwrap().contains("configuration reloaded (threshold 0.9900)"), "{reload:?}");
    let d = decisions(&strict.events);
    assert_eq!(d.len(), 4, "{d:#?}");
    assert!(d.iter().all(|e| e.event == "refuse"), "{d:#?}");
    assert_eq!(strict.pulses, 0);
    assert_eq!(strict.config.policy.threshold, Some(0.99));

    // A file with an out-of-range value is refused with its field named; the settings stay.
    let bad = replay_scene(Some("[kiosk.policy]\nk = 9\n"));
    let reload = bad.events.iter().find(|e| e.event == "reload").expect("a reload event");
    let detail = reload.detail.as_deref().unwrap();
    assert!(detail.contains("configuration not reloaded") && detail.contains("policy.k"), "{detail}");
    assert_eq!(decisions(&bad.events).iter().filter(|e| e.event == "grant").count(), 2);
    assert_eq!(bad.pulses, 2);

    // Settings that need a restart are named, and kept as they were.
    let later = replay_scene(Some("[kiosk]\ndetector_size = \"640x480\"\nliveness = false\n[kiosk.policy]\ncooldown_s = 2.0\n"));
    let reload = later.events.iter().find(|e| e.event == "reload").unwrap();
    assert!(reload.detail.as_deref().unwrap().contains("detector_size not changed until a restart"), "{reload:?}");
    assert_eq!(later.config.detector_size, KioskConfig::default().detector_size);
    assert_eq!(later.pulses, 2);
}

/// Frames of an empty scene; gone after frame 3, reopening fails once, then it is back.
struct Flaky {
    served: u64,
    reopens: u32,
    down: bool,
}

impl FrameSource for Flaky {
    fn next_frame(&mut self) -> Result<Option<facegate::source::Frame>, facegate::source::SourceError> {
        if self.down || self.served == 3 && self.reopens == 0 {
            self.down = true;
            return Err(facegate::source::SourceError::Gone { what: "flaky".into(), reason: "unplugged".into() });
        }
        if self.served == 6 {
            return Ok(None);
        }
        self.served += 1;
        Ok(Some(facegate::source::Frame { number: self.served - 1, image: background() }))
    }

    fn describe(&self) -> String {
        "flaky test camera".into()
    }

    fn reopen(&mut self) -> Result<(), facegate::source::SourceError> {
        self.reopens += 1;
        if self.reopens == 1 {
            return Err(facegate::source::SourceError::Gone { what: "flaky".into(), reason: "still unplugged".into() });
        }
        self.down = false;
        Ok(())
    }
}

#[test]
fn a_source_that_fails_comes_back_and_the_loop_goes_on() {
    let pipeline = Pipeline::new(&PipelineConfig { attributes: None, ..PipelineConfig::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = ModelKey { dim: pipeline.embedder.dim(), fingerprint: facegate::model::fingerprint("mobilefacenet").unwrap() };
    let path = dir.path().join("g.fgg");
    GalleryWriter::create(&path, key, Dtype::I8).unwrap();
    let events = Arc::new(Mutex::new(Vec::<Event>::new()));
    let control = Control::default();
    let mut kiosk = Kiosk {
        pipeline: &pipeline,
        gallery: Gallery::open(&path, key).unwrap(),
        config: KioskConfig::default(),
        settings: Settings::default(),
        clock: Clock::Wall(std::time::Instant::now()),
        events: EventSink::Memory(events.clone()),
        relay: Box::new(DryRun::default()),
        control: &control,
    };
    let mut source = Flaky { served: 0, reopens: 0, down: false };
    let stats = kiosk.run(&mut source);
    assert_eq!(stats.frames, 6, "every frame before and after the outage");
    let kinds: Vec<&str> = events.lock().unwrap().iter().map(|e| e.event).collect();
    assert_eq!(kinds, ["start", "source_gone", "source_back", "stop"]);
    assert_eq!(source.reopens, 2);
}

#[test]
fn run_command_replays_a_directory_and_writes_events() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for i in 0..3 {
        background().save(frames.join(format!("f{i}.jpg"))).unwrap();
    }
    let g = dir.path().join("g.fgg");
    let out = facegate(&["gallery", "create", "--gallery", g.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = dir.path().join("events.jsonl");
    let out = facegate(
        &["run", "--source", frames.to_str().unwrap(), "--gallery", g.to_str().unwrap(), "--events", events.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("3 frames (0 bad)"), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&events).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.first().unwrap()["event"], "start");
    assert_eq!(lines.last().unwrap()["event"], "stop");
    // A bad kiosk setting is refused with its name before anything runs.
    let config = dir.path().join("facegate.toml");
    std::fs::write(&config, "[kiosk.policy]\nk = 9\nn = 4\n").unwrap();
    let out = facegate(&["--config", config.to_str().unwrap(), "run", "--source", frames.to_str().unwrap(), "--gallery", g.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("policy.k"), "{}", stderr(&out));
    let out = facegate(&["run", "--source", "/dev/video0", "--gallery", g.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2), "no camera here: {}", stderr(&out));
    // A relay that cannot be had stops the start with the line named; --dry-run runs without it.
    std::fs::write(&config, "[kiosk.relay]\nchip = \"/nonexistent/gpiochip0\"\nline = 17\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["--config", config.to_str().unwrap(), "run", "--source", frames.to_str().unwrap(), "--gallery", g.to_str().unwrap()];
        args.extend_from_slice(extra);
        facegate(&args, dir.path())
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/gpiochip0 line 17"), "{}", stderr(&out));
    let out = run(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Without --events, stdout is the event stream and nothing else: every line is JSON
    // (#20: the summary line used to end it).
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert!(lines.len() >= 2, "{lines:?}");
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON on stdout: {l:?}: {e}"));
    }
    assert!(stderr(&out).contains("3 frames (0 bad)"), "{}", stderr(&out));

    // Board profiles: this machine's runs; another architecture's, a bad profile file and an
    // unknown name are refused at start with the reason (exit 2).
    let board = |name: &str| {
        let args = ["run", "--board", name, "--dry-run", "--source", frames.to_str().unwrap(), "--gallery", g.to_str().unwrap()];
        facegate(&args, dir.path())
    };
    let here = match std::env::consts::ARCH {
        "aarch64" => "rpi4",
        "arm" => "rpi-armv7",
        _ => "x86_64",
    };
    let out = board(here);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let foreign = if cfg!(target_arch = "x86_64") { "rpi4" } else { "x86_64" };
    let out = board(foreign);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("target: board profile"), "{}", stderr(&out));
    let bad = dir.path().join("myboard.toml");
    let text = std::fs::read_to_string(root().join("boards/x86_64.toml")).unwrap().replace("threads = 2", "threads = 0");
    std::fs::write(&bad, text).unwrap();
    let out = board(bad.to_str().unwrap());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("threads: 0 must be 1..=64"), "{}", stderr(&out));
    let out = board("rpi9");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("the bundled ones are rpi4"), "{}", stderr(&out));
}

#[test]
fn the_example_configuration_states_the_defaults() {
    let c = facegate::config::Config::load(&root().join("deploy/facegate.example.toml")).unwrap();
    assert!(c.kiosk.is_some());
    assert_eq!(c.kiosk_config(None).unwrap(), KioskConfig::default());
}
