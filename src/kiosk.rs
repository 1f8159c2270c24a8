//! `facegate run`: the loop that stands at the door.
//!
//! source → detect (every frame) → track → quality gate → embed (only tracks that still need a
//! decision, at most every `embed_every` frames) → gallery → policy → events and relay.
//! Bad frames are logged and skipped; a source that is gone is reopened with backoff; the
//! gallery is re-read when it changed on disk; a stop request ends the loop cleanly and a reload
//! request (SIGHUP) re-reads the gallery and the configuration file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::act::{unix_now, Actuator, Event, EventSink, RelayConfig};
use crate::gallery::Gallery;
use crate::pipeline::Pipeline;
use crate::policy::{Decision, Policy, PolicyConfig};
use crate::source::{FrameSource, SourceError};
use crate::track::{check_crop, check_pose, QualityConfig, Tracker, TrackerConfig};

#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KioskConfig {
    pub policy: PolicyConfig,
    pub quality: QualityConfig,
    pub tracker: TrackerConfig,
    /// Frames between two embeddings of one track.
    pub embed_every: u32,
    /// Relay pulse on a grant, milliseconds.
    pub pulse_ms: u64,
    /// Seconds between checks of the gallery file for new commits.
    pub gallery_refresh_s: f32,
    /// Age and gender in the decision event (one attribute run per decided track).
    pub attributes: bool,
    /// The detector's input, `WIDTHxHEIGHT` in multiples of 32; frames are scaled into it.
    /// 320x256 finds faces down to about 40 pixels in a 640x480 frame (a door's faces are
    /// larger) at four times the speed of 640x480. Changing it needs a restart.
    pub detector_size: String,
    /// The door relay on a GPIO line; none: the relay is a dry run (logged only). Changing it
    /// needs a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayConfig>,
    /// Presentation-attack detection: a track is granted only when its face is also judged
    /// live in `liveness_k` of its last `liveness_n` scored frames, and refused as `spoof` when
    /// it cannot be. Turning it on needs a restart (the models load at start).
    pub liveness: bool,
    /// Fused live probability at or above which a frame's face counts as live [default:
    /// `[liveness] threshold` of the configuration file, else the shipped threshold].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_threshold: Option<f32>,
    /// Live frames needed [default: `policy.k`] ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_k: Option<usize>,
    /// ... among the last scored frames of a track [default: `policy.n`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_n: Option<usize>,
}

impl Default for KioskConfig {
    fn default() -> Self {
        KioskConfig {
            policy: PolicyConfig::default(),
            quality: QualityConfig::default(),
            tracker: TrackerConfig::default(),
            embed_every: 2,
            pulse_ms: 800,
            gallery_refresh_s: 1.0,
            attributes: true,
            detector_size: "320x256".into(),
            relay: None,
            liveness: true,
            liveness_threshold: None,
            liveness_k: None,
            liveness_n: None,
        }
    }
}

impl KioskConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.policy.validate()?;
        if self.embed_every == 0 || self.embed_every > 1000 {
            return Err(format!("embed_every = {} must be 1..=1000", self.embed_every));
        }
        if self.pulse_ms == 0 || self.pulse_ms > 60_000 {
            return Err(format!("pulse_ms = {} must be 1..=60000", self.pulse_ms));
        }
        if !(0.0..=3600.0).contains(&self.gallery_refresh_s) {
            return Err(format!("gallery_refresh_s = {} must be 0..=3600", self.gallery_refresh_s));
        }
        if !(0.0..=1.0).contains(&self.tracker.min_iou) {
            return Err(format!("tracker.min_iou = {} must be 0..=1", self.tracker.min_iou));
        }
        self.detector_sizes()?;
        if let Some(r) = &self.relay {
            r.validate()?;
        }
        self.live_rule(crate::liveness::SHIPPED_THRESHOLD).map_or(Ok(()), |r| r.validate())
    }

    /// The liveness part of the grant rule, `None` when liveness is off; `threshold` is the
    /// one in force when `liveness_threshold` is not set.
    pub fn live_rule(&self, threshold: f32) -> Option<crate::policy::LiveRule> {
        self.liveness.then(|| crate::policy::LiveRule {
            threshold: self.liveness_threshold.unwrap_or(threshold),
            k: self.liveness_k.unwrap_or(self.policy.k),
            n: self.liveness_n.unwrap_or(self.policy.n),
        })
    }

    /// Reads a `[kiosk]` table: unknown keys and out-of-range values are refused by name.
    pub fn from_table(table: toml::Table) -> anyhow::Result<KioskConfig> {
        let config: KioskConfig = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.message().trim()))?;
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }

    /// [`Self::detector_size`] as the detector takes it.
    pub fn detector_sizes(&self) -> Result<Vec<[usize; 2]>, String> {
        let size = crate::config::parse_detector_size(&self.detector_size).map_err(|e| format!("detector_size = {:?}: {e}", self.detector_size))?;
        Ok(vec![size])
    }

    /// `base` with the kiosk's detector input size, and the liveness models when liveness is on.
    pub fn pipeline_config(&self, mut base: crate::pipeline::PipelineConfig) -> anyhow::Result<crate::pipeline::PipelineConfig> {
        let manifest = crate::model::embedded_manifest(&base.detector)?;
        let mut detector = crate::detect::DetectorConfig::from_manifest(&manifest);
        detector.sizes = self.detector_sizes().map_err(anyhow::Error::msg)?;
        base.detector_config = Some(detector);
        base.liveness |= self.liveness;
        Ok(base)
    }
}

/// The kiosk's clock: wall time for a camera, frame numbers for a replay (so that a replay
/// decides the same whatever the machine's speed).
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    Wall(Instant),
    Frames { fps: f64 },
}

impl Clock {
    fn now(&self, frame: u64) -> Duration {
        match *self {
            Clock::Wall(start) => start.elapsed(),
            Clock::Frames { fps } => Duration::from_secs_f64(frame as f64 / fps.max(1e-3)),
        }
    }
}

/// Time spent per stage, for the benchmark.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub frames: u64,
    pub bad_frames: u64,
    pub decode_s: f64,
    pub detect_s: f64,
    pub embed_s: f64,
    pub match_s: f64,
    pub embeddings: u64,
    /// Crops the multi-task face head called not a face (not matched).
    pub not_faces: u64,
    /// Liveness scorings attempted (a failed one included), and the time they took.
    pub live_scored: u64,
    pub liveness_s: f64,
    pub decisions: u64,
    /// Per-frame latency from asking the source to the end of processing, seconds: the last
    /// `LATENCY_WINDOW` frames (in no particular order), so that a kiosk running for months
    /// does not grow.
    pub latencies: Vec<f32>,
}

/// Frames whose latency [`Stats`] keeps.
pub const LATENCY_WINDOW: usize = 8192;

/// Stop and reload requests, set from signal handlers.
#[derive(Clone, Default)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

impl Control {
    /// SIGTERM and SIGINT request a stop, SIGHUP a reload.
    pub fn from_signals() -> std::io::Result<Control> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let c = Control::default();
        signal_hook::flag::register(SIGTERM, c.stop.clone())?;
        signal_hook::flag::register(SIGINT, c.stop.clone())?;
        signal_hook::flag::register(SIGHUP, c.reload.clone())?;
        Ok(c)
    }
}

/// Where the kiosk's settings come from: a board profile and a configuration file over it.
/// A reload request reads them again.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub board: Option<crate::board::Board>,
    pub file: Option<PathBuf>,
    /// `--liveness-threshold`: over the file's `[liveness]`, under its `[kiosk]
    /// liveness_threshold`, at start and on every reload.
    pub liveness_threshold: Option<f32>,
}

impl Settings {
    /// The kiosk settings, and the file's calibration if it has one.
    pub fn load(&self) -> anyhow::Result<(KioskConfig, Option<crate::config::Calibration>)> {
        let file = self.file.as_deref().map(crate::config::Config::load).transpose()?.unwrap_or_default();
        let mut kiosk = file.kiosk_config(self.board.as_ref())?;
        kiosk.liveness_threshold =
            kiosk.liveness_threshold.or(self.liveness_threshold).or(file.liveness.as_ref().map(|l| l.threshold));
        Ok((kiosk, file.calibration))
    }
}

/// `facegate run`'s arguments.
pub struct RunArgs {
    pub source: PathBuf,
    pub gallery: PathBuf,
    pub size: Option<(u32, u32)>,
    pub fps: f64,
    pub events: Option<PathBuf>,
    pub events_max_bytes: u64,
    pub config: KioskConfig,
    /// Re-read on SIGHUP.
    pub settings: Settings,
    /// Asked of a camera.
    pub format: crate::source::PixelFormat,
    /// Decide on frame-number time (replays) instead of wall time.
    pub frame_clock: bool,
    /// Never switch the relay, even with `[kiosk.relay]` set.
    pub dry_run: bool,
}

/// `facegate run`: opens the gallery, the source and the relay, then runs the kiosk until the
/// source ends or SIGTERM. The caller has built `ctx`'s pipeline with
/// [`KioskConfig::pipeline_config`] (or an explicit detector size). Events go to stdout as JSON
/// Lines (nothing else is written there) or to `--events`; the closing summary goes to stderr.
pub fn run_command(ctx: &crate::commands::Context, args: RunArgs) -> anyhow::Result<crate::commands::Outcome> {
    use anyhow::Context as _;
    args.config.validate().map_err(|e| anyhow::anyhow!("kiosk configuration: {e}"))?;
    let gallery = ctx.open_gallery(&args.gallery)?;
    let mut source = crate::source::open(&args.source, args.size, args.fps, args.format)?;
    let events = match &args.events {
        Some(p) => EventSink::file(p, args.events_max_bytes, 5).with_context(|| format!("opening {}", p.display()))?,
        None => EventSink::Stdout,
    };
    let relay: Box<dyn Actuator> = match (&args.config.relay, args.dry_run) {
        (Some(r), false) => Box::new(crate::act::Relay::gpio(r)?),
        _ => Box::new(crate::act::DryRun::default()),
    };
    let control = Control::from_signals()?;
    let clock = if args.frame_clock { Clock::Frames { fps: if args.fps > 0.0 { args.fps } else { 25.0 } } } else { Clock::Wall(Instant::now()) };
    let mut config = args.config;
    config.policy.threshold = config.policy.threshold.or(Some(ctx.threshold));
    config.liveness_threshold = config.liveness_threshold.or(Some(ctx.liveness_threshold));
    if config.liveness && ctx.pipeline.liveness.is_none() {
        anyhow::bail!("kiosk liveness is on but the liveness models are not loaded");
    }
    let mut kiosk = Kiosk { pipeline: &ctx.pipeline, gallery, config, settings: args.settings, clock, events, relay, control: &control };
    let stats = kiosk.run(source.as_mut());
    let (mut lat, n) = (stats.latencies.clone(), stats.frames.max(1) as f64);
    lat.sort_by(f32::total_cmp);
    let pct = |p: f64| lat.get(((lat.len().saturating_sub(1)) as f64 * p) as usize).copied().unwrap_or(0.0) * 1000.0;
    // stdout carries the events alone (JSON Lines): the summary goes to stderr.
    eprintln!(
        "# {} frames ({} bad), {} embeddings, {} crops not a face, {} liveness scores, {} decisions; per frame: decode {:.1} ms, detect {:.1} ms, embed {:.1} ms, liveness {:.1} ms, match {:.2} ms; latency p50 {:.1} ms p95 {:.1} ms",
        stats.frames, stats.bad_frames, stats.embeddings, stats.not_faces, stats.live_scored, stats.decisions,
        stats.decode_s * 1e3 / n, stats.detect_s * 1e3 / n, stats.embed_s * 1e3 / n, stats.liveness_s * 1e3 / n, stats.match_s * 1e3 / n, pct(0.5), pct(0.95)
    );
    Ok(crate::commands::Outcome::Ok)
}

pub struct Kiosk<'a> {
    pub pipeline: &'a Pipeline,
    pub gallery: Gallery,
    pub config: KioskConfig,
    /// Re-read on a reload request; without a file a reload re-reads the gallery only.
    pub settings: Settings,
    pub clock: Clock,
    pub events: EventSink,
    pub relay: Box<dyn Actuator>,
    pub control: &'a Control,
}

impl Kiosk<'_> {
    fn emit(&mut self, mut e: Event, t: Duration) {
        e.time = unix_now();
        e.t = (t.as_secs_f64() * 1000.0).round() / 1000.0;
        if let Err(err) = self.events.write(&e) {
            log::error!("cannot write an event: {err}");
        }
    }

    fn decided(&mut self, d: Decision, frame: u64, t: Duration, attrs: Option<(f32, f32)>) {
        let opens = d.verdict.opens();
        let mut relay = None;
        if opens {
            let ok = self.relay.pulse(Duration::from_millis(self.config.pulse_ms));
            if let Err(e) = &ok {
                log::error!("{e}");
            }
            relay = Some(ok.is_ok());
        }
        let (age, gender) = match attrs {
            Some((age, male)) => (Some((age * 10.0).round() / 10.0), Some(if male >= 0.5 { crate::analyze::Gender::Male } else { crate::analyze::Gender::Female })),
            None => (None, None),
        };
        let round = |v: Option<f32>| v.map(|x| (x * 1e4).round() / 1e4);
        let liveness = round(d.liveness);
        let live_votes = d.live_votes.map(|(live, scored)| format!("{live}/{scored}"));
        let event = Event {
            event: if opens { "grant" } else { "refuse" },
            frame: Some(frame),
            track: Some(d.track),
            identity: d.identity.clone(),
            similarity: round(d.similarity),
            margin: round(d.margin),
            embeddings: Some(d.embeddings),
            decision: Some(d.verdict),
            age,
            gender,
            liveness,
            live_votes,
            relay,
            ..Event::default()
        };
        self.emit(event, t);
    }

    /// Re-reads the configuration file and applies what can change while running; a bad file
    /// keeps the settings in force. Says what happened, for the reload event.
    fn reload_config(&mut self, policy: &mut Policy, tracker: &mut Tracker) -> String {
        let Some(path) = self.settings.file.clone() else { return "no configuration file".into() };
        let (mut new, calibration) = match self.settings.load() {
            Ok(loaded) => loaded,
            Err(e) => {
                log::error!("configuration not reloaded, the settings in force stay: {e:#}");
                return format!("configuration not reloaded: {e:#}");
            }
        };
        // Without a threshold in the file: its calibration for the gallery's size, else the one in force.
        let calibrated = calibration.map(|c| c.threshold_for_gallery(self.gallery.len()).0);
        new.policy.threshold = new.policy.threshold.or(calibrated).or(self.config.policy.threshold);
        let mut restart = Vec::new();
        if new.detector_size != self.config.detector_size {
            restart.push("detector_size");
            new.detector_size = self.config.detector_size.clone();
        }
        if new.relay != self.config.relay {
            restart.push("relay");
            new.relay = self.config.relay.clone();
        }
        if new.liveness != self.config.liveness {
            restart.push("liveness");
            new.liveness = self.config.liveness;
        }
        new.liveness_threshold = new.liveness_threshold.or(self.config.liveness_threshold);
        // The file was checked as written; with the keys kept from the running settings it
        // must still hold together (liveness_k and liveness_n, say, under liveness forced on).
        if let Err(e) = new.validate() {
            log::error!("configuration not reloaded, the settings in force stay: {e}");
            return format!("configuration not reloaded: {e}");
        }
        policy.reconfigure(new.policy.clone(), policy.threshold());
        policy.set_live_rule(new.live_rule(crate::liveness::SHIPPED_THRESHOLD));
        tracker.reconfigure(new.tracker.clone());
        self.config = new;
        let mut detail = format!("configuration reloaded (threshold {:.4}", policy.threshold());
        if let Some(rule) = policy.live_rule() {
            detail.push_str(&format!(", liveness threshold {:.4}, {} of {}", rule.threshold, rule.k, rule.n));
        }
        detail.push(')');
        if !restart.is_empty() {
            log::warn!("{} changed in {}: takes effect at the next start", restart.join(" and "), path.display());
            detail.push_str(&format!("; {} not changed until a restart", restart.join(" and ")));
        }
        detail
    }

    /// Runs until the source ends or a stop is requested.
    pub fn run(&mut self, source: &mut dyn FrameSource) -> Stats {
        let mut stats = Stats::default();
        let mut tracker = Tracker::new(self.config.tracker.clone());
        let threshold = self.pipeline.embedder.model.manifest.match_threshold.unwrap_or(0.5);
        let mut policy = Policy::new(self.config.policy.clone(), threshold);
        policy.set_live_rule(self.config.live_rule(crate::liveness::SHIPPED_THRESHOLD));
        let mut last_embed: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        let mut last_refresh = Instant::now();
        let mut last_frame = 0u64;
        let mut backoff = Duration::from_millis(250);
        let start = Event { event: "start", detail: Some(source.describe()), ..Event::default() };
        self.emit(start, Duration::ZERO);
        loop {
            if self.control.stop.load(Ordering::Relaxed) {
                break;
            }
            if self.control.reload.swap(false, Ordering::Relaxed) {
                let mut detail = match self.gallery.refresh() {
                    Ok(_) => format!("gallery generation {}, {} identities", self.gallery.generation(), self.gallery.len()),
                    Err(e) => format!("gallery not reloaded: {e}"),
                };
                detail.push_str("; ");
                detail.push_str(&self.reload_config(&mut policy, &mut tracker));
                self.emit(Event { event: "reload", detail: Some(detail), ..Event::default() }, self.clock.now(last_frame));
            }
            if last_refresh.elapsed().as_secs_f32() >= self.config.gallery_refresh_s {
                last_refresh = Instant::now();
                if let Err(e) = self.gallery.refresh() {
                    log::warn!("gallery not refreshed (the last good state stays in use): {e}");
                }
            }
            let asked = Instant::now();
            let frame = match source.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(SourceError::BadFrame { number, reason }) => {
                    stats.bad_frames += 1;
                    log::warn!("skipping frame {number}: {reason}");
                    let e = Event { event: "bad_frame", frame: Some(number), detail: Some(reason), ..Event::default() };
                    self.emit(e, self.clock.now(number));
                    continue;
                }
                Err(SourceError::Gone { what, reason }) => {
                    let e = Event { event: "source_gone", detail: Some(format!("{what}: {reason}")), ..Event::default() };
                    self.emit(e, self.clock.now(last_frame));
                    loop {
                        if self.control.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        match source.reopen() {
                            Ok(()) => {
                                backoff = Duration::from_millis(250);
                                let e = Event { event: "source_back", detail: Some(source.describe()), ..Event::default() };
                                self.emit(e, self.clock.now(last_frame));
                                break;
                            }
                            Err(SourceError::Config { what, reason }) => {
                                let e = Event { event: "source_lost", detail: Some(format!("{what}: {reason}")), ..Event::default() };
                                self.emit(e, self.clock.now(last_frame));
                                self.control.stop.store(true, Ordering::Relaxed);
                            }
                            Err(e) => log::warn!("still gone: {e}"),
                        }
                    }
                    continue;
                }
                Err(e @ SourceError::Config { .. }) => {
                    self.emit(Event { event: "source_lost", detail: Some(e.to_string()), ..Event::default() }, self.clock.now(last_frame));
                    break;
                }
            };
            stats.decode_s += asked.elapsed().as_secs_f64();
            stats.frames += 1;
            last_frame = frame.number;
            let now = self.clock.now(frame.number);
            let t0 = Instant::now();
            let detections: Vec<_> = match self.pipeline.detector.detect(&frame.image) {
                Ok(d) => d.into_iter().collect(),
                Err(e) => {
                    log::error!("frame {}: detection failed: {e}", frame.number);
                    continue;
                }
            };
            stats.detect_s += t0.elapsed().as_secs_f64();
            let update = tracker.update(frame.number, &detections);
            for &(di, track) in &update.assigned {
                if !policy.undecided(track) {
                    continue;
                }
                if let Some(d) = policy.tick(track, now) {
                    stats.decisions += 1;
                    self.decided(d, frame.number, now, None);
                    continue;
                }
                if last_embed.get(&track).is_some_and(|&f| frame.number < f + self.config.embed_every as u64) {
                    continue;
                }
                let det = &detections[di];
                if check_pose(&self.config.quality, &det.landmarks).is_err() {
                    continue;
                }
                let t1 = Instant::now();
                let embedded = self.pipeline.embedder.crop(&frame.image, &det.landmarks).and_then(|crop| {
                    Ok(match check_crop(&self.config.quality, &crop) {
                        Ok(_) => Some(self.pipeline.embedder.run_crop(&crop)?),
                        Err(_) => None,
                    })
                });
                stats.embed_s += t1.elapsed().as_secs_f64();
                let mut analysis = match embedded {
                    // The multi-task model's face head: a detection that is not a well-aligned
                    // face (a poster edge, a hand, a bad landmark fit) is not matched.
                    Ok(Some(a)) if a.faceness.is_some_and(|p| p < self.pipeline.embedder.face_threshold()) => {
                        stats.not_faces += 1;
                        continue;
                    }
                    Ok(Some(a)) => a,
                    Ok(None) => continue,
                    Err(e) => {
                        log::error!("frame {}: embedding failed: {e}", frame.number);
                        continue;
                    }
                };
                let Some(embedding) = analysis.embedding.take() else { continue };
                last_embed.insert(track, frame.number);
                stats.embeddings += 1;
                // Only faces that passed the quality gate and the face head: the models call
                // noise live.
                let liveness = match (&self.pipeline.liveness, policy.live_rule()) {
                    (Some(live), Some(_)) => {
                        let t = Instant::now();
                        let score = live.score(&frame.image, &det.bbox);
                        stats.liveness_s += t.elapsed().as_secs_f64();
                        stats.live_scored += 1;
                        // Fails closed: no score, no live vote.
                        score.map_err(|e| log::error!("frame {}: liveness failed: {e}", frame.number)).ok()
                    }
                    _ => None,
                };
                let t2 = Instant::now();
                let best = self.gallery.best(&embedding).unwrap_or_else(|e| {
                    log::error!("matching failed: {e}");
                    None
                });
                stats.match_s += t2.elapsed().as_secs_f64();
                if let Some(d) = policy.observe(track, now, best, liveness) {
                    stats.decisions += 1;
                    let attrs = match (&self.pipeline.attributes, self.config.attributes) {
                        (_, false) => None,
                        (Some(a), true) => a.predict(&frame.image, &det.landmarks).ok(),
                        // the multi-task model's heads, from the same run
                        (None, true) => analysis.age.zip(analysis.male_prob),
                    };
                    self.decided(d, frame.number, now, attrs);
                }
            }
            for track in update.ended {
                last_embed.remove(&track);
                if let Some(d) = policy.end(track, now) {
                    stats.decisions += 1;
                    self.decided(d, frame.number, now, None);
                }
            }
            let latency = asked.elapsed().as_secs_f32();
            if stats.latencies.len() < LATENCY_WINDOW {
                stats.latencies.push(latency);
            } else {
                stats.latencies[stats.frames as usize % LATENCY_WINDOW] = latency;
            }
        }
        let now = self.clock.now(last_frame);
        for track in tracker.end_all() {
            if let Some(d) = policy.end(track, now) {
                stats.decisions += 1;
                self.decided(d, last_frame, now, None);
            }
        }
        let stop = Event { event: "stop", frame: Some(last_frame), detail: Some(format!("{} frames, {} bad", stats.frames, stats.bad_frames)), ..Event::default() };
        self.emit(stop, now);
        stats
    }
}
