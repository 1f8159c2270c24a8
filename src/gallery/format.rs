//! The bytes of a gallery file, version 2 (`docs/gallery-format.md`): two header slots, then an
//! append-only log of segments. Pure encoding and decoding; no I/O.
//!
//! Everything is little-endian. The committed part of the log, `[LOG_START, log_end)`, is never
//! rewritten; a writer appends a segment past `log_end`, syncs it, and then commits by writing the
//! header slot the current header is *not* in, with the next generation and the new `log_end`. A
//! torn header write fails that slot's CRC and readers fall back to the other slot.

#[cfg(target_endian = "big")]
compile_error!("the gallery maps little-endian values straight from the file");

pub const MAGIC: &[u8; 8] = b"FGGALLRY";
pub const VERSION: u32 = 2;
pub const SLOT_LEN: usize = 4096;
pub const LOG_START: usize = 2 * SLOT_LEN;
/// Header bytes covered by the slot's CRC; the CRC itself follows.
const HEADER_BODY: usize = 124;
pub const SEGMENT_MAGIC: &[u8; 8] = b"FGSEGMNT";
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Segments, name blobs and template blocks start on this boundary so that template rows can be
/// viewed in place as `f32` and stay cache-line aligned.
pub const ALIGN: usize = 64;
pub const RECORD_LEN: usize = 32;
pub const MAX_DIM: usize = 4096;

pub fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

fn align_up64(n: u64) -> u64 {
    n.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// How templates are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// `dim` f32 values of a unit vector.
    F32,
    /// `dim` i8 codes in -127..=127 and one f32 scale, `1 / ‖codes‖`, so that the cosine of two
    /// templates is `dot(codes_a, codes_b) · scale_a · scale_b`.
    I8,
}

impl Dtype {
    fn code(self) -> u8 {
        match self {
            Dtype::F32 => 1,
            Dtype::I8 => 2,
        }
    }

    fn from_code(c: u8) -> Option<Dtype> {
        match c {
            1 => Some(Dtype::F32),
            2 => Some(Dtype::I8),
            _ => None,
        }
    }

    /// Bytes of the template block for `n` templates of `dim` values.
    pub fn block_len(self, n: u64, dim: u64) -> u64 {
        match self {
            Dtype::F32 => align_up64(n * dim * 4),
            Dtype::I8 => align_up64(n * 4) + align_up64(n * dim),
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Dtype, String> {
        match s {
            "f32" => Ok(Dtype::F32),
            "int8" | "i8" => Ok(Dtype::I8),
            _ => Err(format!("unknown template type {s:?}: f32 or int8")),
        }
    }
}

/// One header slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub dtype: Dtype,
    pub dim: usize,
    pub fingerprint: [u8; 32],
    /// Bumped by every commit; the slot with the higher valid generation is current.
    pub generation: u64,
    /// End of the committed log.
    pub log_end: u64,
    pub identities: u64,
    pub templates: u64,
    pub next_id: u64,
    /// Unix seconds when the gallery was created.
    pub created: u64,
    pub segments: u64,
}

/// Why a slot cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum SlotError {
    Magic,
    Version(u32),
    Damaged(&'static str),
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_BODY + 4] {
        let mut b = [0u8; HEADER_BODY + 4];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12] = self.dtype.code();
        b[16..20].copy_from_slice(&(self.dim as u32).to_le_bytes());
        b[24..56].copy_from_slice(&self.fingerprint);
        for (i, v) in [
            self.generation,
            self.log_end,
            self.identities,
            self.templates,
            self.next_id,
            self.created,
            self.segments,
        ]
        .into_iter()
        .enumerate()
        {
            b[56 + 8 * i..64 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&b[..HEADER_BODY]);
        b[HEADER_BODY..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a slot of at least `HEADER_BODY + 4` bytes.
    pub fn decode(b: &[u8]) -> Result<Header, SlotError> {
        if b.len() < HEADER_BODY + 4 || &b[0..8] != MAGIC {
            return Err(SlotError::Magic);
        }
        let version = u32_at(b, 8);
        if version != VERSION {
            return Err(SlotError::Version(version));
        }
        if crc32fast::hash(&b[..HEADER_BODY]) != u32_at(b, HEADER_BODY) {
            return Err(SlotError::Damaged("header checksum mismatch"));
        }
        let dtype = Dtype::from_code(b[12]).ok_or(SlotError::Damaged("unknown template type"))?;
        let dim = u32_at(b, 16) as usize;
        if dim == 0 || dim > MAX_DIM {
            return Err(SlotError::Damaged("implausible embedding dimension"));
        }
        let v = |i: usize| u64_at(b, 56 + 8 * i);
        let h = Header {
            dtype,
            dim,
            fingerprint: b[24..56].try_into().map_err(|_| SlotError::Damaged("fingerprint"))?,
            generation: v(0),
            log_end: v(1),
            identities: v(2),
            templates: v(3),
            next_id: v(4),
            created: v(5),
            segments: v(6),
        };
        if h.log_end < LOG_START as u64 || h.identities > h.next_id {
            return Err(SlotError::Damaged("inconsistent counts"));
        }
        Ok(h)
    }
}

/// What a segment does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// New identities, or more templates for existing ones: records, names, templates.
    Enrol,
    /// Tombstones: the ids removed.
    Remove,
    /// New names for existing ids: records and names.
    Rename,
}

impl Kind {
    fn code(self) -> u32 {
        match self {
            Kind::Enrol => 1,
            Kind::Remove => 2,
            Kind::Rename => 3,
        }
    }

    fn from_code(c: u32) -> Option<Kind> {
        match c {
            1 => Some(Kind::Enrol),
            2 => Some(Kind::Remove),
            3 => Some(Kind::Rename),
            _ => None,
        }
    }
}

/// A segment's fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub kind: Kind,
    /// Bytes after the segment header, a multiple of `ALIGN`.
    pub payload_len: u64,
    pub generation: u64,
    pub records: u32,
    pub templates: u32,
    pub names_len: u32,
    pub payload_crc: u32,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&self.kind.code().to_le_bytes());
        b[16..24].copy_from_slice(&self.payload_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.generation.to_le_bytes());
        b[32..36].copy_from_slice(&self.records.to_le_bytes());
        b[36..40].copy_from_slice(&self.templates.to_le_bytes());
        b[40..44].copy_from_slice(&self.names_len.to_le_bytes());
        b[44..48].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, &'static str> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err("segment header cut short");
        }
        if &b[0..8] != SEGMENT_MAGIC {
            return Err("no segment where the log says one starts");
        }
        if crc32fast::hash(&b[..60]) != u32_at(b, 60) {
            return Err("segment header checksum mismatch");
        }
        let h = SegmentHeader {
            kind: Kind::from_code(u32_at(b, 8)).ok_or("unknown segment kind")?,
            payload_len: u64_at(b, 16),
            generation: u64_at(b, 24),
            records: u32_at(b, 32),
            templates: u32_at(b, 36),
            names_len: u32_at(b, 40),
            payload_crc: u32_at(b, 44),
        };
        if !(h.payload_len as usize).is_multiple_of(ALIGN) {
            return Err("segment length is not aligned");
        }
        Ok(h)
    }

    /// Offsets inside the payload of the name blob and the template block, and the payload
    /// length the counts imply. Computed in u64 so that no count can overflow on 32-bit boards.
    pub fn layout(&self, dtype: Dtype, dim: usize) -> Layout {
        let records_len = match self.kind {
            Kind::Remove => self.records as u64 * 8,
            Kind::Enrol | Kind::Rename => self.records as u64 * RECORD_LEN as u64,
        };
        let names = align_up64(records_len);
        let block = names + align_up64(self.names_len as u64);
        let end = match self.kind {
            Kind::Enrol => block + dtype.block_len(self.templates as u64, dim as u64),
            Kind::Remove | Kind::Rename => block,
        };
        Layout { names, block, payload_len: end }
    }
}

/// Where the parts of a segment's payload start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub names: u64,
    pub block: u64,
    pub payload_len: u64,
}

/// One record of an enrol or rename segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    /// Unix seconds.
    pub created: u64,
    /// Index of the first template in the segment's block (enrol only).
    pub first_template: u32,
    pub templates: u32,
    /// Name bytes in the segment's name blob; an enrol record for an existing id has none.
    pub name_offset: u32,
    pub name_len: u32,
}

impl Record {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.first_template.to_le_bytes());
        out.extend_from_slice(&self.templates.to_le_bytes());
        out.extend_from_slice(&self.name_offset.to_le_bytes());
        out.extend_from_slice(&self.name_len.to_le_bytes());
    }

    /// Decodes `RECORD_LEN` bytes.
    pub fn decode(b: &[u8]) -> Record {
        Record {
            id: u64_at(b, 0),
            created: u64_at(b, 8),
            first_template: u32_at(b, 16),
            templates: u32_at(b, 20),
            name_offset: u32_at(b, 24),
            name_len: u32_at(b, 28),
        }
    }
}

/// Quantises a unit vector to i8 codes and the scale `1 / ‖codes‖`.
pub fn quantize(v: &[f32], codes: &mut [i8]) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        codes.fill(0);
        return 0.0;
    }
    let k = 127.0 / max;
    let mut norm2 = 0i64;
    for (c, x) in codes.iter_mut().zip(v) {
        let q = (x * k).round().clamp(-127.0, 127.0) as i8;
        norm2 += q as i64 * q as i64;
        *c = q;
    }
    1.0 / (norm2 as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            dtype: Dtype::I8,
            dim: 192,
            fingerprint: [3; 32],
            generation: 7,
            log_end: 9000,
            identities: 4,
            templates: 9,
            next_id: 6,
            created: 1_700_000_000,
            segments: 5,
        }
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let h = header();
        let b = h.encode();
        assert_eq!(Header::decode(&b), Ok(h));
        for i in 0..b.len() {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(Header::decode(&d).is_err(), "flip at {i} went unnoticed");
        }
        let mut v1 = b;
        v1[8] = 1;
        assert_eq!(Header::decode(&v1), Err(SlotError::Version(1)));
        assert_eq!(Header::decode(&[0u8; 128]), Err(SlotError::Magic));
    }

    #[test]
    fn segment_header_round_trips() {
        let s = SegmentHeader {
            kind: Kind::Enrol,
            payload_len: 640,
            generation: 3,
            records: 2,
            templates: 3,
            names_len: 7,
            payload_crc: 0xdead_beef,
        };
        assert_eq!(SegmentHeader::decode(&s.encode()), Ok(s));
        let mut b = s.encode();
        b[33] ^= 1;
        assert!(SegmentHeader::decode(&b).is_err());
    }

    #[test]
    fn quantized_cosine_is_close() {
        let v: Vec<f32> = (0..192).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let v: Vec<f32> = v.iter().map(|x| x / n).collect();
        let mut c = vec![0i8; 192];
        let s = quantize(&v, &mut c);
        let cos: f32 = c.iter().zip(&v).map(|(&q, x)| q as f32 * s * x).sum();
        assert!(cos > 0.9999, "{cos}");
        assert!(c.iter().all(|&q| q > -128));
    }
}
