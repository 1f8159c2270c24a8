//! Acting on decisions: events as JSON Lines (stdout, or a file rotated by size) and the door
//! relay behind the [`Actuator`] trait. [`DryRun`] records pulses for tests and for running
//! without hardware; the GPIO relay of the boards implements the same trait.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

#[cfg(test)]
mod tests {
    use super::*;

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
