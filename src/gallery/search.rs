//! Exact search kernels: one query against a block of templates, and the fixed top-k of
//! identities.
//!
//! The portable kernels are written so that LLVM vectorises them for the baseline of each target
//! (SSE2 on x86_64, NEON on aarch64). On x86_64 the same bodies are compiled a second time with
//! AVX2 enabled and chosen at run time; the int8 kernel there uses `std::arch` because the
//! `vpmaddubsw` form is twice as fast as anything LLVM derives from the portable loop.

/// Most identities a search returns.
pub const MAX_K: usize = 16;

/// An identity and its score for a probe.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub id: u64,
    /// Cosine similarity of the probe to the identity's best template.
    pub similarity: f32,
}

/// The best `k` distinct identities seen so far, best first, held in a fixed-capacity list.
pub struct TopK {
    k: usize,
    hits: heapless::Vec<Hit, MAX_K>,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK { k: k.clamp(1, MAX_K), hits: heapless::Vec::new() }
    }

    /// The score a new identity must beat to enter.
    #[inline]
    pub fn floor(&self) -> f32 {
        if self.hits.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.hits[self.k - 1].similarity
        }
    }

    /// Offers `id` at `similarity`; an identity already held keeps its best score.
    pub fn offer(&mut self, id: u64, similarity: f32) {
        if similarity <= self.floor() || similarity.is_nan() {
            return;
        }
        if let Some(i) = self.hits.iter().position(|h| h.id == id) {
            if similarity <= self.hits[i].similarity {
                return;
            }
            self.hits.remove(i);
        } else if self.hits.len() == self.k {
            self.hits.pop();
        }
        let at = self.hits.iter().position(|h| h.similarity < similarity).unwrap_or(self.hits.len());
        // Cannot fail: one slot was freed above or the list holds fewer than k <= MAX_K hits.
        let _ = self.hits.insert(at, Hit { id, similarity });
    }

    pub fn into_hits(self) -> heapless::Vec<Hit, MAX_K> {
        self.hits
    }
}

#[inline(always)]
fn dot_f32_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn dots_f32_body(q: &[f32], block: &[f32], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(block.chunks_exact(q.len())) {
        *o = dot_f32_portable(q, row);
    }
}

#[inline(always)]
fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x as i32 * y as i32).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] as i16 as i32 * y[i] as i16 as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

fn dots_i8_portable(q: &[i8], block: &[i8], out: &mut [i32]) {
    for (o, row) in out.iter_mut().zip(block.chunks_exact(q.len())) {
        *o = dot_i8_portable(q, row);
    }
}

/// `out[i] = q · block[i·dim..(i+1)·dim]`, with `dim = q.len()`.
pub fn dots_f32(q: &[f32], block: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked on the line above.
        unsafe { x86::dots_f32_avx2(q, block, out) };
        return;
    }
    dots_f32_body(q, block, out)
}

/// `out[i] = q · block[i·dim..(i+1)·dim]` in exact integer arithmetic. Codes must lie in
/// -127..=127 (the quantiser guarantees it).
pub fn dots_i8(q: &[i8], block: &[i8], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if q.len().is_multiple_of(32) && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked on the line above.
        unsafe { x86::dots_i8_avx2(q, block, out) };
        return;
    }
    dots_i8_portable(q, block, out)
}

/// The portable kernels, for tests and the benches' baseline.
pub fn dots_i8_scalar(q: &[i8], block: &[i8], out: &mut [i32]) {
    dots_i8_portable(q, block, out)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub fn dots_f32_avx2(q: &[f32], block: &[f32], out: &mut [f32]) {
        super::dots_f32_body(q, block, out)
    }

    /// `vpmaddubsw` multiplies unsigned by signed bytes, so the query's sign moves onto the
    /// template: `|q| · (t · sign q)`. Pair sums stay within i16 because codes are at most 127 in
    /// magnitude (2 · 127² < 2¹⁵). The query stays in registers for small dimensions.
    #[target_feature(enable = "avx2")]
    pub fn dots_i8_avx2(q: &[i8], block: &[i8], out: &mut [i32]) {
        let dim = q.len();
        let lanes = dim / 32;
        let ones = _mm256_set1_epi16(1);
        let mut qabs = [_mm256_setzero_si256(); 128];
        let mut qsign = [_mm256_setzero_si256(); 128];
        if lanes > qabs.len() {
            return super::dots_i8_portable(q, block, out);
        }
        for l in 0..lanes {
            // SAFETY: l·32 + 32 <= dim = q.len(); unaligned load.
            let v = unsafe { _mm256_loadu_si256(q.as_ptr().add(l * 32).cast()) };
            qabs[l] = _mm256_abs_epi8(v);
            qsign[l] = v;
        }
        for (o, row) in out.iter_mut().zip(block.chunks_exact(dim)) {
            let mut acc = _mm256_setzero_si256();
            for l in 0..lanes {
                // SAFETY: row.len() == dim and l·32 + 32 <= dim; unaligned load.
                let t = unsafe { _mm256_loadu_si256(row.as_ptr().add(l * 32).cast()) };
                let p = _mm256_maddubs_epi16(qabs[l], _mm256_sign_epi8(t, qsign[l]));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
            }
            let s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            *o = _mm_cvtsi128_si32(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn i8_kernels_agree_exactly(
            dim in prop::sample::select(vec![32usize, 64, 128, 192, 512, 33]),
            seed in any::<u64>(),
        ) {
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; ((s % 255) as i32 - 127) as i8 };
            let q: Vec<i8> = (0..dim).map(|_| next()).collect();
            let block: Vec<i8> = (0..dim * 5).map(|_| next()).collect();
            let mut fast = vec![0; 5];
            let mut slow = vec![0; 5];
            dots_i8(&q, &block, &mut fast);
            for (i, row) in block.chunks_exact(dim).enumerate() {
                slow[i] = q.iter().zip(row).map(|(&a, &b)| a as i32 * b as i32).sum();
            }
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn top_k_is_the_sorted_best_distinct(scores in prop::collection::vec((0u64..20, -1.0f32..1.0), 0..200), k in 1usize..8) {
            let mut top = TopK::new(k);
            for &(id, s) in &scores {
                top.offer(id, s);
            }
            let mut best = std::collections::HashMap::new();
            for &(id, s) in &scores {
                let e = best.entry(id).or_insert(s);
                *e = e.max(s);
            }
            let mut want: Vec<(u64, f32)> = best.into_iter().collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1));
            let got: Vec<f32> = top.into_hits().iter().map(|h| h.similarity).collect();
            let want: Vec<f32> = want.iter().take(k).map(|w| w.1).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn f32_kernel_matches_naive() {
        let q: Vec<f32> = (0..192).map(|i| (i as f32 * 0.37).sin()).collect();
        let block: Vec<f32> = (0..192 * 3).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut out = vec![0.0; 3];
        dots_f32(&q, &block, &mut out);
        for (i, row) in block.chunks_exact(192).enumerate() {
            let naive: f32 = q.iter().zip(row).map(|(a, b)| a * b).sum();
            assert!((out[i] - naive).abs() < 1e-4, "{} vs {naive}", out[i]);
        }
    }
}
