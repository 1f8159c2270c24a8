//! The gallery: enrolled identities and their templates in one memory-mapped file, bound to the
//! embedding model that made them.
//!
//! The file is an append-only log behind two header slots ([`format`], `docs/gallery-format.md`).
//! [`Gallery`] is the reader: it maps the file read-only, checks every committed segment once,
//! and searches the template blocks in place. [`GalleryWriter`] holds the file lock and appends.
//! A reader that calls [`Gallery::refresh`] sees new commits, and a compacted file, without a
//! restart; whatever it sees is a committed state, because it only reads bytes below the
//! `log_end` of a header whose checksum held.
//!
//! Matching returns the similarity and the margin to the best other identity; deciding what a
//! match means is not the gallery's job.

mod format;
mod search;
mod writer;

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use format::{Dtype, VERSION};
use format::{Header, Kind, Record, SegmentHeader, SlotError, LOG_START, RECORD_LEN, SEGMENT_HEADER_LEN, SLOT_LEN};
pub use search::{dots_f32, dots_i8, dots_i8_scalar, Hit, TopK, MAX_K};
pub use writer::{check_people, GalleryWriter, Person};

pub const MAX_NAME_LEN: usize = 256;
pub const MAX_TEMPLATES: usize = 64;
/// Templates scored per kernel call; the scores stay in L1.
const CHUNK: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("gallery {path:?}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("gallery {path:?} does not exist; create it with `facegate gallery create` or by enrolling")]
    NotFound { path: PathBuf },
    #[error("gallery {path:?} already exists")]
    Exists { path: PathBuf },
    #[error("gallery {path:?} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("gallery {path:?} has format version {found}; this build reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error(
        "gallery {path:?} was made with another embedding model (fingerprint {found}, this build uses {expected}); re-enrol with this model"
    )]
    ModelMismatch { path: PathBuf, expected: String, found: String },
    #[error("gallery {path:?} is being written by another process (it holds the lock)")]
    Locked { path: PathBuf },
    #[error("embedding has {found} dimensions, the gallery holds {expected}")]
    Dimension { expected: usize, found: usize },
    #[error("embedding is not a finite unit vector")]
    InvalidEmbedding,
    #[error("invalid identity name {0:?}: 1..={MAX_NAME_LEN} bytes of NFC text, no control or format characters (bidirectional overrides, zero-width characters)")]
    InvalidName(String),
    #[error("{0:?} is already enrolled")]
    NameTaken(String),
    #[error("{name:?} can be mistaken for the enrolled {enrolled:?} (Unicode look-alikes, UTS #39); choose another name")]
    Confusable { name: String, enrolled: String },
    #[error("{0:?} is not enrolled")]
    UnknownName(String),
    #[error("an identity needs 1..={MAX_TEMPLATES} templates; {name:?} would have {count}")]
    TemplateCount { name: String, count: usize },
}

impl GalleryError {
    /// True when the file itself cannot be used (as opposed to a bad request against it).
    pub fn is_unusable_file(&self) -> bool {
        matches!(
            self,
            GalleryError::Corrupt { .. } | GalleryError::Version { .. } | GalleryError::ModelMismatch { .. }
        )
    }
}

/// What binds a gallery to an embedding model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelKey {
    pub dim: usize,
    pub fingerprint: [u8; 32],
}

/// The best identity for a probe.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Match {
    pub identity: String,
    /// Cosine similarity of the probe to the identity's best template.
    pub similarity: f32,
    /// `similarity` minus the best other identity's similarity (minus 0 when there is none).
    pub margin: f32,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A name as it may be stored: 1..=MAX_NAME_LEN bytes in Unicode normal form C, with no control
/// (Cc), format (Cf: bidirectional overrides, zero-width characters) or line and paragraph
/// separator characters, which could make a shown name differ from the stored one. "José" and
/// "Łukasz" are names; "\u{202e}amabo" is not.
pub fn valid_name(name: &str) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.chars().any(|c| {
            c.is_control()
                || matches!(
                    c.general_category(),
                    GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
                )
        })
        && unicode_normalization::is_nfc(name)
}

/// A name as typed or read from a file, in the normal form names are stored in (NFC), so that
/// "José" typed with a combining accent is the same person as "José" typed precomposed.
pub fn normalise_name(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    name.nfc().collect()
}

/// Whether two different names can be taken for each other on a screen: their UTS #39
/// confusable skeletons are equal (Latin "a" and Cyrillic "а", "rn" and "m", …).
pub fn confusable(a: &str, b: &str) -> bool {
    use unicode_security::confusable_detection::skeleton;
    a != b && skeleton(a).eq(skeleton(b))
}

/// Checks that `e` is a finite unit vector of `dim` values.
pub fn check_embedding(e: &[f32], dim: usize) -> Result<(), GalleryError> {
    if e.len() != dim {
        return Err(GalleryError::Dimension { expected: dim, found: e.len() });
    }
    let n: f32 = e.iter().map(|x| x * x).sum();
    if !n.is_finite() || (n - 1.0).abs() > 1e-3 {
        return Err(GalleryError::InvalidEmbedding);
    }
    Ok(())
}

/// A deterministic pseudo-random unit vector (xorshift from `seed`), for tests and benches that
/// need many distinct templates without running a model.
#[doc(hidden)]
pub fn pseudo_random_unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v: Vec<f32> = (0..dim)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// An enrol segment's template block, by file offset.
#[derive(Clone, Debug)]
struct Block {
    records_at: usize,
    records: usize,
    /// f32 rows, or i8 rows after the f32 scales.
    rows_at: usize,
    scales_at: usize,
    templates: usize,
}

/// What the reader keeps per identity id (ids are dense, from 0).
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    live: bool,
    name_at: u64,
    name_len: u32,
    templates: u32,
    created: u64,
}

/// An enrolled identity as listed.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct IdentityInfo<'a> {
    pub id: u64,
    pub name: &'a str,
    pub templates: u32,
    /// Unix seconds of the first enrolment.
    pub created: u64,
}

/// Summary of a gallery for `gallery info`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Info {
    pub path: PathBuf,
    pub version: u32,
    pub dtype: Dtype,
    pub dim: usize,
    pub fingerprint: String,
    pub generation: u64,
    pub identities: u64,
    pub templates: u64,
    pub segments: u64,
    pub file_bytes: u64,
    /// End of the committed log; bytes past it are an interrupted commit, ignored and
    /// overwritten by the next one.
    pub committed_bytes: u64,
    /// Bytes held by removed identities and superseded records; `gallery compact` frees them.
    pub reclaimable_bytes: u64,
    pub created: u64,
}

/// A read-only, memory-mapped view of a gallery at one committed generation.
pub struct Gallery {
    path: PathBuf,
    file: File,
    inode: (u64, u64),
    map: Option<Mmap>,
    header: Header,
    blocks: Vec<Block>,
    slots: Vec<Slot>,
}

impl std::fmt::Debug for Gallery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gallery").field("path", &self.path).field("header", &self.header).finish()
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> GalleryError + '_ {
    move |source| GalleryError::Io { path: path.into(), source }
}

/// Reads up to `buf.len()` bytes at `at`; returns how many there were.
fn read_some(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads both header slots with `pread` (never through the map: writers change them) and returns
/// the current one: the valid slot with the higher generation.
fn read_header(file: &File, path: &Path) -> Result<Header, GalleryError> {
    let mut slots = [[0u8; 128]; 2];
    let mut got = [0usize; 2];
    for (i, s) in slots.iter_mut().enumerate() {
        got[i] = read_some(file, s, (i * SLOT_LEN) as u64).map_err(io_err(path))?;
    }
    let decoded = slots.map(|s| Header::decode(&s));
    if let Some(h) = decoded.iter().filter_map(|d| d.as_ref().ok()).max_by_key(|h| h.generation) {
        return Ok(h.clone());
    }
    let corrupt = |detail: &str| GalleryError::Corrupt { path: path.into(), detail: detail.into() };
    if got[0] < 12 || slots[0][..8] != *format::MAGIC {
        return Err(corrupt(if got[0] == 0 { "the file is empty" } else { "not a facegate gallery (bad magic)" }));
    }
    let version = u32::from_le_bytes([slots[0][8], slots[0][9], slots[0][10], slots[0][11]]);
    if version != VERSION {
        return Err(GalleryError::Version { path: path.into(), found: version });
    }
    if got[1] < 128 {
        return Err(corrupt("shorter than its two header slots (truncated)"));
    }
    Err(corrupt(match decoded {
        [Err(SlotError::Damaged(d)), _] | [_, Err(SlotError::Damaged(d))] => d,
        _ => "both header slots are damaged",
    }))
}

fn inode_of(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

impl Gallery {
    /// Opens `path` read-only; it must have been made for `key`.
    pub fn open(path: &Path, key: ModelKey) -> Result<Gallery, GalleryError> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => GalleryError::NotFound { path: path.into() },
            _ => GalleryError::Io { path: path.into(), source: e },
        })?;
        Gallery::from_file(file, path, key)
    }

    fn from_file(file: File, path: &Path, key: ModelKey) -> Result<Gallery, GalleryError> {
        let header = read_header(&file, path)?;
        if header.fingerprint != key.fingerprint || header.dim != key.dim {
            return Err(GalleryError::ModelMismatch {
                path: path.into(),
                expected: hex(&key.fingerprint[..8]),
                found: hex(&header.fingerprint[..8]),
            });
        }
        let meta = file.metadata().map_err(io_err(path))?;
        let mut g = Gallery {
            path: path.into(),
            inode: inode_of(&meta),
            file,
            map: None,
            header: Header { log_end: LOG_START as u64, identities: 0, templates: 0, segments: 0, ..header.clone() },
            blocks: Vec::new(),
            slots: Vec::new(),
        };
        g.advance(header)?;
        Ok(g)
    }

    /// Picks up commits made since this view was opened or last refreshed, and reopens the file
    /// when it was replaced (compacted). Returns whether anything changed. On error the view is
    /// left as it was.
    pub fn refresh(&mut self) -> Result<bool, GalleryError> {
        let path = self.path.clone();
        let replaced = match std::fs::metadata(&path) {
            Ok(m) => inode_of(&m) != self.inode,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(GalleryError::NotFound { path }),
            Err(e) => return Err(GalleryError::Io { path, source: e }),
        };
        if replaced {
            let key = ModelKey { dim: self.header.dim, fingerprint: self.header.fingerprint };
            *self = Gallery::open(&path, key)?;
            return Ok(true);
        }
        let header = read_header(&self.file, &path)?;
        if header.generation == self.header.generation {
            return Ok(false);
        }
        if header.generation < self.header.generation
            || header.log_end < self.header.log_end
            || header.fingerprint != self.header.fingerprint
        {
            return Err(self.corrupt("the header went back in time"));
        }
        let (blocks, slots) = (self.blocks.len(), self.slots.clone());
        if let Err(e) = self.advance(header) {
            self.blocks.truncate(blocks);
            self.slots = slots;
            return Err(e);
        }
        Ok(true)
    }

    fn corrupt(&self, detail: impl Into<String>) -> GalleryError {
        GalleryError::Corrupt { path: self.path.clone(), detail: detail.into() }
    }

    /// Parses and checks the segments in `[self.header.log_end, header.log_end)` and moves the
    /// view to `header`.
    fn advance(&mut self, header: Header) -> Result<(), GalleryError> {
        let end = header.log_end as usize;
        let file_len = self.file.metadata().map_err(io_err(&self.path))?.len();
        if file_len < header.log_end {
            return Err(self.corrupt(format!(
                "truncated: the header commits {} bytes but the file holds {file_len}",
                header.log_end
            )));
        }
        if end > self.map.as_ref().map_or(0, |m| m.len()) {
            // SAFETY: the gallery invariant (docs/gallery-format.md): bytes in
            // [LOG_START, log_end) of a committed header are never written again, the file is
            // never truncated, and compaction renames a new file over the path instead of
            // changing this inode. This view only reads that range (header slots are read with
            // pread), so the mapped bytes it reads cannot change under it.
            let map = unsafe { Mmap::map(&self.file) }.map_err(io_err(&self.path))?;
            self.map = Some(map);
        }
        let mut at = self.header.log_end as usize;
        let mut segments = self.header.segments;
        let bytes = self.map.as_deref().unwrap_or(&[]);
        while at < end {
            at = parse_segment(bytes, at, &header, &mut self.slots, &mut self.blocks)
                .map_err(|d| GalleryError::Corrupt { path: self.path.clone(), detail: format!("segment at byte {at}: {d}") })?;
            segments += 1;
        }
        let identities = self.slots.iter().filter(|s| s.live).count() as u64;
        let templates: u64 = self.slots.iter().filter(|s| s.live).map(|s| s.templates as u64).sum();
        if segments != header.segments || identities != header.identities || templates != header.templates {
            return Err(self.corrupt(format!(
                "the log holds {segments} segments, {identities} identities and {templates} templates but the header says {}, {} and {}",
                header.segments, header.identities, header.templates
            )));
        }
        self.header = header;
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dim(&self) -> usize {
        self.header.dim
    }

    pub fn dtype(&self) -> Dtype {
        self.header.dtype
    }

    pub fn generation(&self) -> u64 {
        self.header.generation
    }

    /// Live identities.
    pub fn len(&self) -> usize {
        self.header.identities as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn name_of(&self, slot: &Slot) -> &str {
        let (a, l) = (slot.name_at as usize, slot.name_len as usize);
        // Checked as UTF-8 when the segment was parsed.
        self.bytes().get(a..a + l).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
    }

    /// The name of a live identity.
    pub fn name(&self, id: u64) -> Option<&str> {
        self.slots.get(id as usize).filter(|s| s.live).map(|s| self.name_of(s))
    }

    /// The live identity called `name`.
    pub fn find(&self, name: &str) -> Option<u64> {
        self.slots.iter().position(|s| s.live && self.name_of(s) == name).map(|i| i as u64)
    }

    /// A live identity by id.
    pub fn identity(&self, id: u64) -> Option<IdentityInfo<'_>> {
        let s = self.slots.get(id as usize).filter(|s| s.live)?;
        Some(IdentityInfo { id, name: self.name_of(s), templates: s.templates, created: s.created })
    }

    /// Live identities in enrolment order.
    pub fn identities(&self) -> impl Iterator<Item = IdentityInfo<'_>> {
        (0..self.slots.len() as u64).filter_map(|id| self.identity(id))
    }

    pub fn info(&self) -> Info {
        let file_bytes = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        let per_template = self.header.dtype.block_len(1, self.header.dim as u64);
        let needed = LOG_START as u64 + self.header.templates * per_template;
        Info {
            path: self.path.clone(),
            version: VERSION,
            dtype: self.header.dtype,
            dim: self.header.dim,
            fingerprint: hex(&self.header.fingerprint),
            generation: self.header.generation,
            identities: self.header.identities,
            templates: self.header.templates,
            segments: self.header.segments,
            file_bytes,
            committed_bytes: self.header.log_end,
            reclaimable_bytes: self.header.log_end.saturating_sub(needed.min(self.header.log_end)),
            created: self.header.created,
        }
    }

    fn records(&self, b: &Block) -> impl Iterator<Item = Record> + '_ {
        let rec = &self.bytes()[b.records_at..b.records_at + b.records * RECORD_LEN];
        rec.chunks_exact(RECORD_LEN).map(Record::decode)
    }

    fn f32_rows(&self, b: &Block) -> &[f32] {
        let raw = &self.bytes()[b.rows_at..b.rows_at + b.templates * self.header.dim * 4];
        // Rows start on a 64-byte boundary of a page-aligned map, so the cast cannot fail.
        bytemuck::try_cast_slice(raw).unwrap_or(&[])
    }

    fn i8_rows(&self, b: &Block) -> (&[f32], &[i8]) {
        let n = b.templates;
        let scales = &self.bytes()[b.scales_at..b.scales_at + n * 4];
        let rows = &self.bytes()[b.rows_at..b.rows_at + n * self.header.dim];
        (bytemuck::try_cast_slice(scales).unwrap_or(&[]), bytemuck::cast_slice(rows))
    }

    /// Template `t` of block `b` as f32 (dequantised for int8).
    fn template(&self, b: &Block, t: usize) -> Vec<f32> {
        let dim = self.header.dim;
        match self.header.dtype {
            Dtype::F32 => self.f32_rows(b)[t * dim..(t + 1) * dim].to_vec(),
            Dtype::I8 => {
                let (scales, rows) = self.i8_rows(b);
                rows[t * dim..(t + 1) * dim].iter().map(|&c| c as f32 * scales[t]).collect()
            }
        }
    }

    /// Every live identity's templates as f32 (dequantised for int8), in enrolment order.
    pub fn templates(&self) -> Vec<(u64, Vec<Vec<f32>>)> {
        let mut per: Vec<Vec<Vec<f32>>> = vec![Vec::new(); self.slots.len()];
        for b in &self.blocks {
            for r in self.records(b) {
                if self.slots.get(r.id as usize).is_some_and(|s| s.live) {
                    for t in r.first_template..r.first_template + r.templates {
                        per[r.id as usize].push(self.template(b, t as usize));
                    }
                }
            }
        }
        per.into_iter().enumerate().filter(|(i, _)| self.slots[*i].live).map(|(i, t)| (i as u64, t)).collect()
    }

    /// The raw template bytes of every live identity, for compaction: (id, block, template).
    fn template_refs(&self) -> Vec<(u64, usize, usize)> {
        let mut refs = Vec::with_capacity(self.header.templates as usize);
        for (bi, b) in self.blocks.iter().enumerate() {
            for r in self.records(b) {
                if self.slots.get(r.id as usize).is_some_and(|s| s.live) {
                    refs.extend((r.first_template..r.first_template + r.templates).map(|t| (r.id, bi, t as usize)));
                }
            }
        }
        refs.sort_by_key(|r| r.0);
        refs
    }

    /// The best `k` (at most [`MAX_K`]) live identities for `probe`, best first, each scored by
    /// its best template.
    pub fn search(&self, probe: &[f32], k: usize) -> Result<heapless::Vec<Hit, MAX_K>, GalleryError> {
        check_embedding(probe, self.header.dim)?;
        let mut top = TopK::new(k);
        let mut query = Query::new(probe, self.header.dtype);
        for b in &self.blocks {
            let mut from = 0;
            while from < b.templates {
                let to = (from + CHUNK).min(b.templates);
                let scores = self.score(&mut query, b, from, to);
                // Most templates score below the k-th best so far; only those above it cost a
                // record lookup. An identity's templates are offered one by one and the top-k
                // keeps each identity's best.
                let mut floor = top.floor();
                for (i, &s) in scores.iter().enumerate() {
                    if s > floor {
                        let id = self.record_of(b, from + i).id;
                        if self.slots.get(id as usize).is_some_and(|s| s.live) {
                            top.offer(id, s);
                            floor = top.floor();
                        }
                    }
                }
                from = to;
            }
        }
        Ok(top.into_hits())
    }

    /// Cosine similarities of templates `from..to` of block `b` (at most `CHUNK`).
    fn score<'q>(&self, q: &'q mut Query, b: &Block, from: usize, to: usize) -> &'q [f32] {
        let (dim, n) = (self.header.dim, to - from);
        match self.header.dtype {
            Dtype::F32 => dots_f32(&q.probe, &self.f32_rows(b)[from * dim..to * dim], &mut q.scores[..n]),
            Dtype::I8 => {
                let (scales, rows) = self.i8_rows(b);
                dots_i8(&q.codes, &rows[from * dim..to * dim], &mut q.dots[..n]);
                for i in 0..n {
                    q.scores[i] = q.dots[i] as f32 * q.scale * scales[from + i];
                }
            }
        }
        &q.scores[..n]
    }

    /// The record that holds template `t` of block `b`.
    fn record_of(&self, b: &Block, t: usize) -> Record {
        let at = |r: usize| Record::decode(&self.bytes()[b.records_at + r * RECORD_LEN..]);
        if b.records == b.templates {
            // Every record has at least one template, so here each has exactly one.
            return at(t);
        }
        // Records are in template order: the last one starting at or before t.
        let (mut lo, mut hi) = (0, b.records);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if at(mid).first_template as usize <= t {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        at(lo)
    }

    /// The best identity for `probe` with its margin to the next one, or `None` when empty.
    pub fn best(&self, probe: &[f32]) -> Result<Option<Match>, GalleryError> {
        let hits = self.search(probe, 2)?;
        Ok(hits.first().map(|h| Match {
            identity: self.name(h.id).unwrap_or_default().to_string(),
            similarity: h.similarity,
            margin: h.similarity - hits.get(1).map_or(0.0, |x| x.similarity),
        }))
    }

    /// The similarity of `probe` to the identity `name` (its best template), if enrolled.
    pub fn similarity_to(&self, name: &str, probe: &[f32]) -> Result<Option<f32>, GalleryError> {
        check_embedding(probe, self.header.dim)?;
        let Some(id) = self.find(name) else { return Ok(None) };
        let mut query = Query::new(probe, self.header.dtype);
        let mut best = None::<f32>;
        for b in &self.blocks {
            for r in self.records(b).filter(|r| r.id == id) {
                let (from, to) = (r.first_template as usize, (r.first_template + r.templates) as usize);
                for &s in self.score(&mut query, b, from, to) {
                    best = Some(best.map_or(s, |x| x.max(s)));
                }
            }
        }
        Ok(best)
    }
}

/// A probe prepared for scoring, with its scratch space.
struct Query {
    probe: Vec<f32>,
    codes: Vec<i8>,
    scale: f32,
    scores: [f32; CHUNK],
    dots: [i32; CHUNK],
}

impl Query {
    fn new(probe: &[f32], dtype: Dtype) -> Query {
        let mut codes = Vec::new();
        let mut scale = 1.0;
        if dtype == Dtype::I8 {
            codes = vec![0; probe.len()];
            scale = format::quantize(probe, &mut codes);
        }
        Query { probe: probe.to_vec(), codes, scale, scores: [0.0; CHUNK], dots: [0; CHUNK] }
    }
}

/// Checks the segment at `at` (which ends the log at `header.log_end` or before) and applies it to
/// `slots` and `blocks`; returns where the next segment starts. On error the caller discards or
/// restores both.
fn parse_segment(
    bytes: &[u8],
    at: usize,
    header: &Header,
    slots: &mut Vec<Slot>,
    blocks: &mut Vec<Block>,
) -> Result<usize, String> {
    let (dtype, dim, end) = (header.dtype, header.dim, header.log_end as usize);
    let sh = bytes.get(at..end).ok_or("outside the file")?;
    let sh = SegmentHeader::decode(sh)?;
    let start = at + SEGMENT_HEADER_LEN;
    let next = (start as u64).checked_add(sh.payload_len).filter(|&n| n <= end as u64);
    let next = next.ok_or("runs past the committed log")? as usize;
    let layout = sh.layout(dtype, dim);
    if layout.payload_len != sh.payload_len {
        return Err("length does not match its counts".into());
    }
    let payload = &bytes[start..next];
    if crc32fast::hash(payload) != sh.payload_crc {
        return Err("checksum mismatch (damaged)".into());
    }
    if sh.generation == 0 || sh.generation > header.generation {
        return Err("generation out of order".into());
    }
    let (names_at, block_at) = (layout.names as usize, layout.block as usize);
    let names = &payload[names_at..names_at + sh.names_len as usize];
    let name_ok = |r: &Record| -> bool {
        let (o, l) = (r.name_offset as usize, r.name_len as usize);
        names.get(o..o + l).and_then(|n| std::str::from_utf8(n).ok()).is_some_and(valid_name)
    };
    if sh.kind == Kind::Remove {
        for c in payload[..sh.records as usize * 8].chunks_exact(8) {
            let id = u64::from_le_bytes(c.try_into().map_err(|_| "short id")?);
            match slots.get_mut(id as usize) {
                Some(s) if s.live => s.live = false,
                _ => return Err(format!("removes identity {id}, which is not enrolled")),
            }
        }
        return Ok(next);
    }
    let mut template_end = 0u32;
    for rb in payload[..sh.records as usize * RECORD_LEN].chunks_exact(RECORD_LEN) {
        let r = Record::decode(rb);
        let i = r.id as usize;
        let name_at = (start + names_at + r.name_offset as usize) as u64;
        let existing = slots.get(i).copied().filter(|s| s.live);
        let slot = match (sh.kind, existing) {
            (Kind::Rename, Some(s)) if name_ok(&r) => Slot { name_at, name_len: r.name_len, ..s },
            (Kind::Enrol, _) if r.first_template != template_end || r.templates == 0 => {
                return Err("template ranges out of order".into());
            }
            (Kind::Enrol, Some(s)) if r.name_len == 0 => Slot { templates: s.templates + r.templates, ..s },
            (Kind::Enrol, None) if r.id < header.next_id && i >= slots.len() && name_ok(&r) => Slot {
                live: true,
                name_at,
                name_len: r.name_len,
                templates: r.templates,
                created: r.created,
            },
            _ => return Err(format!("bad record for identity {}", r.id)),
        };
        if slot.templates as usize > MAX_TEMPLATES {
            return Err("too many templates for one identity".into());
        }
        template_end += r.templates;
        if i >= slots.len() {
            slots.resize(i + 1, Slot::default());
        }
        slots[i] = slot;
    }
    if sh.kind == Kind::Enrol {
        if template_end != sh.templates {
            return Err("template count does not match its records".into());
        }
        let scales_at = start + block_at;
        let rows_at = match dtype {
            Dtype::F32 => scales_at,
            Dtype::I8 => scales_at + format::align_up(sh.templates as usize * 4),
        };
        blocks.push(Block {
            records_at: start,
            records: sh.records as usize,
            rows_at,
            scales_at,
            templates: sh.templates as usize,
        });
    }
    Ok(next)
}

/// Reads the committed header of `path` without checking the model, for `gallery info` on a
/// gallery of another model.
pub fn peek_key(path: &Path) -> Result<ModelKey, GalleryError> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => GalleryError::NotFound { path: path.into() },
        _ => GalleryError::Io { path: path.into(), source: e },
    })?;
    let h = read_header(&file, path)?;
    Ok(ModelKey { dim: h.dim, fingerprint: h.fingerprint })
}

#[cfg(test)]
mod tests;
