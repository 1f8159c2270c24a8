//! facegate's own kernels for the ops tract 0.23.9 runs slowly, substituted into a model's
//! graph at load (`model::optimize`), after declutter and before tract's code generation. The
//! substituted ops still run inside tract's plan; only the arithmetic of those nodes is ours.
//!
//! * [`Depthwise`], every target: tract's `DepthWiseConv` vectorises stride 1 only; a stride-2
//!   layer walked scalar, strided reads and was the single most expensive node of CenterFace
//!   (32 ms of ~100 at 640×480, `benches/op_profile.rs`). 3×3 layers run as flat passes over
//!   whole planes (stride 2 over the four row/column-parity planes), others row by row with
//!   each tap reading a contiguous run; channel-last layers are vectorised across channels. A
//!   ReLU/ReLU6 or PReLU after the layer is folded in. On x86_64 the same code is compiled a
//!   second time with AVX2 and chosen at run time; on the boards the baseline build vectorises
//!   (NEON).
//! * [`Pointwise`], x86_64 with AVX2+FMA (an AVX-512 kernel where present): the 1×1
//!   convolutions, register-blocked over a packed panel of pixels (up to 512 at a time, so
//!   each output row is written in long runs), with the bias, a residual add, a clamp or a
//!   PReLU fused. With a [`Window`] the same kernel runs the dense k×k convolutions
//!   (`FacegateConv`: CenterFace's first layer and head, FaceRes' and MobileFaceNet's first
//!   layers) over an im2col panel built per block of pixels, never the whole im2col matrix.
//!   ARM keeps tract's NEON matrix kernels.
//! * [`Block`] (`block.rs`), x86_64 as the 1×1 kernel: an expansion, the 3×3 depthwise layer
//!   reading it and the 1×1 projection reading that, run a group of rows at a time through
//!   buffers that stay in L2, where the expanded tensor is 3 MB or more (CenterFace's 240×320
//!   to 60×80 blocks); unfused, those tensors streamed through memory twice. The same file turns
//!   the channel-last prefixes of the NHWC models (first layer, depthwise, 1×1) channel-first.
//! * [`Upsample`] (`upsample.rs`), x86_64 as the 1×1 kernel: 2×2 stride-2 transposed
//!   convolutions (CenterFace's upsampling) as four row blocks of the 1×1 kernel, with the batch
//!   norm, ReLU and lateral addition after them folded in.
//!
//! All are tested against textbook references and against tract's own ops on whole graphs
//! (tests here and in the submodules), and through the models' golden tests.

use tract_core::internal::*;
use tract_core::ops::cnn::conv::{Conv, KernelFormat};
use tract_core::ops::nn::DataFormat;

mod block;
mod upsample;
pub use block::{channels_first_prefixes, substitute_blocks, Block};
pub use upsample::{substitute_upsample, Upsample};

/// Replaces every depthwise f32 convolution `substitutable` accepts with [`Depthwise`], with
/// the ReLU/ReLU6 or PReLU that follows it folded in. Returns how many were replaced. Run it on a decluttered model with concrete shapes.
pub fn substitute_depthwise(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some(mut op) = substitutable(model, node, conv)? else {
            continue;
        };
        let from_end = if op.channels_last { 1 } else { 3 };
        let Activation { chain, clamp: [lo, hi], prelu } = activation_after(model, id, op.channels, from_end)?;
        (op.lo, op.hi) = (lo.to_bits(), hi.to_bits());
        let mut patch = TypedModelPatch::default();
        let mut inputs = patch.taps(model, &node.inputs)?;
        if let Some(alpha) = prelu {
            op.prelu = true;
            let alpha = Tensor::from_shape(&[alpha.len()], &alpha)?;
            inputs.push(patch.add_const(format!("{}.prelu_alpha", node.name), alpha.into_arc_tensor())?);
        }
        let y = patch.wire_node(&node.name, op, &inputs)?;
        patch.shunt_outside(model, chain.last().copied().unwrap_or(id).into(), y[0])?;
        patch.apply(model)?;
        replaced += 1;
    }
    // The fused clamps are left unreachable; drop them.
    model.compact()?;
    Ok(replaced)
}

/// The activation that follows node `id` and a kernel can fold in.
struct Activation {
    /// The nodes it replaces, in order; the last one's output is the activation's.
    chain: Vec<usize>,
    /// Clamp to `[lo, hi]` (±∞ where there is none).
    clamp: [f32; 2],
    /// A PReLU's per-channel alpha.
    prelu: Option<Vec<f32>>,
}

/// A clamp (`clamp_chain`: ReLU, ReLU6) after node `id`, or else a PReLU (`prelu_after`, channel
/// axis `from_end` places from the last).
fn activation_after(model: &TypedModel, id: usize, channels: usize, from_end: usize) -> TractResult<Activation> {
    let (mut chain, clamp) = clamp_chain(model, id)?;
    let mut prelu = None;
    if chain.is_empty() {
        if let Some((nodes, alpha)) = prelu_after(model, id, channels, from_end) {
            chain.extend(nodes);
            prelu = Some(alpha);
        }
    }
    Ok(Activation { chain, clamp, prelu })
}

/// The `Max` and `Min` by constants that follow node `id` (each the only consumer of the one
/// before: ReLU, ReLU6), and the clamp `[lo, hi]` they make (±∞ where there is none).
fn clamp_chain(model: &TypedModel, id: usize) -> TractResult<(Vec<usize>, [f32; 2])> {
    use tract_core::ops::binary::TypedBinOp;
    use tract_core::ops::math::{Max, Min};
    let shape = model.outlet_fact(OutletId::new(id, 0))?.shape.clone();
    let (mut chain, mut lo, mut hi) = (Vec::new(), f32::NEG_INFINITY, f32::INFINITY);
    let mut at = id;
    while let Some((next, slot)) = sole_successor(model, at) {
        let n = model.node(next);
        let Some(bin) = n.op_as::<TypedBinOp>() else {
            break;
        };
        if n.inputs.len() != 2 || model.outlet_fact(OutletId::new(next, 0))?.shape != shape {
            break;
        }
        let Some(v) = uniform_const(model, n.inputs[1 - slot]) else {
            break;
        };
        if bin.0.is::<Max>() && lo == f32::NEG_INFINITY && hi == f32::INFINITY && !v.is_nan() {
            lo = v;
        } else if bin.0.is::<Min>() && hi == f32::INFINITY && !v.is_nan() && v >= lo {
            hi = v;
        } else {
            break;
        }
        chain.push(next);
        at = next;
    }
    Ok((chain, [lo, hi]))
}

/// What both convolution substitutions read off a tract `Conv` node (`conv_parts`).
struct ConvParts {
    /// A batch axis of 1 in front.
    batch: bool,
    channels_last: bool,
    /// Input channels, and the input's `[height, width]`.
    channels: usize,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    /// Zero padding before the first row and column, and the output's size.
    pad: [usize; 2],
    output: [usize; 2],
    /// The OIHW kernel and the bias, both constants.
    weights: Arc<Tensor>,
    bias: Arc<Tensor>,
}

/// The convolution at `node` as [`ConvParts`], when both substitutions could take it: f32, not
/// quantized, NCHW/CHW/NHWC/HWC with batch 1 and concrete sizes, a 2-D OIHW kernel and a bias
/// held as constants, no dilation, no zero stride.
fn conv_parts(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<ConvParts>> {
    if conv.q_params.is_some() || conv.kernel_fmt != KernelFormat::OIHW || node.inputs.len() != 3 {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let kernel = model.outlet_fact(node.inputs[1])?;
    let bias = model.outlet_fact(node.inputs[2])?;
    let Some(shape) = x.shape.as_concrete() else {
        return Ok(None);
    };
    // Declutter drops a batch axis of 1: the convolution is then CHW (or HWC). Models fed
    // channel-last images (MobileFaceNet, FaceRes) keep their first layers NHWC.
    let (batch, channels_last, (channels, height, width)) = match (conv.pool_spec.data_format, shape) {
        (DataFormat::NCHW, &[1, c, h, w]) => (true, false, (c, h, w)),
        (DataFormat::CHW, &[c, h, w]) => (false, false, (c, h, w)),
        (DataFormat::NHWC, &[1, h, w, c]) => (true, true, (c, h, w)),
        (DataFormat::HWC, &[h, w, c]) => (false, true, (c, h, w)),
        _ => return Ok(None),
    };
    let ps = &conv.pool_spec;
    let [kh, kw] = ps.kernel_shape[..] else {
        return Ok(None);
    };
    let strides = ps.strides();
    let (Some(weights), Some(bias_values)) = (kernel.konst.clone(), bias.konst.clone()) else {
        return Ok(None);
    };
    if [x.datum_type, kernel.datum_type, bias.datum_type].iter().any(|&t| t != f32::datum_type())
        || ps.input_channels != channels
        || ps.dilations().iter().any(|&d| d != 1)
        || strides.iter().any(|&s| s == 0)
    {
        return Ok(None);
    }
    let padded = ps.computed_padding(&[height, width]);
    Ok(Some(ConvParts {
        batch,
        channels_last,
        channels,
        input: [height, width],
        kernel: [kh, kw],
        stride: [strides[0], strides[1]],
        pad: [padded[0].pad_before, padded[1].pad_before],
        output: [padded[0].convoluted, padded[1].convoluted],
        weights,
        bias: bias_values,
    }))
}

/// The [`Depthwise`] that computes `conv` at `node`, when it is one this module handles: what
/// `conv_parts` accepts with one group per channel (channel multiplier 1), a bias of one value
/// or one per channel, horizontal stride 1 or 2.
fn substitutable(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Depthwise>> {
    let Some(parts) = conv_parts(model, node, conv)? else {
        return Ok(None);
    };
    let (channels, [kh, kw]) = (parts.channels, parts.kernel);
    if conv.group != channels
        || conv.pool_spec.output_channels != channels
        || parts.weights.shape() != [channels, 1, kh, kw]
        || !(parts.bias.len() == 1 || parts.bias.len() == channels)
        || !(parts.stride[1] == 1 || parts.stride[1] == 2)
        || parts.output.contains(&0)
    {
        return Ok(None);
    }
    Ok(Some(Depthwise {
        batch_axis: parts.batch,
        channels_last: parts.channels_last,
        channels,
        input: parts.input,
        output: parts.output,
        kernel: parts.kernel,
        stride: parts.stride,
        pad: parts.pad,
        lo: f32::NEG_INFINITY.to_bits(),
        hi: f32::INFINITY.to_bits(),
        prelu: false,
    }))
}

/// Depthwise convolution, batch 1, NCHW, f32: channel `c` of the output is channel `c` of the
/// input convolved with its own `kernel` (OIHW `[C, 1, kh, kw]`) plus `bias[c]` (or one bias for
/// every channel). Taps outside the input add nothing (zero padding).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Depthwise {
    /// With a batch axis of 1 (`[1, C, H, W]` or `[1, H, W, C]`).
    pub batch_axis: bool,
    /// Channels last (`[H, W, C]`) rather than planes (`[C, H, W]`).
    pub channels_last: bool,
    pub channels: usize,
    /// Input `[height, width]`.
    pub input: [usize; 2],
    /// Output `[height, width]`.
    pub output: [usize; 2],
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// `[vertical, horizontal]`; horizontal is 1 or 2.
    pub stride: [usize; 2],
    /// Padding before the first row and the first column.
    pub pad: [usize; 2],
    /// The output is clamped to `[lo, hi]` (f32 bits, so the op is `Eq`; ±∞ for no clamp): a
    /// ReLU or ReLU6 that followed the convolution in the graph.
    pub lo: u32,
    pub hi: u32,
    /// A PReLU follows (`y + alpha[c] · min(y, 0)`, alpha the fourth input, one per channel).
    pub prelu: bool,
}

impl Depthwise {
    /// The tensor shape of a `[height, width]` plane stack in this op's layout.
    fn shape(&self, [h, w]: [usize; 2]) -> TVec<usize> {
        let mut shape = if self.channels_last { tvec![h, w, self.channels] } else { tvec![self.channels, h, w] };
        if self.batch_axis {
            shape.insert(0, 1);
        }
        shape
    }
}

impl Op for Depthwise {
    fn name(&self) -> StaticName {
        "FacegateDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} ch {:?} -> {:?} kernel {:?} stride {:?} pad {:?} clamp [{}, {}]",
            self.channels,
            self.input,
            self.output,
            self.kernel,
            self.stride,
            self.pad,
            f32::from_bits(self.lo),
            f32::from_bits(self.hi)
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 3 + usize::from(self.prelu));
        let alpha = if self.prelu { inputs.pop() } else { None };
        let (x, kernel, bias) = args_3!(inputs);
        ensure!(x.shape() == &self.shape(self.input)[..], "depthwise input is {:?}", x.shape());
        let (x, kernel, bias) = (x.try_as_plain_ram()?, kernel.try_as_plain_ram()?, bias.try_as_plain_ram()?);
        let (x, kernel, bias) = (x.as_slice::<f32>()?, kernel.as_slice::<f32>()?, bias.as_slice::<f32>()?);
        ensure!(kernel.len() == self.channels * self.kernel[0] * self.kernel[1]);
        ensure!(bias.len() == 1 || bias.len() == self.channels);
        // SAFETY: f32 has no invalid bit patterns, and `run` writes every output element (each
        // output row is filled with its bias before the taps are added).
        let mut out = unsafe { Tensor::uninitialized::<f32>(&self.shape(self.output))? };
        let mut view = out.try_as_plain_ram_mut()?;
        let out_values = view.as_slice_mut::<f32>()?;
        run(self, x, kernel, bias, out_values);
        if let Some(alpha) = alpha {
            let alpha = alpha.try_as_plain_ram()?;
            let alpha = alpha.as_slice::<f32>()?;
            ensure!(alpha.len() == self.channels);
            prelu(out_values, alpha, self.channels_last);
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Depthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3 + usize::from(self.prelu));
        Ok(tvec!(f32::fact(self.shape(self.output))))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let taps = self.kernel[0] * self.kernel[1];
        Ok(tvec!((Cost::FMA(f32::datum_type()), (self.channels * self.output[0] * self.output[1] * taps).to_dim())))
    }

    as_op!();
}

/// Computes `op` into `out` (`[C, oh, ow]`, any content), with the widest code this CPU runs.
pub fn run(op: &Depthwise, x: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
    if op.channels_last {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU was just checked for AVX2, the only feature enabled there.
            unsafe { run_channels_last_avx2(op, x, kernel, bias, out) };
            return;
        }
        return run_channels_last(op, x, kernel, bias, out);
    }
    // AVX-512 (the same code compiled for it) was measured no faster: these loops are bound by
    // memory, not by vector width.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just checked for AVX2, the only feature `run_avx2` enables.
        unsafe { run_avx2(op, x, kernel, bias, out) };
        return;
    }
    run_portable(op, x, kernel, bias, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2(op: &Depthwise, x: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
    run_portable(op, x, kernel, bias, out)
}

/// The kernel itself, plain Rust over slices; `inline(always)` so that `run_avx2` compiles its
/// own copy with AVX2.
#[inline(always)]
fn run_portable(op: &Depthwise, x: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
    let [h, w] = op.input;
    let [oh, ow] = op.output;
    let [kh, kw] = op.kernel;
    let [sh, sw] = op.stride;
    let [ph, pw] = op.pad;
    // Stride 2: each input row as its even columns then its odd columns, so that a tap reads
    // a contiguous run (input column 2·ox + d is plane d mod 2, index ox + ⌊d / 2⌋).
    let even = w.div_ceil(2);
    let mut planes: Vec<f32> = Vec::new();
    for c in 0..op.channels {
        let xc = &x[c * h * w..][..h * w];
        let taps = &kernel[c * kh * kw..][..kh * kw];
        let b = if bias.len() == 1 { bias[0] } else { bias[c] };
        let oc = &mut out[c * oh * ow..][..oh * ow];
        // A 3×3, stride 2, padding 1 or 0 before (TensorFlow's SAME pads after only) on even
        // sizes: one flat pass over four planes.
        if [kh, kw, sh, sw] == [3, 3, 2, 2]
            && ph == pw
            && ph <= 1
            && h % 2 == 0
            && w % 2 == 0
            && [oh, ow] == [h / 2, w / 2]
        {
            halve3x3(xc, oc, taps, b, [h, w], ph, &mut planes);
            clamp_plane(oc, op.lo, op.hi);
            continue;
        }
        let src: &[f32] = if sw == 2 {
            planes.resize(h * w, 0.0);
            for (row, split) in xc.chunks_exact(w).zip(planes.chunks_exact_mut(w)) {
                let (evens, odds) = split.split_at_mut(even);
                split_by_parity(row, evens, odds);
            }
            &planes
        } else {
            xc
        };
        let run_of = |irow, kx| tap_run(irow, kx, pw, sw == 2, even);
        // A same-size 3×3, stride 1: the rows between the first and the last in one flat pass;
        // those two rows go through the row-by-row path below.
        let flat = [kh, kw, sh, sw, ph, pw] == [3, 3, 1, 1, 1, 1] && [oh, ow] == [h, w] && h >= 3 && w >= 2;
        if flat {
            same3x3_inner_rows(xc, oc, taps, b, h, w);
        }
        for (oy, orow) in oc.chunks_exact_mut(ow).enumerate() {
            if flat && oy != 0 && oy != oh - 1 {
                continue;
            }
            orow.fill(b);
            for ky in 0..kh {
                let Some(iy) = (oy * sh + ky).checked_sub(ph).filter(|&iy| iy < h) else {
                    continue;
                };
                let irow = &src[iy * w..][..w];
                let row_taps = &taps[ky * kw..][..kw];
                if kw == 3 {
                    let runs = [run_of(irow, 0), run_of(irow, 1), run_of(irow, 2)];
                    row3(orow, runs, [row_taps[0], row_taps[1], row_taps[2]]);
                    continue;
                }
                for (kx, &tap) in row_taps.iter().enumerate() {
                    let (run, shift) = run_of(irow, kx);
                    let (a, z) = valid_columns(run.len(), shift, orow.len());
                    if a < z {
                        let from = (a as isize + shift) as usize;
                        for (o, v) in orow[a..z].iter_mut().zip(&run[from..from + (z - a)]) {
                            *o += tap * v;
                        }
                    }
                }
            }
        }
        clamp_plane(oc, op.lo, op.hi);
    }
}

/// `row`'s even columns into `evens` (`⌈len/2⌉` long), its odd ones into the start of `odds`.
#[inline(always)]
fn split_by_parity(row: &[f32], evens: &mut [f32], odds: &mut [f32]) {
    // Compilers keep this strided copy scalar; with AVX2 it is two shuffles per 16 values.
    #[cfg(target_arch = "x86_64")]
    if row.len() >= 16 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just checked for AVX2, the only feature it enables.
        unsafe { split_by_parity_avx2(row, evens, odds) };
        return;
    }
    split_by_parity_portable(row, evens, odds)
}

/// `split_by_parity` 16 values at a time, the rest as the portable code does it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn split_by_parity_avx2(row: &[f32], evens: &mut [f32], odds: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = row.len() / 16;
    let (head, rest) = row.split_at(16 * n);
    let (e_head, e_rest) = evens.split_at_mut(8 * n);
    let (o_head, o_rest) = odds.split_at_mut(8 * n);
    for ((pair, e), o) in head.chunks_exact(16).zip(e_head.chunks_exact_mut(8)).zip(o_head.chunks_exact_mut(8)) {
        // SAFETY: each chunk is 16 (read) or 8 (written) values long.
        unsafe {
            let (a, b) = (_mm256_loadu_ps(pair.as_ptr()), _mm256_loadu_ps(pair.as_ptr().add(8)));
            // Per 128-bit lane [a0 a2 b0 b2 | a4 a6 b4 b6], then the 64-bit pairs reordered.
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
            _mm256_storeu_ps(e.as_mut_ptr(), order(even));
            _mm256_storeu_ps(o.as_mut_ptr(), order(odd));
        }
    }
    split_by_parity_portable(rest, e_rest, o_rest)
}

#[inline(always)]
fn split_by_parity_portable(row: &[f32], evens: &mut [f32], odds: &mut [f32]) {
    for ((e, o), pair) in evens.iter_mut().zip(odds.iter_mut()).zip(row.chunks_exact(2)) {
        (*e, *o) = (pair[0], pair[1]);
    }
    if row.len() % 2 == 1 {
        evens[row.len() / 2] = row[row.len() - 1];
    }
}

/// PReLU in place, `v + alpha[c] · min(v, 0)`, over `[C, …]` planes or channel-last pixels.
fn prelu(values: &mut [f32], alpha: &[f32], channels_last: bool) {
    if channels_last {
        for pixel in values.chunks_exact_mut(alpha.len()) {
            for (v, a) in pixel.iter_mut().zip(alpha) {
                *v += a * v.min(0.0);
            }
        }
    } else {
        let plane = values.len() / alpha.len().max(1);
        for (p, a) in values.chunks_exact_mut(plane.max(1)).zip(alpha) {
            for v in p.iter_mut() {
                *v += a * v.min(0.0);
            }
        }
    }
}

/// Clamps a plane to `[lo, hi]` (f32 bits), unless that is (-∞, ∞).
#[inline(always)]
fn clamp_plane(plane: &mut [f32], lo: u32, hi: u32) {
    let (lo, hi) = (f32::from_bits(lo), f32::from_bits(hi));
    if lo != f32::NEG_INFINITY || hi != f32::INFINITY {
        // Comparisons rather than `f32::max`/`min`, whose NaN handling stops them compiling to
        // plain vector max/min; a NaN becomes `lo`, as in the 1×1 kernels' `max_ps`.
        for o in plane.iter_mut() {
            let v = if *o > lo { *o } else { lo };
            *o = if v < hi { v } else { hi };
        }
    }
}

/// A 3×3 convolution with stride 2 and padding `pad` (1, or 0: TensorFlow's SAME pads after
/// only) before, on an `h × w` plane, both even, into the `h/2 × w/2` output. The input is
/// split once into its four (row parity, column parity) planes, each `h/2 × w/2`; output point
/// `i` (flat) then reads every tap at a fixed offset from `i` in one of them, so the whole
/// plane but one row and one column is one pass; those go point by point, without the taps
/// that fall outside.
#[inline(always)]
fn halve3x3(
    x: &[f32],
    out: &mut [f32],
    taps: &[f32],
    bias: f32,
    [h, w]: [usize; 2],
    pad: usize,
    planes: &mut Vec<f32>,
) {
    let (oh, ow) = (h / 2, w / 2);
    let n = oh * ow;
    planes.resize(4 * n, 0.0);
    let (ee, rest) = planes.split_at_mut(n);
    let (eo, rest) = rest.split_at_mut(n);
    let (oe, oo) = rest.split_at_mut(n);
    let rows = x.chunks_exact(2 * w).zip(ee.chunks_exact_mut(ow).zip(eo.chunks_exact_mut(ow)));
    for ((pair, (ee, eo)), (oe, oo)) in rows.zip(oe.chunks_exact_mut(ow).zip(oo.chunks_exact_mut(ow))) {
        let (even_row, odd_row) = pair.split_at(w);
        split_by_parity(even_row, ee, eo);
        split_by_parity(odd_row, oe, oo);
    }
    let (oo, oe, eo, ee) = (&*oo, &*oe, &*eo, &*ee);
    // Tap (ky, kx) of output (oy, ox) reads input (2oy + ky - pad, 2ox + kx - pad).
    // pad 1: rows ky = 0, 2 are odd rows oy - 1 and oy, row 1 the even row oy; likewise for
    // columns. The first row and column fall outside (their reads would wrap).
    // pad 0: rows ky = 0, 2 are even rows oy and oy + 1, row 1 the odd row oy; the last row
    // and column fall outside.
    let (start, end) = if pad == 1 { (ow + 1, n) } else { (0, n.saturating_sub(ow + 1)) };
    if start < end {
        let m = end - start;
        let (a, b, c) = if pad == 1 {
            (
                [&oo[start - ow - 1..][..m], &oe[start - ow..][..m], &oo[start - ow..][..m]],
                [&eo[start - 1..][..m], &ee[start..][..m], &eo[start..][..m]],
                [&oo[start - 1..][..m], &oe[start..][..m], &oo[start..][..m]],
            )
        } else {
            (
                [&ee[start..][..m], &eo[start..][..m], &ee[start + 1..][..m]],
                [&oe[start..][..m], &oo[start..][..m], &oe[start + 1..][..m]],
                [&ee[start + ow..][..m], &eo[start + ow..][..m], &ee[start + ow + 1..][..m]],
            )
        };
        let ([a0, a1, a2], [b0, b1, b2], [c0, c1, c2]) = (a, b, c);
        let [t0, t1, t2, t3, t4, t5, t6, t7, t8]: [f32; 9] = std::array::from_fn(|i| taps[i]);
        let o = &mut out[start..end];
        for i in 0..m {
            let top = t0 * a0[i] + t1 * a1[i] + t2 * a2[i];
            let mid = t3 * b0[i] + t4 * b1[i] + t5 * b2[i];
            let bot = t6 * c0[i] + t7 * c1[i] + t8 * c2[i];
            o[i] = bias + top + mid + bot;
        }
    }
    // The row and the column the flat pass leaves (its reads there wrapped round a row end or
    // ran past the planes), from the planes without the taps that fall outside the input.
    let [t0, t1, t2, t3, t4, t5, t6, t7, t8]: [f32; 9] = std::array::from_fn(|i| taps[i]);
    let at = |plane: &[f32], r: usize, c: usize| plane[r * ow + c];
    if pad == 1 {
        // Row 0 (kernel row 0 above the input), then column 0 (kernel column 0 left of it).
        for ox in 0..ow {
            let (mut mid, mut bot) = (t4 * at(ee, 0, ox) + t5 * at(eo, 0, ox), t7 * at(oe, 0, ox) + t8 * at(oo, 0, ox));
            if ox > 0 {
                mid += t3 * at(eo, 0, ox - 1);
                bot += t6 * at(oo, 0, ox - 1);
            }
            out[ox] = bias + mid + bot;
        }
        for oy in 1..oh {
            let top = t1 * at(oe, oy - 1, 0) + t2 * at(oo, oy - 1, 0);
            let mid = t4 * at(ee, oy, 0) + t5 * at(eo, oy, 0);
            let bot = t7 * at(oe, oy, 0) + t8 * at(oo, oy, 0);
            out[oy * ow] = bias + top + mid + bot;
        }
    } else {
        // The last column (kernel column 2 right of the input), then the last row (kernel row
        // 2 below it).
        let last = ow - 1;
        for oy in 0..oh {
            let top = t0 * at(ee, oy, last) + t1 * at(eo, oy, last);
            let mid = t3 * at(oe, oy, last) + t4 * at(oo, oy, last);
            let bot = if oy + 1 < oh { t6 * at(ee, oy + 1, last) + t7 * at(eo, oy + 1, last) } else { 0.0 };
            out[oy * ow + last] = bias + top + mid + bot;
        }
        let oy = oh - 1;
        for ox in 0..last {
            let top = t0 * at(ee, oy, ox) + t1 * at(eo, oy, ox) + t2 * at(ee, oy, ox + 1);
            let mid = t3 * at(oe, oy, ox) + t4 * at(oo, oy, ox) + t5 * at(oe, oy, ox + 1);
            out[oy * ow + ox] = bias + top + mid;
        }
    }
}

/// Rows `1..h-1` of a same-size 3×3 convolution with padding 1 and stride 1, on one `h × w`
/// plane: one flat pass, `out[i] = bias + Σ taps[ky·3+kx] · x[i + (ky-1)·w + kx-1]`, then the
/// first and last columns of those rows, where the flat reads wrapped round a row end, again
/// without the taps that fall outside. Needs `h ≥ 3`, `w ≥ 2`.
#[inline(always)]
fn same3x3_inner_rows(x: &[f32], out: &mut [f32], taps: &[f32], bias: f32, h: usize, w: usize) {
    // From (y=1, x=1) to just before (y=h-2, x=w-1): every read stays inside the plane.
    let (start, end) = (w + 1, (h - 1) * w - 1);
    let n = end - start;
    let tap = |ky: usize, kx: usize| &x[ky * w + kx..][..n];
    let (a0, a1, a2) = (tap(0, 0), tap(0, 1), tap(0, 2));
    let (b0, b1, b2) = (tap(1, 0), tap(1, 1), tap(1, 2));
    let (c0, c1, c2) = (tap(2, 0), tap(2, 1), tap(2, 2));
    let [t0, t1, t2, t3, t4, t5, t6, t7, t8]: [f32; 9] = std::array::from_fn(|i| taps[i]);
    let o = &mut out[start..end];
    for i in 0..n {
        let top = t0 * a0[i] + t1 * a1[i] + t2 * a2[i];
        let mid = t3 * b0[i] + t4 * b1[i] + t5 * b2[i];
        let bot = t6 * c0[i] + t7 * c1[i] + t8 * c2[i];
        o[i] = bias + top + mid + bot;
    }
    for y in 1..h - 1 {
        let (up, row, down) = (&x[(y - 1) * w..][..w], &x[y * w..][..w], &x[(y + 1) * w..][..w]);
        let (l, r) = (w - 2, w - 1);
        out[y * w] = bias + (t1 * up[0] + t2 * up[1]) + (t4 * row[0] + t5 * row[1]) + (t7 * down[0] + t8 * down[1]);
        out[y * w + r] = bias + (t0 * up[l] + t1 * up[r]) + (t3 * row[l] + t4 * row[r]) + (t6 * down[l] + t7 * down[r]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_channels_last_avx2(op: &Depthwise, x: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
    run_channels_last(op, x, kernel, bias, out)
}

/// Channels last (`[H, W, C]`): every output pixel is a run of `C` values, each tap adds a run
/// of `C` products, vectorised across channels. The kernel is first turned tap-major.
#[inline(always)]
fn run_channels_last(op: &Depthwise, x: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
    let c = op.channels;
    let [h, w] = op.input;
    let [_, ow] = op.output;
    let [kh, kw] = op.kernel;
    let taps = kh * kw;
    let mut by_tap = vec![0f32; taps * c];
    for ch in 0..c {
        for t in 0..taps {
            by_tap[t * c + ch] = kernel[ch * taps + t];
        }
    }
    let bias: Vec<f32> = if bias.len() == 1 { vec![bias[0]; c] } else { bias.to_vec() };
    // Channels in blocks of 16 summed in registers over every tap (then any rest one by one).
    const BLOCK: usize = 16;
    let blocks = c / BLOCK * BLOCK;
    for (i, o) in out.chunks_exact_mut(c).enumerate() {
        let (oy, ox) = (i / ow, i % ow);
        // The taps that fall inside the input: (input pixel offset, tap index).
        let mut inside = [(0usize, 0usize); 49];
        let mut n = 0;
        for ky in 0..kh {
            let Some(iy) = (oy * op.stride[0] + ky).checked_sub(op.pad[0]).filter(|&iy| iy < h) else {
                continue;
            };
            for kx in 0..kw {
                if let Some(ix) = (ox * op.stride[1] + kx).checked_sub(op.pad[1]).filter(|&ix| ix < w) {
                    if n < inside.len() {
                        inside[n] = ((iy * w + ix) * c, ky * kw + kx);
                    }
                    n += 1;
                }
            }
        }
        if n > inside.len() {
            // Kernels over 7×7 (none in the shipped models): one tap at a time.
            o.copy_from_slice(&bias);
            for ky in 0..kh {
                let Some(iy) = (oy * op.stride[0] + ky).checked_sub(op.pad[0]).filter(|&iy| iy < h) else { continue };
                for kx in 0..kw {
                    let Some(ix) = (ox * op.stride[1] + kx).checked_sub(op.pad[1]).filter(|&ix| ix < w) else {
                        continue;
                    };
                    let (input, tap) = (&x[(iy * w + ix) * c..][..c], &by_tap[(ky * kw + kx) * c..][..c]);
                    for ((o, v), t) in o.iter_mut().zip(input).zip(tap) {
                        *o += t * v;
                    }
                }
            }
            continue;
        }
        let inside = &inside[..n];
        for b in (0..blocks).step_by(BLOCK) {
            let mut acc: [f32; BLOCK] = bias[b..b + BLOCK].try_into().expect("a block of bias");
            for &(at, t) in inside {
                let v: &[f32; BLOCK] = x[at + b..][..BLOCK].try_into().expect("a block of input");
                let k: &[f32; BLOCK] = by_tap[t * c + b..][..BLOCK].try_into().expect("a block of taps");
                for j in 0..BLOCK {
                    acc[j] += k[j] * v[j];
                }
            }
            o[b..b + BLOCK].copy_from_slice(&acc);
        }
        for ch in blocks..c {
            o[ch] = bias[ch];
            for &(at, t) in inside {
                o[ch] += by_tap[t * c + ch] * x[at + ch];
            }
        }
    }
    clamp_plane(out, op.lo, op.hi);
}

/// The run of an input row that kernel column `kx` reads, and the shift from output column to
/// it; a stride-2 row is stored as its `even` even columns, then its odd ones.
#[inline(always)]
fn tap_run(irow: &[f32], kx: usize, pad: usize, stride2: bool, even: usize) -> (&[f32], isize) {
    let d = kx as isize - pad as isize;
    if stride2 {
        let run = if d.rem_euclid(2) == 0 { &irow[..even] } else { &irow[even..] };
        (run, d.div_euclid(2))
    } else {
        (irow, d)
    }
}

/// The output columns `[lo, hi)` whose input column `ox + shift` lies in a run of `len`.
#[inline(always)]
fn valid_columns(len: usize, shift: isize, width: usize) -> (usize, usize) {
    let lo = (-shift).clamp(0, width as isize) as usize;
    let hi = (len as isize - shift).clamp(0, width as isize) as usize;
    (lo, hi.max(lo))
}

/// One kernel row of a three-wide kernel into one output row: one pass over the columns all
/// three taps reach, the few border columns one by one.
#[inline(always)]
fn row3(orow: &mut [f32], runs: [(&[f32], isize); 3], taps: [f32; 3]) {
    let width = orow.len();
    let ranges = runs.map(|(run, shift)| valid_columns(run.len(), shift, width));
    let lo = ranges.iter().map(|r| r.0).max().unwrap_or(0);
    let hi = ranges.iter().map(|r| r.1).min().unwrap_or(0).max(lo);
    let n = hi - lo;
    if n > 0 {
        let at = |k: usize| &runs[k].0[(lo as isize + runs[k].1) as usize..][..n];
        let (a, b, c) = (at(0), at(1), at(2));
        let o = &mut orow[lo..hi];
        for i in 0..n {
            o[i] += taps[0] * a[i] + taps[1] * b[i] + taps[2] * c[i];
        }
    }
    for ox in (0..lo).chain(hi..width) {
        for k in 0..3 {
            let (run, shift) = runs[k];
            if let Some(v) = run.get((ox as isize + shift) as usize).filter(|_| ox as isize + shift >= 0) {
                orow[ox] += taps[k] * v;
            }
        }
    }
}

/// Replaces every 1×1 convolution `pointwise_chain` accepts (on x86_64 with AVX2 and FMA only)
/// with [`Pointwise`], folding the bias, a residual addition and a clamp (ReLU, ReLU6) that
/// follow it. Returns how many were replaced. Run it on a decluttered model with concrete
/// shapes, where tract has turned each 1×1 convolution into an `EinSum` followed by its
/// bias `Add`.
pub fn substitute_pointwise(model: &mut TypedModel) -> TractResult<usize> {
    if !pointwise_kernel_available() {
        return Ok(0);
    }
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some((op, chain, wires)) = pointwise_chain(model, id)? else {
            continue;
        };
        let last = *chain.last().unwrap_or(&id);
        let mut patch = TypedModelPatch::default();
        let taps = patch.taps(model, &wires.activations)?;
        let name = &model.node(id).name;
        let packed = patch.add_const(format!("{name}.packed_weights"), wires.packed.into_arc_tensor())?;
        let bias = patch.add_const(format!("{name}.bias_per_channel"), wires.bias.into_arc_tensor())?;
        let mut inputs = tvec![taps[0], packed, bias];
        inputs.extend(taps.iter().skip(1).copied());
        if let Some(alpha) = wires.alpha {
            inputs.push(patch.add_const(format!("{name}.prelu_alpha"), alpha.into_arc_tensor())?);
        }
        let y = patch.wire_node(format!("{name}.pointwise"), op, &inputs)?;
        patch.shunt_outside(model, last.into(), y[0])?;
        patch.apply(model)?;
        replaced += 1;
    }
    // The replaced chains are left unreachable; drop them.
    model.compact()?;
    Ok(replaced)
}

/// Replaces every dense (one group) f32 convolution `dense_conv` accepts with a windowed
/// [`Pointwise`] (facegate's 1×1 kernel over an im2col panel), with the ReLU/ReLU6 or PReLU
/// that follows folded in. Returns how many were replaced. x86_64 with AVX2+FMA only, like
/// the 1×1 kernel; run it on a decluttered model with concrete shapes, before
/// `substitute_pointwise` (which handles the 1×1 layers declutter turned into `EinSum`s).
pub fn substitute_dense(model: &mut TypedModel) -> TractResult<usize> {
    if !pointwise_kernel_available() {
        return Ok(0);
    }
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some((mut op, packed, bias)) = dense_conv(model, node, conv)? else {
            continue;
        };
        let from_end = if op.y_channels_last { 1 } else { 3 };
        let Activation { chain, clamp: [lo, hi], prelu } = activation_after(model, id, op.co, from_end)?;
        (op.lo, op.hi, op.prelu) = (lo.to_bits(), hi.to_bits(), prelu.is_some());
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, node.inputs[0])?;
        let name = &node.name;
        let packed = patch.add_const(format!("{name}.packed_weights"), packed.into_arc_tensor())?;
        let bias = patch.add_const(format!("{name}.bias_per_channel"), bias.into_arc_tensor())?;
        let mut inputs = tvec![x, packed, bias];
        if let Some(alpha) = prelu {
            let alpha = Tensor::from_shape(&[alpha.len()], &alpha)?;
            inputs.push(patch.add_const(format!("{name}.prelu_alpha"), alpha.into_arc_tensor())?);
        }
        let y = patch.wire_node(format!("{name}.dense"), op, &inputs)?;
        patch.shunt_outside(model, chain.last().copied().unwrap_or(id).into(), y[0])?;
        patch.apply(model)?;
        replaced += 1;
    }
    // The replaced convolutions and fused activations are left unreachable; drop them.
    model.compact()?;
    Ok(replaced)
}

/// The windowed [`Pointwise`] that computes `conv` at `node`, with its packed weights and
/// per-channel bias, when it is one the kernel handles: what `conv_parts` accepts with one
/// group, a bias of one value or one per channel, at least `MIN_POINTWISE_PIXELS` output pixels.
fn dense_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<(Pointwise, Tensor, Tensor)>> {
    let Some(parts) = conv_parts(model, node, conv)? else {
        return Ok(None);
    };
    let (ci, co, [kh, kw]) = (parts.channels, conv.pool_spec.output_channels, parts.kernel);
    if conv.group != 1
        || parts.weights.shape() != [co, ci, kh, kw]
        || parts.output[0] * parts.output[1] < MIN_POINTWISE_PIXELS
    {
        return Ok(None);
    }
    let bias_values = parts.bias.try_as_plain_ram()?;
    let bias_values = bias_values.as_slice::<f32>()?;
    let bias_values = match bias_values.len() {
        1 => vec![bias_values[0]; co],
        n if n == co => bias_values.to_vec(),
        _ => return Ok(None),
    };
    let weights = parts.weights.try_as_plain_ram()?;
    // OIHW flattened is `[Co, Ci·kh·kw]` in the panel's row order.
    let packed = pack_pointwise_weights(weights.as_slice::<f32>()?, co, ci * kh * kw);
    let op = Pointwise {
        x_batch: parts.batch,
        x_channels_last: parts.channels_last,
        y_batch: parts.batch,
        y_channels_last: parts.channels_last,
        ci,
        co,
        hw: parts.output,
        residual: false,
        lo: f32::NEG_INFINITY.to_bits(),
        hi: f32::INFINITY.to_bits(),
        prelu: false,
        window: Some(Window { input: parts.input, kernel: parts.kernel, stride: parts.stride, pad: parts.pad }),
    };
    Ok(Some((op, Tensor::from_shape(&[packed.len()], &packed)?, Tensor::from_shape(&[co], &bias_values)?)))
}

/// Whether this CPU runs [`Pointwise`]'s kernel. Only x86_64 has one: on the boards' ARM cores
/// tract's own NEON matrix kernels stay.
pub fn pointwise_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// What `substitute_pointwise` wires for one replacement: the activation inputs (the conv's
/// input, then the residual if one is fused), the packed weights and the per-channel bias.
struct PointwiseWires {
    activations: TVec<OutletId>,
    packed: Tensor,
    bias: Tensor,
    alpha: Option<Tensor>,
}

/// The uniform f32 value of a constant wire, if it is one.
fn uniform_const(model: &TypedModel, outlet: OutletId) -> Option<f32> {
    let k = model.outlet_fact(outlet).ok()?.konst.clone()?;
    if k.datum_type() != f32::datum_type() {
        return None;
    }
    let view = k.try_as_plain_ram().ok()?;
    let values = view.as_slice::<f32>().ok()?;
    let first = *values.first()?;
    values.iter().all(|v| v.to_bits() == first.to_bits()).then_some(first)
}

/// A constant holding one value per channel (`channels` of them on the axis `from_end` places
/// from the last, every other axis 1), or one value for all: the per-channel values.
fn per_channel(model: &TypedModel, outlet: OutletId, channels: usize, from_end: usize) -> Option<Vec<f32>> {
    let k = model.outlet_fact(outlet).ok()?.konst.clone()?;
    if k.datum_type() != f32::datum_type() {
        return None;
    }
    let view = k.try_as_plain_ram().ok()?;
    let values = view.as_slice::<f32>().ok()?;
    let shape = k.shape();
    if values.len() == 1 {
        return Some(vec![values[0]; channels]);
    }
    let axis = shape.len().checked_sub(from_end)?;
    (values.len() == channels && shape[axis] == channels).then(|| values.to_vec())
}

/// A PReLU as the TensorFlow exports write it, on node `id`'s output `y`:
/// `y + alpha · min(y, 0)` as `Min(y, 0)`, `Mul(·, alpha)`, `Add(y, ·)`, where `y` feeds only
/// the `Min` and the `Add`, and `alpha` is a per-channel constant (channel axis `from_end`
/// places from the last). The three nodes and the per-channel `alpha`.
fn prelu_after(model: &TypedModel, id: usize, channels: usize, from_end: usize) -> Option<([usize; 3], Vec<f32>)> {
    use tract_core::ops::binary::TypedBinOp;
    use tract_core::ops::math::{Add, Min, Mul};
    let node = model.node(id);
    if node.outputs.len() != 1 || model.output_outlets().ok()?.iter().any(|o| o.node == id) {
        return None;
    }
    let succ = &node.outputs[0].successors;
    if succ.len() != 2 {
        return None;
    }
    let is = |n: usize, f: fn(&TypedBinOp) -> bool| model.node(n).op_as::<TypedBinOp>().is_some_and(f);
    let (min, add) = if is(succ[0].node, |b| b.0.is::<Min>()) { (succ[0], succ[1]) } else { (succ[1], succ[0]) };
    if !is(min.node, |b| b.0.is::<Min>()) || !is(add.node, |b| b.0.is::<Add>()) {
        return None;
    }
    if uniform_const(model, model.node(min.node).inputs[1 - min.slot]) != Some(0.0) {
        return None;
    }
    let (mul, mul_slot) = sole_successor(model, min.node)?;
    if !is(mul, |b| b.0.is::<Mul>()) {
        return None;
    }
    let alpha = per_channel(model, model.node(mul).inputs[1 - mul_slot], channels, from_end)?;
    let (after_mul, _) = sole_successor(model, mul)?;
    let shape = &model.outlet_fact(OutletId::new(id, 0)).ok()?.shape;
    (after_mul == add.node && &model.outlet_fact(OutletId::new(add.node, 0)).ok()?.shape == shape)
        .then_some(([min.node, mul, add.node], alpha))
}

/// The node's only successor, when its single output feeds exactly one input and is not a
/// model output.
fn sole_successor(model: &TypedModel, id: usize) -> Option<(usize, usize)> {
    let node = model.node(id);
    if node.outputs.len() != 1 || model.output_outlets().ok()?.iter().any(|o| o.node == id) {
        return None;
    }
    match &node.outputs[0].successors[..] {
        [only] => Some((only.node, only.slot)),
        _ => None,
    }
}

/// If node `id` is a 1×1 convolution that [`Pointwise`] computes (an f32 `EinSum` of a
/// `[Ci, H, W]` activation with a constant `[Co, Ci]` weight matrix, or `[Ci]` vector for one
/// channel, into `[Co, H, W]`, at least
/// `MIN_POINTWISE_PIXELS` pixels), the op, the nodes fused after it (bias `Add`, then a residual
/// `Add`, then an activation: `activation_after`) and what to wire.
fn pointwise_chain(model: &TypedModel, id: usize) -> TractResult<Option<(Pointwise, Vec<usize>, PointwiseWires)>> {
    use tract_core::ops::binary::TypedBinOp;
    use tract_core::ops::einsum::EinSum;
    use tract_core::ops::math::Add;
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    if einsum.q_params.is_some() || einsum.operating_dt != f32::datum_type() || node.inputs.len() != 2 {
        return Ok(None);
    }
    // Which input is the constant weight matrix.
    let (w_slot, x_slot) = match (
        model.outlet_fact(node.inputs[0])?.konst.is_some(),
        model.outlet_fact(node.inputs[1])?.konst.is_some(),
    ) {
        (false, true) => (1, 0),
        (true, false) => (0, 1),
        _ => return Ok(None),
    };
    let x = model.outlet_fact(node.inputs[x_slot])?;
    let w = model.outlet_fact(node.inputs[w_slot])?;
    let y = model.outlet_fact(OutletId::new(id, 0))?;
    let (Some(xs), Some(ws), Some(ys)) = (x.shape.as_concrete(), w.shape.as_concrete(), y.shape.as_concrete()) else {
        return Ok(None);
    };
    // The layouts, read off the axes: x is [Ci, H, W] or [H, W, Ci] (channel-last models'
    // first layers), either with a batch axis of 1 in front, and y is [Co, H, W], or
    // [1, Co, H, W]. Then every axis must be where out[o, h, w] = Σ_i w[o, i] · x[i, h, w] has it.
    let axes: Vec<_> = einsum.axes.iter_all_axes().collect();
    // A single output channel's weights come as a vector `[Ci]` (`NIHW,I->NOHW`).
    let single = ws.len() == 1;
    if !(1..=2).contains(&ws.len()) || !(3..=4).contains(&xs.len()) || !(3..=4).contains(&ys.len()) {
        return Ok(None);
    }
    let (x_batch, y_batch) = (xs.len() == 4, ys.len() == 4);
    let (xb, yb) = (usize::from(x_batch), usize::from(y_batch));
    let w_k = usize::from(!single);
    let Some(k_axis) = axes.iter().find(|a| a.inputs.len() == 2 && a.inputs[w_slot][..] == [w_k]) else {
        return Ok(None);
    };
    let x_channels_last = k_axis.inputs[x_slot][..] == [xb + 2];
    let (xk, xh, xw) = if x_channels_last { (xb + 2, xb, xb + 1) } else { (xb, xb + 1, xb + 2) };
    let (ci, h, wd, co) = (xs[xk], xs[xh], xs[xw], if single { 1 } else { ws[0] });
    if x.datum_type != f32::datum_type()
        || w.datum_type != f32::datum_type()
        || ws[w_k] != ci
        || ys[yb..] != [co, h, wd]
        || (x_batch && xs[0] != 1)
        || (y_batch && ys[0] != 1)
        || h * wd < MIN_POINTWISE_PIXELS
    {
        return Ok(None);
    }
    let mut expected: Vec<(Vec<usize>, Vec<usize>, Vec<usize>)> = vec![
        (vec![xk], vec![w_k], vec![]),
        (vec![], if single { vec![] } else { vec![0] }, vec![yb]),
        (vec![xh], vec![], vec![yb + 1]),
        (vec![xw], vec![], vec![yb + 2]),
    ];
    if x_batch || y_batch {
        expected.push((if x_batch { vec![0] } else { vec![] }, vec![], if y_batch { vec![0] } else { vec![] }));
    }
    if axes.len() != expected.len()
        || !expected.iter().all(|(xa, wa, ya)| {
            axes.iter().any(|a| {
                a.inputs.len() == 2
                    && a.outputs.len() == 1
                    && a.inputs[x_slot][..] == xa[..]
                    && a.inputs[w_slot][..] == wa[..]
                    && a.outputs[0][..] == ya[..]
            })
        })
    {
        return Ok(None);
    }
    // The chain after it: a bias, then a residual, each the only consumer of the one before,
    // then an activation.
    let mut chain = Vec::new();
    let mut bias = vec![0f32; co];
    let mut residual: Option<OutletId> = None;
    let mut at = id;
    while let Some((next, slot)) = sole_successor(model, at) {
        let n = model.node(next);
        if !n.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Add>())
            || n.inputs.len() != 2
            || model.outlet_fact(OutletId::new(next, 0))?.shape.as_concrete() != Some(ys)
            || residual.is_some()
        {
            break;
        }
        let other = n.inputs[1 - slot];
        let other_fact = model.outlet_fact(other)?;
        if other_fact.konst.is_some() && chain.is_empty() {
            // A per-channel bias, [Co, 1, 1] (or [1, Co, 1, 1]), or one value.
            let Some(values) = per_channel(model, other, co, 3) else {
                break;
            };
            bias = values;
        } else if other_fact.konst.is_none()
            && other_fact.datum_type == f32::datum_type()
            && other_fact.shape.as_concrete() == Some(ys)
        {
            residual = Some(other);
        } else {
            break;
        }
        chain.push(next);
        at = next;
    }
    let Activation { chain: tail, clamp: [lo, hi], prelu: alpha } = activation_after(model, at, co, 3)?;
    chain.extend(tail);
    let weights = w.konst.clone().unwrap();
    let weights = weights.try_as_plain_ram()?;
    let packed = pack_pointwise_weights(weights.as_slice::<f32>()?, co, ci);
    let op = Pointwise {
        x_batch,
        x_channels_last,
        y_batch,
        y_channels_last: false,
        ci,
        co,
        hw: [h, wd],
        residual: residual.is_some(),
        lo: lo.to_bits(),
        hi: hi.to_bits(),
        prelu: alpha.is_some(),
        window: None,
    };
    let mut activations = tvec![node.inputs[x_slot]];
    activations.extend(residual);
    let wires = PointwiseWires {
        activations,
        packed: Tensor::from_shape(&[packed.len()], &packed)?,
        bias: Tensor::from_shape(&[co], &bias)?,
        alpha: alpha.map(|a| Tensor::from_shape(&[co], &a)).transpose()?,
    };
    Ok(Some((op, chain, wires)))
}

/// Below this many pixels (FaceRes' and MobileFaceNet's 7×7 layers) tract's own matrix
/// kernel was faster than ours (0.64 vs 0.91 ms for 1024→1024 at 7×7): our blocks of 16 or
/// 32 pixels waste a third of their work on 49.
const MIN_POINTWISE_PIXELS: usize = 64;

/// Output channels per block of the pointwise kernel.
const POINTWISE_ROWS: usize = 6;

/// Bytes of input the pointwise kernels copy into one panel: `ci` rows of up to
/// `MAX_PANEL_PIXELS` pixels, sized to stay in L2 while every block of output channels runs
/// over it. Wide panels write each output row in long runs; one panel of 16 or 32 pixels wrote
/// 96 rows 300 KB apart at a time (16→96 at 240×320), which all fall in the same L1 sets, and
/// ran at a third of the speed.
#[cfg(target_arch = "x86_64")]
const PANEL_BYTES: usize = 96 * 1024;
#[cfg(target_arch = "x86_64")]
const MAX_PANEL_PIXELS: usize = 512;

/// Pixels per panel for `ci` input channels and blocks of `nr` pixels: a multiple of `nr`.
#[cfg(target_arch = "x86_64")]
fn panel_pixels(ci: usize, nr: usize) -> usize {
    (PANEL_BYTES / (4 * ci.max(1)) / nr).clamp(1, MAX_PANEL_PIXELS / nr) * nr
}

/// `[Co, Ci]` weights as `⌈Co/6⌉` blocks of `[Ci, 6]`, rows past `Co` zero: the kernel reads
/// one block's six weights for an input channel as one contiguous run.
fn pack_pointwise_weights(w: &[f32], co: usize, ci: usize) -> Vec<f32> {
    let blocks = co.div_ceil(POINTWISE_ROWS);
    let mut packed = vec![0f32; blocks * ci * POINTWISE_ROWS];
    for o in 0..co {
        let (b, r) = (o / POINTWISE_ROWS, o % POINTWISE_ROWS);
        for i in 0..ci {
            packed[(b * ci + i) * POINTWISE_ROWS + r] = w[o * ci + i];
        }
    }
    packed
}

/// 1×1 convolution over a `[Ci, H, W]` f32 activation, with its bias, an optional residual
/// `[Co, H, W]` added, and a clamp to `[lo, hi]` (f32 bits, so the op is `Eq`; ±∞ when the
/// graph had none): `out = clamp(Σ_i w[o, i] · x[i] + bias[o] + residual[o])`. Inputs: the
/// activation, the weights packed by `pack_pointwise_weights`, the `[Co]` bias, the residual.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pointwise {
    /// The input has a batch axis of 1 in front.
    pub x_batch: bool,
    /// The input is `[H, W, Ci]` rather than `[Ci, H, W]`.
    pub x_channels_last: bool,
    /// The output is `[1, Co, H, W]` rather than `[Co, H, W]`.
    pub y_batch: bool,
    /// The output is `[H, W, Co]` rather than `[Co, H, W]`: a channel-last k×k convolution's
    /// (the batch axis still in front when `y_batch`).
    pub y_channels_last: bool,
    pub ci: usize,
    pub co: usize,
    pub hw: [usize; 2],
    pub residual: bool,
    pub lo: u32,
    pub hi: u32,
    /// A PReLU follows (`y + alpha[o] · min(y, 0)`; alpha the last input, one per channel).
    pub prelu: bool,
    /// A k×k convolution rather than 1×1: each output pixel reads this window of a
    /// `[Ci, window.input]` input (`hw` is then the output's size), through the same kernel
    /// over an im2col panel of `Ci·kh·kw` rows.
    pub window: Option<Window>,
}

/// The window of a [`Pointwise`] that is a k×k convolution (channel-first input, one group).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Window {
    pub input: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Zero padding before the first row and column.
    pub pad: [usize; 2],
}

impl Pointwise {
    /// The sum's length: input channels times window taps.
    fn depth(&self) -> usize {
        self.ci * self.window.as_ref().map_or(1, |w| w.kernel[0] * w.kernel[1])
    }

    /// Activation, packed weights, bias, then the residual and the PReLU's alpha if any.
    fn input_count(&self) -> usize {
        3 + usize::from(self.residual) + usize::from(self.prelu)
    }

    fn input_shape(&self) -> TVec<usize> {
        let [h, w] = self.window.as_ref().map_or(self.hw, |win| win.input);
        let mut shape = if self.x_channels_last { tvec![h, w, self.ci] } else { tvec![self.ci, h, w] };
        if self.x_batch {
            shape.insert(0, 1);
        }
        shape
    }

    fn output_shape(&self) -> TVec<usize> {
        let [h, w] = self.hw;
        let mut shape = if self.y_channels_last { tvec![h, w, self.co] } else { tvec![self.co, h, w] };
        if self.y_batch {
            shape.insert(0, 1);
        }
        shape
    }
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        if self.window.is_some() { "FacegateConv" } else { "FacegatePointwise" }.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} ch {:?}{}{}{} clamp [{}, {}]",
            self.ci,
            self.co,
            self.hw,
            self.window.as_ref().map_or(String::new(), |w| format!(
                " kernel {:?} stride {:?} pad {:?} from {:?}",
                w.kernel, w.stride, w.pad, w.input
            )),
            if self.residual { " + residual" } else { "" },
            if self.prelu { " prelu" } else { "" },
            f32::from_bits(self.lo),
            f32::from_bits(self.hi)
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Pointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == self.input_count());
        let [h, w] = self.hw;
        ensure!(inputs[0].shape() == &*self.input_shape(), "pointwise input is {:?}", inputs[0].shape());
        let views: TVec<_> = inputs.iter().map(|t| t.try_as_plain_ram()).collect::<TractResult<_>>()?;
        let x = views[0].as_slice::<f32>()?;
        let packed = views[1].as_slice::<f32>()?;
        let bias = views[2].as_slice::<f32>()?;
        let residual = if self.residual { Some(views[3].as_slice::<f32>()?) } else { None };
        ensure!(packed.len() == self.co.div_ceil(POINTWISE_ROWS) * self.depth() * POINTWISE_ROWS);
        ensure!(bias.len() == self.co);
        ensure!(residual.is_none_or(|r| r.len() == self.co * h * w));
        // SAFETY: f32 has no invalid bit patterns, and the kernel writes every output element.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&self.output_shape())? };
        let mut view = out.try_as_plain_ram_mut()?;
        let out_values = view.as_slice_mut::<f32>()?;
        pointwise(self, x, packed, bias, residual, out_values)?;
        if self.prelu {
            let alpha = views[views.len() - 1].as_slice::<f32>()?;
            ensure!(alpha.len() == self.co);
            prelu(out_values, alpha, self.y_channels_last);
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Pointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == self.input_count());
        Ok(tvec!(f32::fact(self.output_shape())))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((Cost::FMA(f32::datum_type()), (self.depth() * self.co * self.hw[0] * self.hw[1]).to_dim())))
    }

    as_op!();
}

/// Runs `op` into `out` (`[Co, H·W]`, any content).
fn pointwise(
    op: &Pointwise,
    x: &[f32],
    packed: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
) -> TractResult<()> {
    let p = op.hw[0] * op.hw[1];
    let x = window_input(op, x);
    let panel = &mut Vec::new();
    pointwise_span(op, &x, Planes::whole(p), packed, bias, residual, out, Planes::whole(p), 0..p, panel)
}

/// The input as the kernels read it: a window's as channel-first planes (a channel-last one,
/// FaceRes' and MobileFaceNet's first layers, transposed once, so each tap is a run rather
/// than `Ci` values per pixel) with each row's columns split by phase (`split_columns`);
/// anything else as it is.
pub(crate) fn window_input<'a>(op: &Pointwise, x: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
    #[cfg(target_arch = "x86_64")]
    if let Some(w) = &op.window {
        if !op.x_channels_last {
            return split_columns(x, w.input[1], w.stride[1]);
        }
        let (ci, plane) = (op.ci, w.input[0] * w.input[1]);
        let mut planes = vec![0f32; ci * plane];
        for (at, pixel) in x.chunks_exact(ci).enumerate().take(plane) {
            for (c, &v) in pixel.iter().enumerate() {
                planes[c * plane + at] = v;
            }
        }
        return std::borrow::Cow::Owned(split_columns(&planes, w.input[1], w.stride[1]).into_owned());
    }
    let _ = op;
    std::borrow::Cow::Borrowed(x)
}

/// Where a buffer of `[C, pixels]` planes holds channel `c`, pixel `q` (numbered over the op's
/// whole output plane): at `c · stride + q − first`. A whole tensor is `Planes::whole`; a fused
/// block's row buffers hold a few rows from a later pixel on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Planes {
    pub stride: usize,
    pub first: usize,
}

impl Planes {
    pub(crate) fn whole(pixels: usize) -> Planes {
        Planes { stride: pixels, first: 0 }
    }

    /// One past the last element pixels `..end` of `channels` channels reach.
    #[cfg(target_arch = "x86_64")]
    fn extent(&self, channels: usize, end: usize) -> usize {
        (channels - 1) * self.stride + end - self.first
    }
}

/// Output pixels `span` of `op`: read from `x` laid out as `xl` (a window's input already
/// through `window_input`, and whole), written to `out` laid out as `ol` (channel-last
/// output: pixel `q` at `(q − ol.first) · co`), the residual read as `out` is laid out. `panel`
/// is the kernels' scratch, grown as needed: a caller running many spans passes the same one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pointwise_span(
    op: &Pointwise,
    x: &[f32],
    xl: Planes,
    packed: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
    ol: Planes,
    span: std::ops::Range<usize>,
    panel: &mut Vec<f32>,
) -> TractResult<()> {
    #[cfg(target_arch = "x86_64")]
    if pointwise_kernel_available() {
        let (ci, co, p) = (op.ci, op.co, op.hw[0] * op.hw[1]);
        ensure!(span.start <= span.end && span.end <= p, "pixels {span:?} of {p}");
        if span.is_empty() {
            return Ok(());
        }
        // What the kernels index by, checked here once.
        ensure!(span.start >= xl.first && span.start >= ol.first);
        let x_needs = match &op.window {
            Some(w) => {
                ensure!(xl == Planes::whole(p), "a window reads its whole input");
                ci * w.input[0] * w.input[1].div_ceil(w.stride[1]) * w.stride[1]
            }
            None if op.x_channels_last => (span.end - xl.first) * ci,
            None => xl.extent(ci, span.end),
        };
        let out_needs = if op.y_channels_last { (span.end - ol.first) * co } else { ol.extent(co, span.end) };
        ensure!(x.len() >= x_needs && out.len() >= out_needs && residual.is_none_or(|r| r.len() >= out_needs));
        ensure!(packed.len() == co.div_ceil(POINTWISE_ROWS) * op.depth() * POINTWISE_ROWS && bias.len() == co);
        // SAFETY: the CPU was just checked for the features each kernel enables, and the
        // slices' lengths against what the kernels index.
        if std::arch::is_x86_feature_detected!("avx512f") {
            unsafe { pointwise_avx512(op, x, xl, packed, bias, residual, out, ol, span, panel) };
        } else {
            unsafe { pointwise_avx2(op, x, xl, packed, bias, residual, out, ol, span, panel) };
        }
        return Ok(());
    }
    let _ = (op, x, xl, packed, bias, residual, out, ol, span, panel);
    bail!("FacegatePointwise needs AVX2 and FMA; it is only substituted where they are")
}

/// The AVX2 kernel: blocks of 6 output channels × 16 pixels in twelve accumulators, one pass
/// over the input channels each, read from a contiguous copy of those pixels (the last block
/// zero-padded); the bias starts the sums, the residual and the clamp are applied on the way
/// out.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn pointwise_avx2(
    op: &Pointwise,
    x: &[f32],
    xl: Planes,
    packed: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
    ol: Planes,
    span: std::ops::Range<usize>,
    panel: &mut Vec<f32>,
) {
    use std::arch::x86_64::*;
    const MR: usize = POINTWISE_ROWS;
    const NR: usize = 16;
    // `ci` is the sum's length: the panel's rows (input channels times window taps).
    let (ci, co) = (op.depth(), op.co);
    let p = span.end;
    let (lo, hi) = (f32::from_bits(op.lo), f32::from_bits(op.hi));
    let clamp = lo != f32::NEG_INFINITY || hi != f32::INFINITY;
    // SAFETY (whole body): `fill_panel` reads `x` by safe indexing; `packed` is
    // `⌈co/6⌉ × ci × 6`, `bias` is `[co]`, `out` and `residual` hold pixels `span` of `co`
    // channels as `ol` says (`pointwise_span` checked); every pointer below stays inside those.
    unsafe {
        let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        // One block of 16 pixels of every input channel, contiguous: read from `x` once (a
        // strided walk over `ci` rows) and then by every block of output channels.
        // The last, partial block is zero-padded in the panel and stored through `tail`.
        let nc = panel_pixels(ci, NR);
        if panel.len() < ci * nc {
            panel.resize(ci * nc, 0.0);
        }
        let mut tail = [0f32; NR];
        let mut c0 = span.start;
        while c0 < p {
            let subs = nc.min(p - c0).div_ceil(NR);
            match &op.window {
                // A window's im2col, tap by tap over the whole panel.
                Some(window) => fill_window::<NR>(op, window, x, panel, c0, nc.min(p - c0)),
                None => {
                    for (s, sub) in panel.chunks_exact_mut(ci * NR).take(subs).enumerate() {
                        let p0 = c0 + s * NR;
                        fill_panel::<NR>(op, x, xl, sub, p0, NR.min(p - p0));
                    }
                }
            }
            for block in 0..co.div_ceil(MR) {
                let rows = MR.min(co - block * MR);
                for s in 0..subs {
                    let (p0, xs) = (c0 + s * NR, panel.as_ptr().add(s * ci * NR));
                    let cols = NR.min(p - p0);
                    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
                    for (r, a) in acc.iter_mut().enumerate().take(rows) {
                        *a = [_mm256_set1_ps(bias[block * MR + r]); 2];
                    }
                    let mut xp = xs;
                    let mut wp = packed.as_ptr().add(block * ci * MR);
                    for _ in 0..ci {
                        let x0 = _mm256_loadu_ps(xp);
                        let x1 = _mm256_loadu_ps(xp.add(8));
                        for r in 0..MR {
                            let wv = _mm256_broadcast_ss(&*wp.add(r));
                            acc[r][0] = _mm256_fmadd_ps(wv, x0, acc[r][0]);
                            acc[r][1] = _mm256_fmadd_ps(wv, x1, acc[r][1]);
                        }
                        xp = xp.add(NR);
                        wp = wp.add(MR);
                    }
                    if op.y_channels_last {
                        // `[P, Co]`: pixel by pixel, through a tile.
                        let mut tile = [[0f32; NR]; MR];
                        for (t, a) in tile.iter_mut().zip(&acc) {
                            let (mut v0, mut v1) = (a[0], a[1]);
                            if clamp {
                                v0 = _mm256_min_ps(_mm256_max_ps(v0, vlo), vhi);
                                v1 = _mm256_min_ps(_mm256_max_ps(v1, vlo), vhi);
                            }
                            _mm256_storeu_ps(t.as_mut_ptr(), v0);
                            _mm256_storeu_ps(t.as_mut_ptr().add(8), v1);
                        }
                        for j in 0..cols {
                            let pixel = &mut out[(p0 - ol.first + j) * co + block * MR..][..rows];
                            for (r, o) in pixel.iter_mut().enumerate() {
                                *o = tile[r][j];
                            }
                        }
                        continue;
                    }
                    for r in 0..rows {
                        let row = (block * MR + r) * ol.stride + p0 - ol.first;
                        if cols == NR {
                            for half in 0..2 {
                                let mut v = acc[r][half];
                                if let Some(res) = residual {
                                    v = _mm256_add_ps(v, _mm256_loadu_ps(res.as_ptr().add(row + 8 * half)));
                                }
                                if clamp {
                                    v = _mm256_min_ps(_mm256_max_ps(v, vlo), vhi);
                                }
                                _mm256_storeu_ps(out.as_mut_ptr().add(row + 8 * half), v);
                            }
                        } else {
                            _mm256_storeu_ps(tail.as_mut_ptr(), acc[r][0]);
                            _mm256_storeu_ps(tail.as_mut_ptr().add(8), acc[r][1]);
                            store_partial(
                                &tail[..cols],
                                &mut out[row..row + cols],
                                residual.map(|r| &r[row..row + cols]),
                                op,
                            );
                        }
                    }
                }
            }
            c0 += subs * NR;
        }
    }
}

/// Copies pixels `p0..p0 + cols` of every input channel into `panel` (`ci` rows of `NR`), the
/// pixels contiguous; past `cols` the panel keeps what it held, which only feeds outputs that
/// are not stored. A channel-last input (`[P, Ci]`) is transposed on the way. (A windowed op's
/// panel is its im2col, `fill_window`.)
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn fill_panel<const NR: usize>(op: &Pointwise, x: &[f32], xl: Planes, panel: &mut [f32], p0: usize, cols: usize) {
    let ci = op.ci;
    if op.x_channels_last {
        let q0 = p0 - xl.first;
        for (j, pixel) in x[q0 * ci..(q0 + cols) * ci].chunks_exact(ci).enumerate() {
            for (i, &v) in pixel.iter().enumerate() {
                panel[i * NR + j] = v;
            }
        }
    } else {
        for (i, row) in panel.chunks_exact_mut(NR).enumerate() {
            if cols == NR {
                // A fixed-size copy, compiled to a few vector moves rather than a call.
                let row: &mut [f32; NR] = row.try_into().expect("panel rows are NR long");
                *row = x[i * xl.stride + p0 - xl.first..][..NR].try_into().expect("NR pixels");
            } else {
                row[..cols].copy_from_slice(&x[i * xl.stride + p0 - xl.first..][..cols]);
            }
        }
    }
}

/// The im2col panel of output pixels `p0..p0 + cols` of a windowed op, as blocks of `NR`
/// pixels (`depth` rows of `NR` each, one after the other): row `(c·kh + ky)·kw + kx` (the OIHW
/// weights' order) holds, for each pixel `(oy, ox)`, input `x[c, oy·sy + ky − pt, ox·sx + kx −
/// pl]`, zero outside the input. `x` comes through `window_input`: channel-first, each row's
/// columns split by phase, so every tap's run is a contiguous copy at any stride. Tap by tap over
/// all the blocks, so each input row is read in one sweep.
#[cfg(target_arch = "x86_64")]
fn fill_window<const NR: usize>(op: &Pointwise, window: &Window, x: &[f32], panel: &mut [f32], p0: usize, cols: usize) {
    let Window { input: [h, w], kernel: [kh, kw], stride: [sy, sx], pad: [pt, pl] } = *window;
    let (ow, wp, depth) = (op.hw[1], w.div_ceil(sx), op.depth());
    for c in 0..op.ci {
        for ky in 0..kh {
            for kx in 0..kw {
                let tap = (c * kh + ky) * kw + kx;
                // Column (ox0 + t)·sx + kx − pl is element ox0 + t + shift of phase `r`, which
                // holds `len` columns.
                let d = kx as isize - pl as isize;
                let (r, shift) = (d.rem_euclid(sx as isize) as usize, d.div_euclid(sx as isize));
                let len = w.saturating_sub(r).div_ceil(sx) as isize;
                // Output pixels a run at a time, each run within one output row and one block.
                let mut j = 0;
                while j < cols {
                    let (oy, ox0) = ((p0 + j) / ow, (p0 + j) % ow);
                    let n = (ow - ox0).min(cols - j).min(NR - j % NR);
                    let row = &mut panel[(j / NR * depth + tap) * NR + j % NR..][..n];
                    j += n;
                    let Some(iy) = (oy * sy + ky).checked_sub(pt).filter(|&iy| iy < h) else {
                        row.fill(0.0);
                        continue;
                    };
                    let phase = &x[(c * h + iy) * sx * wp + r * wp..][..wp];
                    let at = ox0 as isize + shift;
                    let first = (-at).clamp(0, n as isize) as usize;
                    let last = (len - at).clamp(first as isize, n as isize) as usize;
                    let start = (at + first as isize) as usize;
                    if last - first == NR {
                        // A whole block inside the row: a fixed-size copy, a few vector moves
                        // rather than a call.
                        let row: &mut [f32; NR] = row.try_into().expect("NR pixels");
                        *row = phase[start..][..NR].try_into().expect("NR pixels");
                        continue;
                    }
                    row[..first].fill(0.0);
                    row[last..].fill(0.0);
                    if first < last {
                        row[first..last].copy_from_slice(&phase[start..][..last - first]);
                    }
                }
            }
        }
    }
}

/// `rows` rows of `w` values with each row's columns split by phase for a stride of `s`: row
/// `i` becomes `s` runs of `⌈w/s⌉`, run `r` holding columns `r, r + s, …` (zero-padded). With
/// `s` = 1 that is `x` itself.
#[cfg(target_arch = "x86_64")]
fn split_columns(x: &[f32], w: usize, s: usize) -> std::borrow::Cow<'_, [f32]> {
    if s == 1 {
        return std::borrow::Cow::Borrowed(x);
    }
    let wp = w.div_ceil(s);
    let mut out = vec![0f32; x.len() / w * s * wp];
    for (line, split) in x.chunks_exact(w).zip(out.chunks_exact_mut(s * wp)) {
        if s == 2 {
            let (even, odd) = split.split_at_mut(wp);
            split_by_parity(line, even, odd);
        } else {
            for (i, &v) in line.iter().enumerate() {
                split[(i % s) * wp + i / s] = v;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The last, partial block's sums (`tail`) into `out`, with the residual and the clamp.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn store_partial(tail: &[f32], out: &mut [f32], residual: Option<&[f32]>, op: &Pointwise) {
    for (c, (o, &t)) in out.iter_mut().zip(tail).enumerate() {
        *o = t + residual.map_or(0.0, |r| r[c]);
    }
    clamp_plane(out, op.lo, op.hi);
}

/// The AVX-512 form of `pointwise_avx2`: blocks of 12 output channels × 32 pixels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn pointwise_avx512(
    op: &Pointwise,
    x: &[f32],
    xl: Planes,
    packed: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
    ol: Planes,
    span: std::ops::Range<usize>,
    panel: &mut Vec<f32>,
) {
    const MR: usize = POINTWISE_ROWS;
    const NR: usize = 32;
    let (ci, co) = (op.depth(), op.co);
    let p = span.end;
    // SAFETY (whole body): as in `pointwise_avx2`; each block's store covers rows
    // `block·6 .. block·6 + rows` and pixels `p0 .. p0 + cols` of `out` and `residual`.
    unsafe {
        let nc = panel_pixels(ci, NR);
        if panel.len() < ci * nc {
            panel.resize(ci * nc, 0.0);
        }
        let mut tile = if op.y_channels_last { vec![0f32; 2 * MR * NR] } else { Vec::new() };
        let mut c0 = span.start;
        while c0 < p {
            let subs = nc.min(p - c0).div_ceil(NR);
            match &op.window {
                // A window's im2col, tap by tap over the whole panel.
                Some(window) => fill_window::<NR>(op, window, x, panel, c0, nc.min(p - c0)),
                None => {
                    for (s, sub) in panel.chunks_exact_mut(ci * NR).take(subs).enumerate() {
                        let p0 = c0 + s * NR;
                        fill_panel::<NR>(op, x, xl, sub, p0, NR.min(p - p0));
                    }
                }
            }
            // Twelve output channels (two packed blocks) at a time, a last six or fewer alone;
            // each runs over every block of pixels of the panel.
            let blocks = co.div_ceil(MR);
            let mut block = 0;
            while block < blocks {
                let rows = (2 * MR).min(co - block * MR);
                let mut b = [0f32; 2 * MR];
                b[..rows].copy_from_slice(&bias[block * MR..block * MR + rows]);
                let w0 = packed.as_ptr().add(block * ci * MR);
                for s in 0..subs {
                    let p0 = c0 + s * NR;
                    // Channel-first `[Co, P]` straight from the registers; channel-last `[P, Co]`
                    // (no residual there) through a tile of `rows` × 32, then pixel by pixel.
                    let at = block * MR * ol.stride + p0 - ol.first;
                    let to = Store512 {
                        out: if op.y_channels_last { tile.as_mut_ptr() } else { out.as_mut_ptr().add(at) },
                        residual: residual.map_or(std::ptr::null(), |r| r.as_ptr().add(at)),
                        stride: if op.y_channels_last { NR } else { ol.stride },
                        rows,
                        cols: NR.min(p - p0),
                        lo: op.lo,
                        hi: op.hi,
                    };
                    let xs = panel.as_ptr().add(s * ci * NR);
                    // A last block of 16 pixels or fewer sums only the panel's first half.
                    let w1 = if rows > MR { w0.add(ci * MR) } else { w0 };
                    match (rows > MR, to.cols > 16) {
                        (true, true) => pw512_block::<{ 2 * MR }, 2>(xs, w0, w1, ci, &b, &to),
                        (true, false) => pw512_block::<{ 2 * MR }, 1>(xs, w0, w1, ci, &b, &to),
                        (false, true) => pw512_block::<MR, 2>(xs, w0, w1, ci, &b, &to),
                        (false, false) => pw512_block::<MR, 1>(xs, w0, w1, ci, &b, &to),
                    }
                    if op.y_channels_last {
                        for j in 0..to.cols {
                            let pixel = &mut out[(p0 - ol.first + j) * co + block * MR..][..rows];
                            for (r, o) in pixel.iter_mut().enumerate() {
                                *o = tile[r * NR + j];
                            }
                        }
                    }
                }
                block += if rows > MR { 2 } else { 1 };
            }
            c0 += subs * NR;
        }
    }
}

/// Where one block of the AVX-512 kernel goes: `rows` rows of `cols` (at most 32) pixels from
/// `out`, `stride` apart; the residual (null if none) at the same offsets; the clamp as f32
/// bits (±∞ for none).
#[cfg(target_arch = "x86_64")]
struct Store512 {
    out: *mut f32,
    residual: *const f32,
    stride: usize,
    rows: usize,
    cols: usize,
    lo: u32,
    hi: u32,
}

/// One block of the AVX-512 kernel: `R` output channels (6 or 12) × 32 pixels (`H` = 2; the
/// first 16 only with `H` = 1, for a last partial block) in `H·R` accumulators, summed over
/// the `k` panel rows (32 pixels each) from `bias`, the first six channels' weights from packed
/// block `w0`, the next six from `w1`; then stored by `to` straight from the registers, masked
/// for a last partial block of pixels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn pw512_block<const R: usize, const H: usize>(
    panel: *const f32,
    w0: *const f32,
    w1: *const f32,
    k: usize,
    bias: &[f32; 2 * POINTWISE_ROWS],
    to: &Store512,
) {
    use std::arch::x86_64::*;
    const MR: usize = POINTWISE_ROWS;
    // SAFETY: the caller's panel holds `k` rows of 32 and each weight block `k` rows of 6;
    // `to` names memory the caller owns for `rows` × `cols`.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for (r, a) in acc.iter_mut().enumerate() {
            *a = [_mm512_set1_ps(bias[r]); 2];
        }
        let (mut xp, mut wa, mut wb) = (panel, w0, w1);
        for _ in 0..k {
            let x0 = _mm512_loadu_ps(xp);
            let x1 = if H == 2 { _mm512_loadu_ps(xp.add(16)) } else { x0 };
            for r in 0..R {
                let wv = _mm512_set1_ps(if r < MR { *wa.add(r) } else { *wb.add(r - MR) });
                acc[r][0] = _mm512_fmadd_ps(wv, x0, acc[r][0]);
                if H == 2 {
                    acc[r][1] = _mm512_fmadd_ps(wv, x1, acc[r][1]);
                }
            }
            xp = xp.add(32);
            wa = wa.add(MR);
            wb = wb.add(MR);
        }
        let (lo, hi) = (f32::from_bits(to.lo), f32::from_bits(to.hi));
        let clamp = lo != f32::NEG_INFINITY || hi != f32::INFINITY;
        let (vlo, vhi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let mask = |from: usize| -> __mmask16 { ((1u32 << to.cols.saturating_sub(from).min(16)) - 1) as u16 };
        let masks = [mask(0), mask(16)];
        for (r, acc) in acc.iter().enumerate() {
            if r >= to.rows {
                break;
            }
            let (o, res) = (to.out.add(r * to.stride), to.residual.wrapping_add(r * to.stride));
            for (half, &a) in acc.iter().enumerate().take(H) {
                let mut v = a;
                if to.cols == 32 {
                    if !to.residual.is_null() {
                        v = _mm512_add_ps(v, _mm512_loadu_ps(res.add(16 * half)));
                    }
                    if clamp {
                        v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
                    }
                    _mm512_storeu_ps(o.add(16 * half), v);
                } else {
                    let m = masks[half];
                    if !to.residual.is_null() {
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, res.add(16 * half)));
                    }
                    if clamp {
                        v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
                    }
                    _mm512_mask_storeu_ps(o.add(16 * half), m, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Textbook depthwise convolution, one output point at a time.
    fn reference(op: &Depthwise, x: &[f32], kernel: &[f32], bias: &[f32]) -> Vec<f32> {
        let [h, w] = op.input;
        let [oh, ow] = op.output;
        let [kh, kw] = op.kernel;
        let mut out = vec![0f32; op.channels * oh * ow];
        for c in 0..op.channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = if bias.len() == 1 { bias[0] } else { bias[c] };
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * op.stride[0] + ky) as isize - op.pad[0] as isize;
                            let ix = (ox * op.stride[1] + kx) as isize - op.pad[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                s += kernel[(c * kh + ky) * kw + kx] * x[(c * h + iy as usize) * w + ix as usize];
                            }
                        }
                    }
                    out[(c * oh + oy) * ow + ox] = s.max(f32::from_bits(op.lo)).min(f32::from_bits(op.hi));
                }
            }
        }
        out
    }

    /// Deterministic test values in (−1, 1).
    pub(super) fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 * 0.7311 + seed).sin() * 1.7).fract()).collect()
    }

    /// A tract `Conv` on `x`: `i → o` channels, a `k × k` kernel (OIHW, `values(…, seed)`),
    /// `group`s, `stride`, `padding`, bias `values(o, seed + 0.5)`.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn wire_conv(
        model: &mut TypedModel,
        name: &str,
        x: OutletId,
        format: DataFormat,
        [i, o]: [usize; 2],
        k: usize,
        group: usize,
        stride: usize,
        padding: tract_core::ops::cnn::PaddingSpec,
        seed: f32,
    ) -> TractResult<OutletId> {
        use tract_core::ops::cnn::PoolSpec;
        let kernel = Tensor::from_shape(&[o, i / group, k, k], &values(o * i / group * k * k, seed))?;
        let kernel = model.add_const(format!("{name}.k"), kernel)?;
        let b = model.add_const(format!("{name}.b"), Tensor::from_shape(&[o], &values(o, seed + 0.5))?)?;
        let op = Conv {
            pool_spec: PoolSpec {
                data_format: format,
                kernel_shape: tvec![k, k],
                padding,
                dilations: None,
                strides: Some(tvec![stride, stride]),
                input_channels: i,
                output_channels: o,
            },
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        };
        Ok(model.wire_node(name, op, &[x, kernel, b])?[0])
    }

    #[test]
    fn split_by_parity_matches_the_portable_split() {
        for len in 0..70 {
            let row = values(len, len as f32);
            let (mut evens, mut odds) = (vec![f32::NAN; len.div_ceil(2)], vec![f32::NAN; len / 2]);
            split_by_parity(&row, &mut evens, &mut odds);
            let want_evens: Vec<f32> = row.iter().step_by(2).copied().collect();
            let want_odds: Vec<f32> = row.iter().skip(1).step_by(2).copied().collect();
            assert_eq!((evens, odds), (want_evens, want_odds), "length {len}");
        }
    }

    #[test]
    fn matches_reference_over_geometries() {
        // (channels, h, w, kh, kw, stride, pad, per-channel bias)
        let cases = [
            (3, 9, 9, 3, 3, [1, 1], [1, 1], true),
            (5, 8, 10, 3, 3, [2, 2], [1, 1], true),
            (4, 7, 11, 3, 3, [2, 2], [1, 1], false),
            (2, 6, 7, 3, 3, [2, 2], [0, 0], true),
            (2, 12, 13, 5, 5, [1, 2], [2, 2], true),
            (3, 5, 33, 3, 3, [1, 1], [0, 0], true),
            (1, 4, 4, 1, 1, [1, 2], [0, 0], true),
            (2, 16, 40, 7, 7, [2, 1], [3, 3], true),
            (4, 3, 2, 3, 3, [1, 1], [1, 1], true),
            (3, 16, 16, 3, 3, [1, 1], [1, 1], true),
            (2, 4, 3, 3, 3, [1, 1], [1, 1], false),
            (2, 2, 5, 3, 3, [1, 1], [1, 1], true),
            (3, 8, 12, 3, 3, [2, 2], [1, 1], true),
            (2, 2, 2, 3, 3, [2, 2], [1, 1], true),
            (2, 4, 2, 3, 3, [2, 2], [1, 1], false),
            (2, 6, 16, 3, 3, [2, 2], [1, 1], true),
            (3, 8, 12, 3, 3, [2, 2], [0, 0], true),
            (2, 2, 2, 3, 3, [2, 2], [0, 0], true),
            (2, 14, 14, 3, 3, [2, 2], [0, 0], false),
            // Channel counts that fill the channel-last path's blocks of 16, with a rest, and a
            // kernel wider than its list of taps (7×7).
            (32, 9, 10, 3, 3, [1, 1], [1, 1], true),
            (20, 7, 8, 3, 3, [2, 2], [1, 1], true),
            (17, 6, 9, 5, 5, [1, 1], [2, 2], false),
            (18, 10, 11, 9, 9, [1, 1], [4, 4], true),
        ];
        for (i, &(channels, h, w, kh, kw, stride, pad, per_channel)) in cases.iter().enumerate() {
            let mut output = [(h + 2 * pad[0] - kh) / stride[0] + 1, (w + 2 * pad[1] - kw) / stride[1] + 1];
            if pad == [0, 0] && stride == [2, 2] && h % 2 == 0 && w % 2 == 0 {
                // TensorFlow's SAME at stride 2: one padding row and column after only.
                output = [h / 2, w / 2];
            }
            let (lo, hi) = if i % 3 == 1 {
                (0.0, 6.0)
            } else if i % 3 == 2 {
                (0.0, f32::INFINITY)
            } else {
                (f32::NEG_INFINITY, f32::INFINITY)
            };
            let op = Depthwise {
                batch_axis: true,
                channels_last: false,
                channels,
                input: [h, w],
                output,
                kernel: [kh, kw],
                stride,
                pad,
                lo: f32::to_bits(lo),
                hi: f32::to_bits(hi),
                prelu: false,
            };
            let x = values(channels * h * w, i as f32);
            let kernel = values(channels * kh * kw, 10.0 + i as f32);
            let bias = values(if per_channel { channels } else { 1 }, 20.0);
            let want = reference(&op, &x, &kernel, &bias);
            let mut got = vec![f32::NAN; want.len()];
            run(&op, &x, &kernel, &bias, &mut got);
            let mut portable = vec![f32::NAN; want.len()];
            run_portable(&op, &x, &kernel, &bias, &mut portable);
            for (j, ((g, p), r)) in got.iter().zip(&portable).zip(&want).enumerate() {
                assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()), "case {i} point {j}: {g} vs {r}");
                assert_eq!(g, p, "case {i} point {j}: dispatched and portable code differ");
            }
            // The same convolution channels last: [C, H, W] -> [H, W, C] in and out.
            let to_last = |planes: &[f32], [h, w]: [usize; 2]| -> Vec<f32> {
                (0..h * w * channels).map(|k| planes[(k % channels) * h * w + k / channels]).collect()
            };
            let last = Depthwise { channels_last: true, ..op.clone() };
            let mut got = vec![f32::NAN; want.len()];
            run(&last, &to_last(&x, [h, w]), &kernel, &bias, &mut got);
            for (j, (g, r)) in got.iter().zip(&to_last(&want, output)).enumerate() {
                assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()), "case {i} channels last, point {j}: {g} vs {r}");
            }
        }
    }

    /// Textbook 1×1 convolution with the fused tail.
    #[cfg(target_arch = "x86_64")]
    fn pointwise_reference(op: &Pointwise, x: &[f32], w: &[f32], bias: &[f32], residual: Option<&[f32]>) -> Vec<f32> {
        let p = op.hw[0] * op.hw[1];
        let mut out = vec![0f32; op.co * p];
        for o in 0..op.co {
            for px in 0..p {
                let mut s = 0f64;
                for i in 0..op.ci {
                    s += w[o * op.ci + i] as f64 * x[i * p + px] as f64;
                }
                let mut v = s as f32 + bias[o] + residual.map_or(0.0, |r| r[o * p + px]);
                v = v.max(f32::from_bits(op.lo)).min(f32::from_bits(op.hi));
                out[o * p + px] = v;
            }
        }
        out
    }

    /// x86_64 only: elsewhere `FacegatePointwise` is never substituted.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn pointwise_matches_reference() {
        if !pointwise_kernel_available() {
            eprintln!("skipped: this CPU has no AVX2+FMA, so FacegatePointwise is never substituted");
            return;
        }
        // (ci, co, h, w, residual, clamp)
        let cases = [
            (16, 96, 4, 8, false, Some((0.0, f32::INFINITY))),
            (5, 13, 9, 10, true, Some((0.0, 6.0))),
            (32, 7, 3, 7, true, None),
            (3, 6, 1, 16, false, None),
            (24, 144, 6, 11, true, Some((0.0, 6.0))),
            (7, 20, 5, 13, false, None),
            (64, 1, 5, 5, false, Some((-1.0, 1.0))),
            // More pixels than one panel holds (512), the last panel partial.
            (16, 96, 24, 30, true, Some((0.0, f32::INFINITY))),
        ];
        for (n, &(ci, co, h, w, has_residual, clamp)) in cases.iter().enumerate() {
            let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
            let op = Pointwise {
                x_batch: false,
                x_channels_last: false,
                y_batch: false,
                y_channels_last: false,
                ci,
                co,
                hw: [h, w],
                residual: has_residual,
                lo: lo.to_bits(),
                hi: hi.to_bits(),
                prelu: false,
                window: None,
            };
            let x = values(ci * h * w, n as f32);
            let weights = values(co * ci, 30.0 + n as f32);
            let bias = values(co, 40.0);
            let residual = has_residual.then(|| values(co * h * w, 50.0));
            let want = pointwise_reference(&op, &x, &weights, &bias, residual.as_deref());
            let mut got = vec![f32::NAN; want.len()];
            let packed = pack_pointwise_weights(&weights, co, ci);
            pointwise(&op, &x, &packed, &bias, residual.as_deref(), &mut got).unwrap();
            // The AVX2 kernel too, where the dispatch above took the AVX-512 one.
            let mut avx2 = vec![f32::NAN; want.len()];
            // SAFETY: `pointwise_kernel_available` checked AVX2 and FMA; sizes as the op says.
            let (p, whole) = (h * w, Planes::whole(h * w));
            unsafe {
                pointwise_avx2(&op, &x, whole, &packed, &bias, residual.as_deref(), &mut avx2, whole, 0..p, &mut vec![])
            };
            // And the input channels last ([H, W, Ci]), through both kernels.
            let x_last: Vec<f32> = (0..p * ci).map(|k| x[(k % ci) * p + k / ci]).collect();
            let last = Pointwise { x_channels_last: true, ..op.clone() };
            let mut got_last = vec![f32::NAN; want.len()];
            pointwise(&last, &x_last, &packed, &bias, residual.as_deref(), &mut got_last).unwrap();
            let mut avx2_last = vec![f32::NAN; want.len()];
            // SAFETY: as above.
            unsafe {
                let avx2 = &mut avx2_last;
                pointwise_avx2(&last, &x_last, whole, &packed, &bias, residual.as_deref(), avx2, whole, 0..p, &mut vec![])
            };
            for (j, r) in want.iter().enumerate() {
                let tolerance = 1e-5 * (1.0 + r.abs()) * ci as f32;
                for (what, v) in [
                    ("", got[j]),
                    ("AVX2 ", avx2[j]),
                    ("channels last ", got_last[j]),
                    ("AVX2 channels last ", avx2_last[j]),
                ] {
                    assert!((v - r).abs() <= tolerance, "case {n} point {j}: {what}{v} vs {r}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    /// Textbook k×k convolution (float64 sums) of a windowed [`Pointwise`], with its clamp.
    fn window_reference(op: &Pointwise, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
        let Window { input: [h, wd], kernel: [kh, kw], stride: [sy, sx], pad: [pt, pl] } = op.window.clone().unwrap();
        let [oh, ow] = op.hw;
        let mut out = vec![0f32; op.co * oh * ow];
        for o in 0..op.co {
            for (oy, ox) in (0..oh).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                let mut s = 0f64;
                for (c, ky, kx) in
                    (0..op.ci).flat_map(|c| (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (c, ky, kx))))
                {
                    let (iy, ix) = ((oy * sy + ky) as isize - pt as isize, (ox * sx + kx) as isize - pl as isize);
                    if (0..h as isize).contains(&iy) && (0..wd as isize).contains(&ix) {
                        let (iy, ix) = (iy as usize, ix as usize);
                        let at = if op.x_channels_last { (iy * wd + ix) * op.ci + c } else { (c * h + iy) * wd + ix };
                        let v = x[at] as f64;
                        s += w[((o * op.ci + c) * kh + ky) * kw + kx] as f64 * v;
                    }
                }
                let v = (s as f32 + bias[o]).max(f32::from_bits(op.lo)).min(f32::from_bits(op.hi));
                let at = if op.y_channels_last { (oy * ow + ox) * op.co + o } else { (o * oh + oy) * ow + ox };
                out[at] = v;
            }
        }
        out
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn dense_conv_matches_reference_over_geometries() {
        if !pointwise_kernel_available() {
            eprintln!("skipped: this CPU has no AVX2+FMA, so the dense convolution is never substituted");
            return;
        }
        // (ci, co, input, kernel, stride, pad, clamp): CenterFace's first layer (3→32, 3×3
        // stride 2) and head (24→24, 3×3 stride 1) in small, odd and even sizes, wider and
        // asymmetric windows, stride 3, TF SAME (no padding before), outputs narrower than a
        // block of pixels and output channel counts off the blocks of 6 and 12.
        let cases: &[(usize, usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], Option<[f32; 2]>)] = &[
            (3, 32, [24, 40], [3, 3], [2, 2], [1, 1], Some([0.0, f32::INFINITY])),
            (3, 32, [23, 37], [3, 3], [2, 2], [1, 1], None),
            (3, 32, [24, 40], [3, 3], [2, 2], [0, 0], None),
            (24, 24, [12, 16], [3, 3], [1, 1], [1, 1], Some([0.0, 6.0])),
            (5, 7, [11, 9], [5, 5], [1, 1], [2, 2], None),
            (4, 13, [17, 35], [1, 3], [1, 2], [0, 1], None),
            (2, 3, [20, 22], [3, 3], [3, 3], [1, 1], Some([-0.5, 0.5])),
            (6, 18, [9, 70], [3, 3], [1, 1], [0, 0], None),
        ];
        // The same, channel-last in and out (FaceRes' and MobileFaceNet's first layers).
        let cases = cases.iter().map(|&c| (c, false)).chain(cases.iter().map(|&c| (c, true)));
        for ((ci, co, input, kernel, stride, pad, clamp), channels_last) in cases {
            let out_size = |i: usize| (input[i] + 2 * pad[i] - kernel[i]) / stride[i] + 1;
            let [lo, hi] = clamp.unwrap_or([f32::NEG_INFINITY, f32::INFINITY]);
            let op = Pointwise {
                x_batch: false,
                x_channels_last: channels_last,
                y_batch: false,
                y_channels_last: channels_last,
                ci,
                co,
                hw: [out_size(0), out_size(1)],
                residual: false,
                lo: lo.to_bits(),
                hi: hi.to_bits(),
                prelu: false,
                window: Some(Window { input, kernel, stride, pad }),
            };
            let x = values(ci * input[0] * input[1], 3.0);
            let w = values(co * op.depth(), 4.0);
            let bias = values(co, 5.0);
            let want = window_reference(&op, &x, &w, &bias);
            let packed = pack_pointwise_weights(&w, co, op.depth());
            let mut got = vec![f32::NAN; want.len()];
            pointwise(&op, &x, &packed, &bias, None, &mut got).unwrap();
            // SAFETY: `pointwise_kernel_available` checked AVX2 and FMA; sizes as the op says.
            let mut avx2 = vec![f32::NAN; want.len()];
            let split = window_input(&op, &x);
            let (p, whole) = (op.hw[0] * op.hw[1], Planes::whole(op.hw[0] * op.hw[1]));
            unsafe { pointwise_avx2(&op, &split, whole, &packed, &bias, None, &mut avx2, whole, 0..p, &mut vec![]) };
            for (i, ((&g, &a), &r)) in got.iter().zip(&avx2).zip(&want).enumerate() {
                let tol = 1e-5 * (1.0 + r.abs());
                assert!((g - r).abs() <= tol && (a - r).abs() <= tol, "{op:?} at {i}: {g} / avx2 {a} vs {r}");
            }
        }
    }

    #[test]
    fn dense_substitution_matches_tract() -> TractResult<()> {
        use tract_core::ops::cnn::{PaddingSpec, PoolSpec};
        use tract_core::ops::math;
        if !pointwise_kernel_available() {
            eprintln!("skipped: this CPU has no AVX2+FMA, so the dense convolution is never substituted");
            return Ok(());
        }
        // CenterFace's first layer (3×3 stride 2, explicit padding 1, ReLU) and a TF-SAME
        // stride-2 layer with ReLU6, one after the other; channel-first, then channel-last as
        // FaceRes' and MobileFaceNet's first layers are.
        for format in [DataFormat::NCHW, DataFormat::NHWC] {
            let (c, h, w) = (3, 30, 44);
            let shape = if format == DataFormat::NCHW { [1, c, h, w] } else { [1, h, w, c] };
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact(shape))?;
            let conv =
                |model: &mut TypedModel, name: &str, input: OutletId, ci: usize, co: usize, padding: PaddingSpec| {
                    let k = model.add_const(
                        format!("{name}.k"),
                        Tensor::from_shape(&[co, ci, 3, 3], &values(co * ci * 9, ci as f32))?,
                    )?;
                    let b = model.add_const(format!("{name}.b"), Tensor::from_shape(&[co], &values(co, 1.0))?)?;
                    let op = Conv {
                        pool_spec: PoolSpec {
                            data_format: format,
                            kernel_shape: tvec![3, 3],
                            padding,
                            dilations: None,
                            strides: Some(tvec![2, 2]),
                            input_channels: ci,
                            output_channels: co,
                        },
                        kernel_fmt: KernelFormat::OIHW,
                        group: 1,
                        q_params: None,
                    };
                    TractResult::Ok(model.wire_node(name, op, &[input, k, b])?[0])
                };
            let zero = model.add_const("zero", Tensor::from_shape(&[1, 1, 1, 1], &[0f32])?)?;
            let six = model.add_const("six", Tensor::from_shape(&[1, 1, 1, 1], &[6f32])?)?;
            let first =
                conv(&mut model, "first", x, c, 16, PaddingSpec::ExplicitOnnxPool(tvec![1, 1], tvec![1, 1], false))?;
            let first = model.wire_node("relu", math::max(), &[first, zero])?[0];
            let second = conv(&mut model, "second", first, 16, 8, PaddingSpec::SameUpper)?;
            let second = model.wire_node("relu6.max", math::max(), &[second, zero])?[0];
            let y = model.wire_node("relu6.min", math::min(), &[second, six])?[0];
            model.select_output_outlets(&[y])?;
            let input = Tensor::from_shape(&shape, &values(c * h * w, 7.0))?;
            let theirs = model.clone().into_runnable()?.run(tvec![input.clone().into_tvalue()])?;
            let ours = crate::model::optimize(model)?;
            let dense: Vec<_> =
                ours.nodes().iter().filter_map(|n| n.op_as::<Pointwise>()).filter(|p| p.window.is_some()).collect();
            assert_eq!(dense.len(), 2, "both 3x3 convolutions replaced ({format:?})");
            assert!(dense.iter().all(|p| p.y_channels_last == (format == DataFormat::NHWC)));
            assert!(!ours.nodes().iter().any(|n| ["Max", "Min"].contains(&&*n.op().name())), "activations fused");
            let ours = ours.into_runnable()?.run(tvec![input.into_tvalue()])?;
            let (theirs, ours) = (theirs[0].to_plain_array_view::<f32>()?, ours[0].to_plain_array_view::<f32>()?);
            assert_eq!(theirs.shape(), ours.shape());
            for (t, o) in theirs.iter().zip(ours.iter()) {
                assert!((t - o).abs() <= 1e-4 * (1.0 + t.abs()), "{format:?}: {o} vs tract's {t}");
            }
        }
        Ok(())
    }

    /// A 1×1 convolution with bias, a residual and a clamp to [0, 0.5] after it, as tract declutters it
    /// (`EinSum`, `Add`, `Add`, `Max`, `Min`): one `FacegatePointwise`, same outputs as tract.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn pointwise_substitution_fuses_the_tail_and_matches_tract() -> TractResult<()> {
        use tract_core::ops::cnn::{PaddingSpec, PoolSpec};
        use tract_core::ops::math;
        if !pointwise_kernel_available() {
            eprintln!("skipped: this CPU has no AVX2+FMA, so FacegatePointwise is never substituted");
            return Ok(());
        }
        let (c, h, w) = (8, 9, 12);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, c, h, w]))?;
        let conv = |model: &mut TypedModel, name: &str, input: OutletId, seed: f32| -> TractResult<OutletId> {
            let k = model.add_const(format!("{name}.k"), Tensor::from_shape(&[c, c, 1, 1], &values(c * c, seed))?)?;
            let b = model.add_const(format!("{name}.b"), Tensor::from_shape(&[c], &values(c, seed + 1.0))?)?;
            let op = Conv {
                pool_spec: PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: tvec![1, 1],
                    padding: PaddingSpec::Valid,
                    dilations: None,
                    strides: None,
                    input_channels: c,
                    output_channels: c,
                },
                kernel_fmt: KernelFormat::OIHW,
                group: 1,
                q_params: None,
            };
            Ok(model.wire_node(name, op, &[input, k, b])?[0])
        };
        let first = conv(&mut model, "first", x, 1.0)?;
        let second = conv(&mut model, "second", first, 2.0)?;
        let sum = model.wire_node("residual", math::add(), &[second, first])?[0];
        let zero = model.add_const("zero", Tensor::from_shape(&[1, 1, 1, 1], &[0f32])?)?;
        let cap = model.add_const("cap", Tensor::from_shape(&[1, 1, 1, 1], &[0.5f32])?)?;
        let relu = model.wire_node("relu", math::max(), &[sum, zero])?[0];
        let y = model.wire_node("relu6", math::min(), &[relu, cap])?[0];
        model.select_output_outlets(&[y])?;
        let input = Tensor::from_shape(&[1, c, h, w], &values(c * h * w, 5.0))?;
        let theirs = model.clone().into_runnable()?.run(tvec![input.clone().into_tvalue()])?;
        let ours = crate::model::optimize(model)?;
        let fused: Vec<_> = ours.nodes().iter().filter_map(|n| n.op_as::<Pointwise>()).collect();
        assert_eq!(fused.len(), 2, "both 1x1 convolutions replaced");
        assert!(fused.iter().any(|p| p.residual && f32::from_bits(p.lo) == 0.0 && f32::from_bits(p.hi) == 0.5));
        assert!(!ours.nodes().iter().any(|n| ["Max", "Min", "Add"].contains(&&*n.op().name())), "tail fused");
        let ours = ours.into_runnable()?.run(tvec![input.into_tvalue()])?;
        let (theirs, ours) = (theirs[0].to_plain_array_view::<f32>()?, ours[0].to_plain_array_view::<f32>()?);
        for (t, o) in theirs.iter().zip(ours.iter()) {
            assert!((t - o).abs() <= 1e-5 * (1.0 + t.abs()), "{o} vs tract's {t}");
        }
        Ok(())
    }

    /// A 1×1 convolution to one channel (CenterFace's heatmap), whose weights declutter turns
    /// into a vector (`NIHW,I->NOHW`): substituted, same outputs as tract.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn single_channel_pointwise_matches_tract() -> TractResult<()> {
        use tract_core::ops::cnn::PaddingSpec;
        if !pointwise_kernel_available() {
            eprintln!("skipped: this CPU has no AVX2+FMA, so FacegatePointwise is never substituted");
            return Ok(());
        }
        let (c, h, w) = (24, 11, 16);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, c, h, w]))?;
        let y = wire_conv(&mut model, "heatmap", x, DataFormat::NCHW, [c, 1], 1, 1, 1, PaddingSpec::Valid, 1.0)?;
        model.select_output_outlets(&[y])?;
        let input = Tensor::from_shape(&[1, c, h, w], &values(c * h * w, 5.0))?;
        let theirs = model.clone().into_runnable()?.run(tvec![input.clone().into_tvalue()])?;
        let ours = crate::model::optimize(model)?;
        assert!(ours.nodes().iter().any(|n| n.op_as::<Pointwise>().is_some_and(|p| p.co == 1)), "substituted");
        let ours = ours.into_runnable()?.run(tvec![input.into_tvalue()])?;
        let (theirs, ours) = (theirs[0].to_plain_array_view::<f32>()?, ours[0].to_plain_array_view::<f32>()?);
        assert_eq!(theirs.shape(), ours.shape());
        for (t, o) in theirs.iter().zip(ours.iter()) {
            assert!((t - o).abs() <= 1e-5 * (1.0 + t.abs()) * c as f32, "{o} vs tract's {t}");
        }
        Ok(())
    }

    /// A depthwise and a 1×1 convolution, each followed by a PReLU written as MobileFaceNet's
    /// export writes it (`y + alpha · min(y, 0)`): both folded, same outputs as tract.
    #[test]
    fn prelu_is_fused_into_both_kernels() -> TractResult<()> {
        use tract_core::ops::cnn::{PaddingSpec, PoolSpec};
        use tract_core::ops::math;
        let (c, h, w) = (6, 10, 14);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, c, h, w]))?;
        let prelu = |model: &mut TypedModel, name: &str, y: OutletId, seed: f32| -> TractResult<OutletId> {
            let zero = model.add_const(format!("{name}.zero"), Tensor::from_shape(&[1, 1, 1, 1], &[0f32])?)?;
            let alpha =
                model.add_const(format!("{name}.alpha"), Tensor::from_shape(&[1, c, 1, 1], &values(c, seed))?)?;
            let neg = model.wire_node(format!("{name}.neg"), math::min(), &[y, zero])?[0];
            let scaled = model.wire_node(format!("{name}.scaled"), math::mul(), &[neg, alpha])?[0];
            Ok(model.wire_node(format!("{name}.add"), math::add(), &[y, scaled])?[0])
        };
        let conv = |model: &mut TypedModel,
                    name: &str,
                    input: OutletId,
                    k: usize,
                    group: usize|
         -> TractResult<OutletId> {
            let kernel = Tensor::from_shape(&[c, c / group, k, k], &values(c * c / group * k * k, k as f32))?;
            let kernel = model.add_const(format!("{name}.k"), kernel)?;
            let b = model.add_const(format!("{name}.b"), Tensor::from_shape(&[c], &values(c, 2.0))?)?;
            let op = Conv {
                pool_spec: PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: tvec![k, k],
                    padding: if k == 3 { PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]) } else { PaddingSpec::Valid },
                    dilations: None,
                    strides: None,
                    input_channels: c,
                    output_channels: c,
                },
                kernel_fmt: KernelFormat::OIHW,
                group,
                q_params: None,
            };
            Ok(model.wire_node(name, op, &[input, kernel, b])?[0])
        };
        let y = conv(&mut model, "dw", x, 3, c)?;
        let y = prelu(&mut model, "dw.prelu", y, 7.0)?;
        let y = conv(&mut model, "pw", y, 1, 1)?;
        let y = prelu(&mut model, "pw.prelu", y, 8.0)?;
        model.select_output_outlets(&[y])?;
        let input = Tensor::from_shape(&[1, c, h, w], &values(c * h * w, 5.0))?;
        let theirs = model.clone().into_runnable()?.run(tvec![input.clone().into_tvalue()])?;
        let ours = crate::model::optimize(model)?;
        assert!(ours.nodes().iter().any(|n| n.op_as::<Depthwise>().is_some_and(|d| d.prelu)));
        if pointwise_kernel_available() {
            assert!(ours.nodes().iter().any(|n| n.op_as::<Pointwise>().is_some_and(|p| p.prelu)));
            let names: Vec<_> = ours.nodes().iter().map(|n| n.op().name()).collect();
            assert!(!names.iter().any(|n| ["Min", "Mul", "Add"].iter().any(|o| n.contains(o))), "not fused: {names:?}");
        }
        let ours = ours.into_runnable()?.run(tvec![input.into_tvalue()])?;
        let (theirs, ours) = (theirs[0].to_plain_array_view::<f32>()?, ours[0].to_plain_array_view::<f32>()?);
        for (t, o) in theirs.iter().zip(ours.iter()) {
            assert!((t - o).abs() <= 1e-5 * (1.0 + t.abs()), "{o} vs tract's {t}");
        }
        Ok(())
    }

    /// The substitution against tract's own convolution, through whole graphs: same outputs,
    /// and only the depthwise layers replaced.
    #[test]
    fn substituted_graph_matches_tract() -> TractResult<()> {
        use tract_core::ops::cnn::{PaddingSpec, PoolSpec};
        for (stride, padding, group) in [
            (1, PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]), 6),
            (2, PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]), 6),
            (2, PaddingSpec::SameUpper, 6),
            (2, PaddingSpec::Valid, 6),
            (1, PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]), 1), // a plain conv: not depthwise
        ] {
            let (c, h, w) = (6, 15, 20);
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, c, h, w]))?;
            let k =
                model.add_const("k", Tensor::from_shape(&[c, c / group, 3, 3], &values(c * c / group * 9, 3.0))?)?;
            let b = model.add_const("b", Tensor::from_shape(&[c], &values(c, 4.0))?)?;
            let conv = Conv {
                pool_spec: PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: tvec![3, 3],
                    padding,
                    dilations: None,
                    strides: Some(tvec![stride, stride]),
                    input_channels: c,
                    output_channels: c,
                },
                kernel_fmt: KernelFormat::OIHW,
                group,
                q_params: None,
            };
            let y = model.wire_node("conv", conv, &[x, k, b])?;
            // A ReLU6 after it, which the substitution folds into the depthwise op.
            let zero = model.add_const("zero", Tensor::from_shape(&[1, 1, 1, 1], &[0f32])?)?;
            let six = model.add_const("six", Tensor::from_shape(&[1, 1, 1, 1], &[0.6f32])?)?;
            let y = model.wire_node("relu", tract_core::ops::math::max(), &[y[0], zero])?;
            let y = model.wire_node("relu6", tract_core::ops::math::min(), &[y[0], six])?;
            model.select_output_outlets(&y)?;
            let input = Tensor::from_shape(&[1, c, h, w], &values(c * h * w, 5.0))?;
            let theirs = model.clone().into_runnable()?.run(tvec![input.clone().into_tvalue()])?;
            // As loading does (`model::optimize`): declutter (which drops the batch axis,
            // making the convolution CHW), substitute, generate code.
            let ours = crate::model::optimize(model.clone())?;
            let replaced = ours.nodes().iter().filter(|n| n.op_is::<Depthwise>()).count();
            assert_eq!(replaced, usize::from(group == c));
            let dense = ours.nodes().iter().filter(|n| n.op_as::<Pointwise>().is_some_and(|p| p.window.is_some()));
            assert_eq!(dense.count(), usize::from(group == 1 && pointwise_kernel_available()));
            if group == c {
                let names: Vec<_> = ours.nodes().iter().map(|n| n.op().name()).collect();
                assert!(!names.iter().any(|n| n.contains("Max") || n.contains("Min")), "clamp not fused: {names:?}");
            }
            // And on the graph as built, NCHW with its batch axis.
            let mut nchw = model;
            assert_eq!(substitute_depthwise(&mut nchw)?, usize::from(group == c));
            let nchw = nchw.into_optimized()?.into_runnable()?.run(tvec![input.clone().into_tvalue()])?;
            let ours = ours.into_runnable()?.run(tvec![input.into_tvalue()])?;
            if group == c {
                assert_eq!(nchw[0], ours[0]);
            }
            let (theirs, ours) = (theirs[0].to_plain_array_view::<f32>()?, ours[0].to_plain_array_view::<f32>()?);
            assert_eq!(theirs.shape(), ours.shape());
            for (t, o) in theirs.iter().zip(ours.iter()) {
                assert!((t - o).abs() <= 1e-5 * (1.0 + t.abs()), "stride {stride}, group {group}: {o} vs tract's {t}");
            }
        }
        Ok(())
    }
}

