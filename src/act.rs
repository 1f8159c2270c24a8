//! Acting on decisions: events as JSON Lines (stdout, or a file rotated by size) and the door
//! relay behind the [`Actuator`] trait. [`DryRun`] records pulses for tests and for running
//! without hardware; [`Relay`] pulses an output line, on the boards a GPIO line of the Linux
//! character device ([`GpioLine`], the only code here that touches hardware).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One line of the event log.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Event {
    /// Unix time, seconds.
    pub time: f64,
    /// Seconds on the kiosk's clock (replay: frame number / fps).
    pub t: f64,
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<crate::policy::Verdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<crate::analyze::Gender>,
    /// The face's last liveness score and its live votes, `"LIVE/SCORED"` over the last
    /// `liveness_n` scored frames (kiosk liveness on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_votes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Where events go.
pub enum EventSink {
    Stdout,
    /// A file, renamed to `.1` (and `.1` to `.2`, …) when it passes `max_bytes`.
    File { path: PathBuf, file: File, written: u64, max_bytes: u64, keep: u32 },
    /// Kept in memory (tests).
    Memory(Arc<Mutex<Vec<Event>>>),
}

impl EventSink {
    pub fn file(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<EventSink> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(EventSink::File { path: path.into(), file, written, max_bytes: max_bytes.max(1024), keep: keep.max(1) })
    }

    pub fn write(&mut self, event: &Event) -> std::io::Result<()> {
        match self {
            EventSink::Stdout => {
                let mut out = std::io::stdout().lock();
                serde_json::to_writer(&mut out, event)?;
                writeln!(out)?;
                out.flush()
            }
            EventSink::Memory(v) => {
                v.lock().map_err(|_| std::io::Error::other("event list poisoned"))?.push(event.clone());
                Ok(())
            }
            EventSink::File { path, file, written, max_bytes, keep } => {
                let mut line = serde_json::to_vec(event)?;
                line.push(b'\n');
                if *written > 0 && *written + line.len() as u64 > *max_bytes {
                    file.sync_data()?;
                    for i in (1..*keep).rev() {
                        let from = rotated(path, i);
                        if from.exists() {
                            std::fs::rename(&from, rotated(path, i + 1))?;
                        }
                    }
                    std::fs::rename(&*path, rotated(path, 1))?;
                    *file = OpenOptions::new().create(true).append(true).open(&*path)?;
                    *written = 0;
                }
                file.write_all(&line)?;
                *written += line.len() as u64;
                Ok(())
            }
        }
    }
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

#[derive(Debug, thiserror::Error)]
#[error("relay {what}: {reason}")]
pub struct ActError {
    pub what: String,
    pub reason: String,
}

/// The door relay.
pub trait Actuator: Send {
    /// Closes the relay for `length` and opens it again, without blocking the caller for long.
    fn pulse(&mut self, length: Duration) -> Result<(), ActError>;
    fn describe(&self) -> String;
}

/// Records pulses instead of switching anything.
#[derive(Clone, Default)]
pub struct DryRun {
    pub pulses: Arc<Mutex<Vec<Duration>>>,
}

impl Actuator for DryRun {
    fn pulse(&mut self, length: Duration) -> Result<(), ActError> {
        log::info!("dry run: relay pulse of {} ms", length.as_millis());
        self.pulses
            .lock()
            .map_err(|_| ActError { what: "dry run".into(), reason: "pulse list poisoned".into() })?
            .push(length);
        Ok(())
    }

    fn describe(&self) -> String {
        "dry run (no relay)".into()
    }
}

/// Where the door relay hangs: `[kiosk.relay]` in the configuration or the board profile.
/// Either `chip` and `line` (the offset on that chip), or the line's `name` as the kernel
/// labels it (`gpioinfo` lists them), searched on every chip: "GPIO17" is the same pin on a
/// Pi 4 and a Pi 5, whose GPIO chip number differs between kernels.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// The GPIO character device, e.g. `/dev/gpiochip0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chip: Option<PathBuf>,
    /// The line's offset on `chip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The line's name, instead of `chip` and `line`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The relay closes when the line is driven low.
    #[serde(default)]
    pub active_low: bool,
}

impl RelayConfig {
    pub fn validate(&self) -> Result<(), String> {
        match (&self.chip, self.line, &self.name) {
            (Some(_), Some(_), None) => Ok(()),
            (None, None, Some(n)) if !n.is_empty() => Ok(()),
            (_, _, Some(_)) => Err("relay: give either name, or chip and line, not both".into()),
            (None, Some(_), None) => Err("relay.chip is missing (the GPIO device of relay.line)".into()),
            (_, None, None) => Err("relay.line is missing (or give relay.name)".into()),
        }
    }

    /// The chip and offset, looking a named line up.
    fn resolve(&self) -> Result<(PathBuf, u32), ActError> {
        self.validate().map_err(|reason| ActError { what: describe_line(self), reason })?;
        if let (Some(chip), Some(line)) = (&self.chip, self.line) {
            return Ok((chip.clone(), line));
        }
        let name = self.name.as_deref().unwrap_or_default();
        let found = gpiocdev::find_named_line(name).ok_or_else(|| ActError {
            what: describe_line(self),
            reason: "no GPIO line has this name (is /dev/gpiochip* readable? `gpioinfo` lists the names)".into(),
        })?;
        Ok((found.chip, found.info.offset))
    }
}

fn describe_line(config: &RelayConfig) -> String {
    let low = if config.active_low { " (active low)" } else { "" };
    match (&config.chip, config.line, &config.name) {
        (_, _, Some(name)) => format!("GPIO line {name:?}{low}"),
        (Some(chip), Some(line), None) => format!("{} line {line}{low}", chip.display()),
        _ => format!("GPIO line (incomplete){low}"),
    }
}

/// An output line the relay drives: active closes the relay.
pub trait OutputLine: Send + 'static {
    fn set(&mut self, active: bool) -> Result<(), String>;
}

/// A line of a GPIO character device (`/dev/gpiochipN`), requested as an output, inactive,
/// for as long as this value lives. Uses the kernel's v2 interface, or v1 on older kernels
/// (Jetson L4T r32's 4.9).
pub struct GpioLine {
    request: gpiocdev::Request,
}

impl GpioLine {
    pub fn open(config: &RelayConfig) -> Result<GpioLine, ActError> {
        let (chip, line) = config.resolve()?;
        let mut builder = gpiocdev::Request::builder();
        builder.on_chip(&chip).with_consumer("facegate-relay").with_line(line);
        if config.active_low {
            builder.as_active_low();
        }
        let request = builder.as_output(gpiocdev::line::Value::Inactive).request().map_err(|e| ActError {
            what: describe_line(config),
            reason: format!("cannot request {} line {line} as an output: {e}", chip.display()),
        })?;
        Ok(GpioLine { request })
    }
}

impl OutputLine for GpioLine {
    fn set(&mut self, active: bool) -> Result<(), String> {
        let value = if active { gpiocdev::line::Value::Active } else { gpiocdev::line::Value::Inactive };
        self.request.set_lone_value(value).map_err(|e| e.to_string())
    }
}

/// A relay on an output line. `pulse` drives the line active at once (so a failure is reported
/// with the decision) and a worker thread drives it inactive when the pulse ends; a pulse while
/// one is running extends it. Dropping the relay ends any pulse and leaves the line inactive.
pub struct Relay {
    line: Arc<Mutex<dyn OutputLine>>,
    ends: Option<mpsc::Sender<Instant>>,
    worker: Option<JoinHandle<()>>,
    what: String,
}

/// Attempts at releasing the line before the worker gives up and logs the door as stuck open.
const RELEASE_TRIES: u32 = 20;

impl Relay {
    pub fn gpio(config: &RelayConfig) -> Result<Relay, ActError> {
        let line = GpioLine::open(config)?;
        Relay::new(line, describe_line(config))
    }

    pub fn new(line: impl OutputLine, what: String) -> Result<Relay, ActError> {
        let line: Arc<Mutex<dyn OutputLine>> = Arc::new(Mutex::new(line));
        let (ends, pending) = mpsc::channel::<Instant>();
        let worker_line = line.clone();
        let worker_what = what.clone();
        let worker = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || release_after_pulses(&*worker_line, &pending, &worker_what))
            .map_err(|e| ActError { what: what.clone(), reason: format!("cannot start the relay thread: {e}") })?;
        Ok(Relay { line, ends: Some(ends), worker: Some(worker), what })
    }
}

/// The worker: waits for a pulse's end, extends it while more pulses come, then releases.
fn release_after_pulses(line: &Mutex<dyn OutputLine>, pending: &mpsc::Receiver<Instant>, what: &str) {
    while let Ok(mut end) = pending.recv() {
        loop {
            match pending.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(later) => end = end.max(later),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                // Shutting down: release now.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        release(line, what);
    }
    // The sender is gone (the relay was dropped): leave the line inactive.
    release(line, what);
}

fn release(line: &Mutex<dyn OutputLine>, what: &str) {
    for attempt in 1..=RELEASE_TRIES {
        let result = match line.lock() {
            Ok(mut l) => l.set(false),
            Err(poisoned) => poisoned.into_inner().set(false),
        };
        match result {
            Ok(()) => return,
            Err(e) if attempt == RELEASE_TRIES => log::error!("relay {what}: cannot release the line, the door may stay open: {e}"),
            Err(e) => {
                log::warn!("relay {what}: release failed (try {attempt}): {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Actuator for Relay {
    fn pulse(&mut self, length: Duration) -> Result<(), ActError> {
        let fail = |reason: String| ActError { what: self.what.clone(), reason };
        let mut line = self.line.lock().map_err(|_| fail("line lock poisoned".into()))?;
        line.set(true).map_err(|e| fail(format!("cannot drive the line active: {e}")))?;
        drop(line);
        let sent = self.ends.as_ref().map(|tx| tx.send(Instant::now() + length));
        if !matches!(sent, Some(Ok(()))) {
            release(&self.line, &self.what);
            return Err(fail("the relay thread has stopped".into()));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("relay on {}", self.what)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.ends.take();
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                release(&self.line, &self.what);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every change of the line with its time; fails on demand.
    #[derive(Clone, Default)]
    struct Recorded {
        changes: Arc<Mutex<Vec<(Instant, bool)>>>,
        fail_next: Arc<Mutex<u32>>,
    }

    impl OutputLine for Recorded {
        fn set(&mut self, active: bool) -> Result<(), String> {
            let mut fail = self.fail_next.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err("EIO".into());
            }
            self.changes.lock().unwrap().push((Instant::now(), active));
            Ok(())
        }
    }

    fn wait_for(changes: &Mutex<Vec<(Instant, bool)>>, n: usize) -> Vec<(Instant, bool)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let c = changes.lock().unwrap().clone();
            if c.len() >= n || Instant::now() > deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_pulse_drives_the_line_active_then_inactive_without_blocking() {
        let line = Recorded::default();
        let mut relay = Relay::new(line.clone(), "test line".into()).unwrap();
        let asked = Instant::now();
        relay.pulse(Duration::from_millis(120)).unwrap();
        assert!(asked.elapsed() < Duration::from_millis(60), "pulse() waited for the pulse");
        let c = wait_for(&line.changes, 2);
        assert_eq!(c.iter().map(|x| x.1).collect::<Vec<_>>(), [true, false]);
        let held = c[1].0 - c[0].0;
        assert!(held >= Duration::from_millis(120) && held < Duration::from_millis(1000), "held {held:?}");
    }

    #[test]
    fn a_second_pulse_extends_the_first_and_drop_releases() {
        let line = Recorded::default();
        let mut relay = Relay::new(line.clone(), "test line".into()).unwrap();
        relay.pulse(Duration::from_millis(150)).unwrap();
        std::thread::sleep(Duration::from_millis(75));
        relay.pulse(Duration::from_millis(150)).unwrap();
        let c = wait_for(&line.changes, 3);
        assert_eq!(c.iter().map(|x| x.1).collect::<Vec<_>>(), [true, true, false], "one release for both");
        assert!(c[2].0 - c[0].0 >= Duration::from_millis(225));
        // A pulse cut short by shutdown still leaves the line inactive.
        relay.pulse(Duration::from_secs(60)).unwrap();
        drop(relay);
        let c = line.changes.lock().unwrap().clone();
        assert_eq!(c.last().map(|x| x.1), Some(false));
    }

    #[test]
    fn a_failing_line_is_reported_and_a_failed_release_is_retried() {
        let line = Recorded::default();
        let mut relay = Relay::new(line.clone(), "test line".into()).unwrap();
        *line.fail_next.lock().unwrap() = 1;
        let e = relay.pulse(Duration::from_millis(10)).unwrap_err();
        assert!(e.to_string().contains("test line") && e.to_string().contains("EIO"), "{e}");
        // Active succeeds, the first release fails: the worker tries again.
        relay.pulse(Duration::from_millis(200)).unwrap();
        *line.fail_next.lock().unwrap() = 1;
        let c = wait_for(&line.changes, 2);
        assert_eq!(c.iter().map(|x| x.1).collect::<Vec<_>>(), [true, false]);
    }

    #[test]
    fn a_missing_gpio_chip_is_a_clear_error() {
        let config = RelayConfig { chip: Some("/nonexistent/gpiochip9".into()), line: Some(17), ..RelayConfig::default() };
        let e = Relay::gpio(&config).err().expect("no such chip");
        let text = e.to_string();
        assert!(text.contains("/nonexistent/gpiochip9 line 17") && text.contains("cannot request"), "{text}");
        let named = RelayConfig { name: Some("NO_SUCH_LINE_X".into()), ..RelayConfig::default() };
        let text = Relay::gpio(&named).err().expect("no such line").to_string();
        assert!(text.contains("\"NO_SUCH_LINE_X\"") && text.contains("no GPIO line has this name"), "{text}");
    }

    #[test]
    fn a_relay_needs_a_chip_and_line_or_a_name() {
        let line = |chip: Option<&str>, line: Option<u32>, name: Option<&str>| RelayConfig {
            chip: chip.map(Into::into),
            line,
            name: name.map(Into::into),
            active_low: false,
        };
        assert!(line(Some("/dev/gpiochip0"), Some(17), None).validate().is_ok());
        assert!(line(None, None, Some("GPIO17")).validate().is_ok());
        assert!(line(None, Some(17), None).validate().unwrap_err().contains("relay.chip"));
        assert!(line(Some("/dev/gpiochip0"), None, None).validate().unwrap_err().contains("relay.line"));
        assert!(line(Some("/dev/gpiochip0"), Some(17), Some("GPIO17")).validate().unwrap_err().contains("not both"));
    }

    #[test]
    fn event_files_rotate_by_size_and_keep_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut sink = EventSink::file(&path, 1024, 3).unwrap();
        for i in 0..100 {
            sink.write(&Event { t: i as f64, event: "test", frame: Some(i), ..Event::default() }).unwrap();
        }
        let mut frames = Vec::new();
        for p in [rotated(&path, 2), rotated(&path, 1), path.clone()] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.len() <= 1024, "{} is {} bytes", p.display(), text.len());
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                frames.push(v["frame"].as_u64().unwrap());
            }
        }
        assert!(!rotated(&path, 4).exists(), "keeps three files");
        // The newest lines are all there, in order, none torn.
        assert_eq!(frames, ((100 - frames.len() as u64)..100).collect::<Vec<_>>());
    }
}
