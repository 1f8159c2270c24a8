//! The gallery: enrolled identities and their templates, bound to the embedding model.
//!
//! Format (little-endian), documented in `docs/gallery-format.md`:
//! header `FGGALLRY`, version u32, dim u32, fingerprint [u8; 32], identity count u32, CRC-32 of
//! the body u32; body: per identity a u16 name length, UTF-8 name, u16 template count, then
//! count × dim f32. Saving writes a temporary file beside the gallery, fsyncs it, renames it over
//! the old one and fsyncs the directory, so a crash leaves either the old or the new gallery.
//! Matching returns the similarity and the margin to the best other identity; deciding what a
//! match means is not the gallery's job.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::analyze::cosine;

const MAGIC: &[u8; 8] = b"FGGALLRY";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 32 + 4 + 4;
pub const MAX_NAME_LEN: usize = 256;
pub const MAX_TEMPLATES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("gallery {path:?}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("gallery {path:?} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("gallery {path:?} has format version {found}; this build reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error(
        "gallery {path:?} was made with another embedding model (fingerprint {found}, this build uses {expected}); re-enrol with this model"
    )]
    ModelMismatch { path: PathBuf, expected: String, found: String },
    #[error("embedding has {found} dimensions, the gallery holds {expected}")]
    Dimension { expected: usize, found: usize },
    #[error("embedding is not a finite unit vector")]
    InvalidEmbedding,
    #[error("invalid identity name {0:?}: 1..={MAX_NAME_LEN} bytes, no control characters")]
    InvalidName(String),
    #[error("identity {name:?} already has {MAX_TEMPLATES} templates")]
    TooManyTemplates { name: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub name: String,
    /// Unit-length templates, `dim` floats each.
    pub templates: Vec<Vec<f32>>,
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

#[derive(Clone, Debug, PartialEq)]
pub struct Gallery {
    pub dim: usize,
    pub fingerprint: [u8; 32],
    pub identities: Vec<Identity>,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control)
}

impl Gallery {
    pub fn new(dim: usize, fingerprint: [u8; 32]) -> Gallery {
        Gallery { dim, fingerprint, identities: Vec::new() }
    }

    /// Opens `path`, which must have been made for `fingerprint`.
    pub fn open(path: &Path, dim: usize, fingerprint: [u8; 32]) -> Result<Gallery, GalleryError> {
        let bytes = fs::read(path).map_err(|source| GalleryError::Io { path: path.into(), source })?;
        let g = Gallery::parse(&bytes, path)?;
        if g.fingerprint != fingerprint || g.dim != dim {
            return Err(GalleryError::ModelMismatch {
                path: path.into(),
                expected: hex(&fingerprint[..8]),
                found: hex(&g.fingerprint[..8]),
            });
        }
        Ok(g)
    }

    /// Opens `path`, or starts an empty gallery if there is no file there.
    pub fn open_or_new(path: &Path, dim: usize, fingerprint: [u8; 32]) -> Result<Gallery, GalleryError> {
        match fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Gallery::new(dim, fingerprint)),
            _ => Gallery::open(path, dim, fingerprint),
        }
    }

    fn parse(bytes: &[u8], path: &Path) -> Result<Gallery, GalleryError> {
        let corrupt = |detail: &str| GalleryError::Corrupt { path: path.into(), detail: detail.into() };
        if bytes.len() < HEADER_LEN {
            return Err(corrupt("shorter than its header"));
        }
        if &bytes[..8] != MAGIC {
            return Err(corrupt("not a facegate gallery (bad magic)"));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let version = u32_at(8);
        if version != VERSION {
            return Err(GalleryError::Version { path: path.into(), found: version });
        }
        let dim = u32_at(12) as usize;
        let fingerprint: [u8; 32] = bytes[16..48].try_into().unwrap();
        let count = u32_at(48) as usize;
        let crc = u32_at(52);
        let body = &bytes[HEADER_LEN..];
        if crc32fast::hash(body) != crc {
            return Err(corrupt("checksum mismatch (truncated or damaged)"));
        }
        if dim == 0 || dim > 4096 {
            return Err(corrupt("implausible embedding dimension"));
        }
        let mut r = Reader { buf: body, pos: 0 };
        let mut identities = Vec::with_capacity(count.min(1 << 20));
        for _ in 0..count {
            let n = r.u16().ok_or_else(|| corrupt("truncated identity"))? as usize;
            let name = r.take(n).ok_or_else(|| corrupt("truncated name"))?;
            let name = std::str::from_utf8(name).map_err(|_| corrupt("name is not UTF-8"))?.to_string();
            let t = r.u16().ok_or_else(|| corrupt("truncated identity"))? as usize;
            let mut templates = Vec::with_capacity(t);
            for _ in 0..t {
                let raw = r.take(dim * 4).ok_or_else(|| corrupt("truncated template"))?;
                templates.push(raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect());
            }
            identities.push(Identity { name, templates });
        }
        if r.pos != body.len() {
            return Err(corrupt("trailing bytes after the last identity"));
        }
        Ok(Gallery { dim, fingerprint, identities })
    }

    fn serialize(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for id in &self.identities {
            body.extend_from_slice(&(id.name.len() as u16).to_le_bytes());
            body.extend_from_slice(id.name.as_bytes());
            body.extend_from_slice(&(id.templates.len() as u16).to_le_bytes());
            for t in &id.templates {
                t.iter().for_each(|x| body.extend_from_slice(&x.to_le_bytes()));
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&(self.identities.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Writes the gallery to `path` atomically: temp file, fsync, rename, fsync directory.
    pub fn save(&self, path: &Path) -> Result<(), GalleryError> {
        let io = |source| GalleryError::Io { path: path.into(), source };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&self.serialize())?;
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    fn check_embedding(&self, e: &[f32]) -> Result<(), GalleryError> {
        if e.len() != self.dim {
            return Err(GalleryError::Dimension { expected: self.dim, found: e.len() });
        }
        let n: f32 = e.iter().map(|x| x * x).sum();
        if !n.is_finite() || (n - 1.0).abs() > 1e-3 {
            return Err(GalleryError::InvalidEmbedding);
        }
        Ok(())
    }

    /// Adds a template to `name`, creating the identity if needed.
    pub fn add(&mut self, name: &str, embedding: &[f32]) -> Result<(), GalleryError> {
        if !valid_name(name) {
            return Err(GalleryError::InvalidName(name.to_string()));
        }
        self.check_embedding(embedding)?;
        match self.identities.iter_mut().find(|i| i.name == name) {
            Some(id) if id.templates.len() >= MAX_TEMPLATES => {
                Err(GalleryError::TooManyTemplates { name: name.to_string() })
            }
            Some(id) => {
                id.templates.push(embedding.to_vec());
                Ok(())
            }
            None => {
                self.identities.push(Identity { name: name.to_string(), templates: vec![embedding.to_vec()] });
                Ok(())
            }
        }
    }

    /// Removes `name`; `false` if there was no such identity.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.identities.len();
        self.identities.retain(|i| i.name != name);
        self.identities.len() != before
    }

    /// An identity's score for `probe`: the cosine similarity of its best template.
    fn identity_score(id: &Identity, probe: &[f32]) -> Option<f32> {
        id.templates.iter().map(|t| cosine(t, probe)).max_by(f32::total_cmp)
    }

    /// Every identity's score for `probe` (its best template), best first.
    pub fn scores(&self, probe: &[f32]) -> Result<Vec<(usize, f32)>, GalleryError> {
        self.check_embedding(probe)?;
        let mut s: Vec<(usize, f32)> = self
            .identities
            .iter()
            .enumerate()
            .filter_map(|(i, id)| Gallery::identity_score(id, probe).map(|b| (i, b)))
            .collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(s)
    }

    /// The best identity for `probe` with its margin, or `None` for an empty gallery.
    pub fn best(&self, probe: &[f32]) -> Result<Option<Match>, GalleryError> {
        let s = self.scores(probe)?;
        Ok(s.first().map(|&(i, sim)| Match {
            identity: self.identities[i].name.clone(),
            similarity: sim,
            margin: sim - s.get(1).map_or(0.0, |x| x.1),
        }))
    }

    /// The similarity of `probe` to the identity `name`, if enrolled.
    pub fn similarity_to(&self, name: &str, probe: &[f32]) -> Result<Option<f32>, GalleryError> {
        self.check_embedding(probe)?;
        Ok(self
            .identities
            .iter()
            .find(|i| i.name == name)
            .and_then(|id| Gallery::identity_score(id, probe)))
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(dim: usize, hot: usize) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[hot] = 1.0;
        v
    }

    #[test]
    fn round_trips_and_matches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.fgg");
        let mut g = Gallery::new(4, [7; 32]);
        g.add("ada", &unit(4, 0)).unwrap();
        g.add("bob", &unit(4, 1)).unwrap();
        g.add("ada", &unit(4, 2)).unwrap();
        g.save(&path).unwrap();
        let back = Gallery::open(&path, 4, [7; 32]).unwrap();
        assert_eq!(back, g);
        let m = back.best(&unit(4, 2)).unwrap().unwrap();
        assert_eq!((m.identity.as_str(), m.similarity, m.margin), ("ada", 1.0, 1.0));
    }

    #[test]
    fn refuses_other_model_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.fgg");
        let mut g = Gallery::new(4, [7; 32]);
        g.add("ada", &unit(4, 0)).unwrap();
        g.save(&path).unwrap();
        assert!(matches!(Gallery::open(&path, 4, [8; 32]), Err(GalleryError::ModelMismatch { .. })));
        let bytes = fs::read(&path).unwrap();
        for cut in [0, 10, HEADER_LEN, bytes.len() - 1] {
            fs::write(&path, &bytes[..cut]).unwrap();
            assert!(matches!(Gallery::open(&path, 4, [7; 32]), Err(GalleryError::Corrupt { .. })), "cut {cut}");
        }
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        fs::write(&path, &flipped).unwrap();
        assert!(matches!(Gallery::open(&path, 4, [7; 32]), Err(GalleryError::Corrupt { .. })));
    }

    #[test]
    fn refuses_bad_embeddings_and_names() {
        let mut g = Gallery::new(4, [0; 32]);
        assert!(matches!(g.add("a", &[1.0, 0.0]), Err(GalleryError::Dimension { .. })));
        assert!(matches!(g.add("a", &[f32::NAN, 0.0, 0.0, 0.0]), Err(GalleryError::InvalidEmbedding)));
        assert!(matches!(g.add("", &unit(4, 0)), Err(GalleryError::InvalidName(_))));
        assert!(matches!(g.add("a\nb", &unit(4, 0)), Err(GalleryError::InvalidName(_))));
        assert!(g.identities.is_empty());
    }
}
