//! The one writer of a gallery file: holds an exclusive lock, appends a segment, syncs it, then
//! commits it by writing the other header slot and syncing again. Creation and compaction write
//! a whole new file beside the gallery, sync it, rename it into place and sync the directory.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::format::{self, Dtype, Header, Kind, Record, SegmentHeader, LOG_START, SLOT_LEN};
use super::{check_embedding, inode_of, io_err, valid_name, Gallery, GalleryError, ModelKey, MAX_TEMPLATES};

/// How long a writer waits for another writer to finish before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// One identity to enrol: a name and its unit-length templates.
#[derive(Clone, Debug, PartialEq)]
pub struct Person {
    pub name: String,
    pub templates: Vec<Vec<f32>>,
}

/// Holds the gallery's lock until dropped; every method commits before it returns.
pub struct GalleryWriter {
    file: File,
    view: Gallery,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary name beside `path`, recognisable for clean-up after a crash.
fn temp_path(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    dir_of(path).join(format!(".{name}.{what}-{}-{nanos}", std::process::id()))
}

/// Encodes a segment (header + payload) whose payload parts are given.
fn segment(kind: Kind, generation: u64, records: u32, templates: u32, parts: &[&[u8]]) -> Vec<u8> {
    let mut payload = Vec::new();
    for p in parts {
        payload.extend_from_slice(p);
        payload.resize(format::align_up(payload.len()), 0);
    }
    let names_len = if parts.len() > 1 { parts[1].len() as u32 } else { 0 };
    let sh = SegmentHeader {
        kind,
        payload_len: payload.len() as u64,
        generation,
        records,
        templates,
        names_len,
        payload_crc: crc32fast::hash(&payload),
    };
    let mut out = sh.encode().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// The template block of `rows` (unit vectors) in `dtype`.
fn block(dtype: Dtype, rows: &[&[f32]], dim: usize) -> Vec<u8> {
    match dtype {
        Dtype::F32 => rows.iter().flat_map(|r| r.iter().flat_map(|x| x.to_le_bytes())).collect(),
        Dtype::I8 => {
            let mut scales = Vec::with_capacity(format::align_up(rows.len() * 4));
            let mut codes = vec![0i8; rows.len() * dim];
            for (r, c) in rows.iter().zip(codes.chunks_exact_mut(dim)) {
                scales.extend_from_slice(&format::quantize(r, c).to_le_bytes());
            }
            scales.resize(format::align_up(scales.len()), 0);
            scales.extend(codes.iter().map(|&c| c as u8));
            scales
        }
    }
}

/// Builds an enrol segment: `entries` are (id, name or "" for an existing id, created, rows).
fn enrol_segment(generation: u64, dtype: Dtype, dim: usize, entries: &[(u64, &str, u64, Vec<&[f32]>)]) -> Vec<u8> {
    let mut records = Vec::new();
    let mut names = Vec::new();
    let mut rows: Vec<&[f32]> = Vec::new();
    for (id, name, created, templates) in entries {
        Record {
            id: *id,
            created: *created,
            first_template: rows.len() as u32,
            templates: templates.len() as u32,
            name_offset: names.len() as u32,
            name_len: name.len() as u32,
        }
        .encode(&mut records);
        names.extend_from_slice(name.as_bytes());
        rows.extend(templates.iter().copied());
    }
    let block = block(dtype, &rows, dim);
    segment(Kind::Enrol, generation, entries.len() as u32, rows.len() as u32, &[&records, &names, &block])
}

/// Writes `bytes` to a new file beside `path`, syncs it and moves it to `path` (replacing it, or
/// only if nothing is there), then syncs the directory.
fn install(path: &Path, bytes: &[u8], replace: bool) -> Result<(), GalleryError> {
    let tmp = temp_path(path, if replace { "compact" } else { "new" });
    let io = io_err(path);
    let result = (|| -> Result<(), GalleryError> {
        let f = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(&io)?;
        f.write_all_at(bytes, 0).map_err(&io)?;
        f.sync_all().map_err(&io)?;
        if replace {
            fs::rename(&tmp, path).map_err(&io)?;
        } else {
            // A hard link fails if `path` exists, so creation never clobbers a gallery.
            fs::hard_link(&tmp, path).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => GalleryError::Exists { path: path.into() },
                _ => io(e),
            })?;
            fs::remove_file(&tmp).map_err(&io)?;
        }
        File::open(dir_of(path)).and_then(|d| d.sync_all()).map_err(&io)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A whole gallery file: `header` in the slot its generation selects, the other slot empty, then
/// `log`.
fn check_templates(name: &str, templates: &[Vec<f32>], have: usize, dim: usize) -> Result<(), GalleryError> {
    let count = have + templates.len();
    if templates.is_empty() || count > MAX_TEMPLATES {
        return Err(GalleryError::TemplateCount { name: name.into(), count });
    }
    templates.iter().try_for_each(|t| check_embedding(t, dim))
}

/// What [`GalleryWriter::enrol`] checks of new people whatever the gallery holds: valid and
/// distinct names, 1..=MAX_TEMPLATES usable templates of `dim` each. Callers that may create
/// the gallery check first, so that a refused enrolment or import leaves no new empty file.
pub fn check_people(people: &[Person], dim: usize) -> Result<(), GalleryError> {
    let mut seen = std::collections::HashSet::new();
    for p in people {
        if !valid_name(&p.name) {
            return Err(GalleryError::InvalidName(p.name.clone()));
        }
        if !seen.insert(p.name.as_str()) {
            return Err(GalleryError::NameTaken(p.name.clone()));
        }
        if let Some(other) = people.iter().find(|o| crate::gallery::confusable(&p.name, &o.name)) {
            return Err(GalleryError::Confusable { name: p.name.clone(), enrolled: other.name.clone() });
        }
        check_templates(&p.name, &p.templates, 0, dim)?;
    }
    Ok(())
}

fn whole_file(header: &Header, log: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; LOG_START];
    let at = (header.generation % 2) as usize * SLOT_LEN;
    bytes[at..at + 128].copy_from_slice(&header.encode());
    bytes.extend_from_slice(log);
    bytes
}

impl GalleryWriter {
    /// Creates an empty gallery at `path`; refuses if a file is there.
    pub fn create(path: &Path, key: ModelKey, dtype: Dtype) -> Result<GalleryWriter, GalleryError> {
        let header = Header {
            dtype,
            dim: key.dim,
            fingerprint: key.fingerprint,
            generation: 1,
            log_end: LOG_START as u64,
            identities: 0,
            templates: 0,
            next_id: 0,
            created: now(),
            segments: 0,
        };
        install(path, &whole_file(&header, &[]), false)?;
        GalleryWriter::open(path, key)
    }

    /// Opens `path` for writing, waiting for another writer to finish for up to ten seconds, or
    /// the seconds in `FACEGATE_LOCK_WAIT`.
    pub fn open(path: &Path, key: ModelKey) -> Result<GalleryWriter, GalleryError> {
        let wait = std::env::var("FACEGATE_LOCK_WAIT")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e6)
            .map_or(LOCK_WAIT, Duration::from_secs_f64);
        GalleryWriter::open_waiting(path, key, wait)
    }

    /// Opens `path` for writing, waiting up to `wait` for another writer to finish.
    pub fn open_waiting(path: &Path, key: ModelKey, wait: Duration) -> Result<GalleryWriter, GalleryError> {
        let started = Instant::now();
        loop {
            let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => GalleryError::NotFound { path: path.into() },
                _ => GalleryError::Io { path: path.into(), source: e },
            })?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) if started.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(fs::TryLockError::WouldBlock) => return Err(GalleryError::Locked { path: path.into() }),
                Err(fs::TryLockError::Error(e)) => return Err(GalleryError::Io { path: path.into(), source: e }),
            }
            // A compaction may have renamed a new file over the path while we waited for the old
            // one's lock; then this lock guards nothing.
            let same = fs::metadata(path).map(|m| inode_of(&m)).ok() == file.metadata().map(|m| inode_of(&m)).ok();
            if !same {
                continue;
            }
            let view = Gallery::from_file(file.try_clone().map_err(io_err(path))?, path, key)?;
            remove_stale_temps(path);
            return Ok(GalleryWriter { file, view });
        }
    }

    /// Opens `path`, or creates it with `dtype` if there is no file.
    pub fn open_or_create(path: &Path, key: ModelKey, dtype: Dtype) -> Result<GalleryWriter, GalleryError> {
        match GalleryWriter::open(path, key) {
            Err(GalleryError::NotFound { .. }) => match GalleryWriter::create(path, key, dtype) {
                Err(GalleryError::Exists { .. }) => GalleryWriter::open(path, key),
                r => r,
            },
            r => r,
        }
    }

    /// The committed state, as a reader sees it.
    pub fn gallery(&self) -> &Gallery {
        &self.view
    }

    /// Refuses a new name that can be taken for an enrolled one other than `except`.
    fn check_not_confusable(&self, name: &str, except: Option<&str>) -> Result<(), GalleryError> {
        match self.view.identities().find(|i| Some(i.name) != except && crate::gallery::confusable(name, i.name)) {
            Some(i) => Err(GalleryError::Confusable { name: name.into(), enrolled: i.name.into() }),
            None => Ok(()),
        }
    }

    fn check_templates(&self, name: &str, templates: &[Vec<f32>], have: usize) -> Result<(), GalleryError> {
        check_templates(name, templates, have, self.view.dim())
    }

    /// Appends `seg` and commits it with a header that `update` derives from the current one.
    fn commit(&mut self, seg: Vec<u8>, update: impl FnOnce(&mut Header)) -> Result<(), GalleryError> {
        let path = self.view.path.clone();
        let io = io_err(&path);
        let mut h = self.view.header.clone();
        self.file.write_all_at(&seg, h.log_end).map_err(&io)?;
        self.file.sync_data().map_err(&io)?;
        h.generation += 1;
        h.log_end += seg.len() as u64;
        h.segments += 1;
        update(&mut h);
        let slot = (h.generation % 2) as u64 * SLOT_LEN as u64;
        self.file.write_all_at(&h.encode(), slot).map_err(&io)?;
        self.file.sync_data().map_err(&io)?;
        self.view.refresh()?;
        if self.view.header != h {
            return Err(GalleryError::Corrupt { path: path.clone(), detail: "the commit did not read back".into() });
        }
        Ok(())
    }

    /// Enrols new identities in one commit; all or none. Names must be new and distinct.
    pub fn enrol(&mut self, people: &[Person]) -> Result<Vec<u64>, GalleryError> {
        if people.is_empty() {
            return Ok(Vec::new());
        }
        check_people(people, self.view.dim())?;
        if let Some(p) = people.iter().find(|p| self.view.find(&p.name).is_some()) {
            return Err(GalleryError::NameTaken(p.name.clone()));
        }
        for p in people {
            self.check_not_confusable(&p.name, None)?;
        }
        let first = self.view.header.next_id;
        let created = now();
        let entries: Vec<_> = people
            .iter()
            .enumerate()
            .map(|(i, p)| (first + i as u64, p.name.as_str(), created, p.templates.iter().map(Vec::as_slice).collect()))
            .collect();
        let (dtype, dim, gen) = (self.view.dtype(), self.view.dim(), self.view.generation() + 1);
        let seg = enrol_segment(gen, dtype, dim, &entries);
        let added = people.iter().map(|p| p.templates.len() as u64).sum::<u64>();
        self.commit(seg, |h| {
            h.next_id += people.len() as u64;
            h.identities += people.len() as u64;
            h.templates += added;
        })?;
        Ok((first..first + people.len() as u64).collect())
    }

    /// Adds templates to the enrolled identity `name`.
    pub fn add_templates(&mut self, name: &str, templates: &[Vec<f32>]) -> Result<(), GalleryError> {
        let id = self.view.find(name).ok_or_else(|| GalleryError::UnknownName(name.into()))?;
        let have = self.view.slots[id as usize].templates as usize;
        self.check_templates(name, templates, have)?;
        let (dtype, dim, gen) = (self.view.dtype(), self.view.dim(), self.view.generation() + 1);
        let seg = enrol_segment(gen, dtype, dim, &[(id, "", now(), templates.iter().map(Vec::as_slice).collect())]);
        self.commit(seg, |h| h.templates += templates.len() as u64)
    }

    /// Removes the identity `name` (a tombstone; `compact` frees the space).
    pub fn remove(&mut self, name: &str) -> Result<(), GalleryError> {
        let id = self.view.find(name).ok_or_else(|| GalleryError::UnknownName(name.into()))?;
        let templates = self.view.slots[id as usize].templates as u64;
        let seg = segment(Kind::Remove, self.view.generation() + 1, 1, 0, &[&id.to_le_bytes()]);
        self.commit(seg, |h| {
            h.identities -= 1;
            h.templates -= templates;
        })
    }

    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), GalleryError> {
        let id = self.view.find(from).ok_or_else(|| GalleryError::UnknownName(from.into()))?;
        if !valid_name(to) {
            return Err(GalleryError::InvalidName(to.into()));
        }
        if self.view.find(to).is_some() {
            return Err(GalleryError::NameTaken(to.into()));
        }
        self.check_not_confusable(to, Some(from))?;
        let mut rec = Vec::new();
        Record { id, created: now(), first_template: 0, templates: 0, name_offset: 0, name_len: to.len() as u32 }
            .encode(&mut rec);
        let seg = segment(Kind::Rename, self.view.generation() + 1, 1, 0, &[&rec, to.as_bytes()]);
        self.commit(seg, |_| {})
    }

    /// Rewrites the gallery with only its live identities, each with all its templates in one
    /// record, as a new file renamed over the old one. Readers pick it up on refresh.
    pub fn compact(self) -> Result<GalleryWriter, GalleryError> {
        let g = &self.view;
        let (dim, dtype) = (g.dim(), g.dtype());
        let mut records = Vec::new();
        let mut names = Vec::new();
        let mut rows = Vec::with_capacity(g.header.templates as usize * dim * 4);
        let mut scales = Vec::new();
        let refs = g.template_refs();
        let mut i = 0;
        while i < refs.len() {
            let id = refs[i].0;
            let n = refs[i..].iter().take_while(|r| r.0 == id).count();
            let slot = g.slots[id as usize];
            let name = g.name_of(&slot);
            Record {
                id,
                created: slot.created,
                first_template: (i) as u32,
                templates: n as u32,
                name_offset: names.len() as u32,
                name_len: name.len() as u32,
            }
            .encode(&mut records);
            names.extend_from_slice(name.as_bytes());
            for &(_, b, t) in &refs[i..i + n] {
                let b = &g.blocks[b];
                match dtype {
                    Dtype::F32 => rows.extend(g.f32_rows(b)[t * dim..(t + 1) * dim].iter().flat_map(|x| x.to_le_bytes())),
                    Dtype::I8 => {
                        let (sc, codes) = g.i8_rows(b);
                        scales.extend_from_slice(&sc[t].to_le_bytes());
                        rows.extend(codes[t * dim..(t + 1) * dim].iter().map(|&c| c as u8));
                    }
                }
            }
            i += n;
        }
        if dtype == Dtype::I8 {
            scales.resize(format::align_up(scales.len()), 0);
            scales.extend_from_slice(&rows);
            rows = scales;
        }
        let mut h = g.header.clone();
        h.generation += 1;
        let live = g.len() as u32;
        let log = if live == 0 {
            Vec::new()
        } else {
            segment(Kind::Enrol, h.generation, live, refs.len() as u32, &[&records, &names, &rows])
        };
        h.segments = u64::from(live > 0);
        h.log_end = (LOG_START + log.len()) as u64;
        let path = g.path.clone();
        let key = ModelKey { dim, fingerprint: h.fingerprint };
        install(&path, &whole_file(&h, &log), true)?;
        // Release the old inode's lock only after the new file is in place; a writer that was
        // waiting on it notices the rename and opens the new file.
        drop(self);
        GalleryWriter::open(&path, key)
    }
}

/// Removes temporary files that a killed creation or compaction left beside `path`. Called with
/// the lock held, so no compaction of this gallery is in flight, and the gallery exists, so a
/// creation in flight would fail anyway.
fn remove_stale_temps(path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_string()) else { return };
    let prefixes = [format!(".{name}.compact-"), format!(".{name}.new-")];
    if let Ok(entries) = fs::read_dir(dir_of(path)) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if prefixes.iter().any(|p| n.starts_with(p)) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}
