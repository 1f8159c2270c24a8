//! facegate's own kernels for the ops tract 0.23.9 runs slowly, substituted into a model's
//! graph at load, after declutter and before tract's code generation.
//!
//! One so far: the depthwise convolution. tract's `DepthWiseConv` has a vectorised inner loop
//! for stride 1 only; a stride-2 depthwise convolution walks scalar, strided reads and was the
//! single most expensive node of CenterFace (32 ms of ~130 ms at 640×480 for one layer,
//! `benches/op_profile.rs`). [`Depthwise`] runs either stride as contiguous, vectorisable row
//! passes: a stride-2 row is split into its even and odd columns once, so every tap reads a
//! contiguous run.
//!
//! The substituted op still runs inside tract's plan; only the arithmetic of that node is
//! ours. On x86_64 the same code is compiled a second time with AVX2 enabled and chosen at run
//! time; elsewhere (the boards' aarch64 and armv7+NEON) the baseline build vectorises.

use tract_core::internal::*;
use tract_core::ops::cnn::conv::{Conv, KernelFormat};
use tract_core::ops::nn::DataFormat;

/// Replaces every depthwise f32 NCHW convolution `substitutable` accepts with [`Depthwise`].
/// Returns how many were replaced. Run it on a decluttered model with concrete shapes.
pub fn substitute_depthwise(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else { continue };
        let Some(op) = substitutable(model, node, conv)? else { continue };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The [`Depthwise`] that computes `conv` at `node`, when it is one this module handles: f32,
/// not quantized, NCHW with batch 1 and concrete sizes, one group per channel (channel
/// multiplier 1), an OIHW kernel and a bias held as constants, no dilation, horizontal stride
/// 1 or 2.
fn substitutable(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Depthwise>> {
    if conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || node.inputs.len() != 3
    {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let kernel = model.outlet_fact(node.inputs[1])?;
    let bias = model.outlet_fact(node.inputs[2])?;
    let Some(shape) = x.shape.as_concrete() else { return Ok(None) };
    // Declutter drops a batch axis of 1: the convolution is then CHW.
    let (channels, height, width) = match (conv.pool_spec.data_format, shape) {
        (DataFormat::NCHW, &[1, c, h, w]) | (DataFormat::CHW, &[c, h, w]) => (c, h, w),
        _ => return Ok(None),
    };
    let ps = &conv.pool_spec;
    let [kh, kw] = ps.kernel_shape[..] else { return Ok(None) };
    let strides = ps.strides();
    let dilations = ps.dilations();
    if x.datum_type != f32::datum_type()
        || kernel.datum_type != f32::datum_type()
        || bias.datum_type != f32::datum_type()
        || kernel.konst.is_none()
        || bias.konst.is_none()
        || conv.group != channels
        || ps.input_channels != channels
        || ps.output_channels != channels
        || kernel.shape.as_concrete() != Some(&[channels, 1, kh, kw][..])
        || !(bias.shape.volume() == 1.to_dim() || bias.shape.volume() == channels.to_dim())
        || dilations.iter().any(|&d| d != 1)
        || strides[0] == 0
        || !(strides[1] == 1 || strides[1] == 2)
    {
        return Ok(None);
    }
    let padded = ps.computed_padding(&[height, width]);
    let op = Depthwise {
        batch_axis: conv.pool_spec.data_format == DataFormat::NCHW,
        channels,
        input: [height, width],
        output: [padded[0].convoluted, padded[1].convoluted],
        kernel: [kh, kw],
        stride: [strides[0], strides[1]],
        pad: [padded[0].pad_before, padded[1].pad_before],
    };
    if op.output.contains(&0) {
        return Ok(None);
    }
    Ok(Some(op))
}

/// Depthwise convolution, batch 1, NCHW, f32: channel `c` of the output is channel `c` of the
/// input convolved with its own `kernel` (OIHW `[C, 1, kh, kw]`) plus `bias[c]` (or one bias for
/// every channel). Taps outside the input add nothing (zero padding).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Depthwise {
    /// NCHW with a batch of 1 (`[1, C, H, W]`) rather than CHW.
    pub batch_axis: bool,
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
}

impl Depthwise {
    /// The tensor shape of a `[height, width]` plane stack in this op's layout.
    fn shape(&self, [h, w]: [usize; 2]) -> TVec<usize> {
        if self.batch_axis {
            tvec![1, self.channels, h, w]
        } else {
            tvec![self.channels, h, w]
        }
    }
}

impl Op for Depthwise {
    fn name(&self) -> StaticName {
        "FacegateDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} ch {:?} -> {:?} kernel {:?} stride {:?} pad {:?}",
            self.channels, self.input, self.output, self.kernel, self.stride, self.pad
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, kernel, bias) = args_3!(inputs);
        ensure!(x.shape() == &self.shape(self.input)[..], "depthwise input is {:?}", x.shape());
        let (x, kernel, bias) = (x.try_as_plain_ram()?, kernel.try_as_plain_ram()?, bias.try_as_plain_ram()?);
        let (x, kernel, bias) = (x.as_slice::<f32>()?, kernel.as_slice::<f32>()?, bias.as_slice::<f32>()?);
        ensure!(kernel.len() == self.channels * self.kernel[0] * self.kernel[1]);
        ensure!(bias.len() == 1 || bias.len() == self.channels);
        let mut out = Tensor::zero::<f32>(&self.shape(self.output))?;
        run(self, x, kernel, bias, out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Depthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3);
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

/// The kernel itself, plain Rust over slices; `inline(always)` so that `run_avx2` compiles
/// its own copy with AVX2.
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
    let mut planes = if sw == 2 { vec![0f32; h * w] } else { Vec::new() };
    for c in 0..op.channels {
        let xc = &x[c * h * w..][..h * w];
        let taps = &kernel[c * kh * kw..][..kh * kw];
        let b = if bias.len() == 1 { bias[0] } else { bias[c] };
        let oc = &mut out[c * oh * ow..][..oh * ow];
        let src: &[f32] = if sw == 2 {
            for (row, split) in xc.chunks_exact(w).zip(planes.chunks_exact_mut(w)) {
                let (evens, odds) = split.split_at_mut(even);
                for ((e, o), pair) in evens.iter_mut().zip(odds.iter_mut()).zip(row.chunks_exact(2)) {
                    *e = pair[0];
                    *o = pair[1];
                }
                if w % 2 == 1 {
                    evens[even - 1] = row[w - 1];
                }
            }
            &planes
        } else {
            xc
        };
        for (oy, orow) in oc.chunks_exact_mut(ow).enumerate() {
            orow.fill(b);
            for ky in 0..kh {
                let Some(iy) = (oy * sh + ky).checked_sub(ph).filter(|&iy| iy < h) else { continue };
                let irow = &src[iy * w..][..w];
                // The run of input each tap reads, and the shift from output column to it.
                let tap_run = |kx: usize| {
                    let d = kx as isize - pw as isize;
                    if sw == 2 {
                        let run = if d.rem_euclid(2) == 0 { &irow[..even] } else { &irow[even..] };
                        (run, d.div_euclid(2))
                    } else {
                        (irow, d)
                    }
                };
                let row_taps = &taps[ky * kw..][..kw];
                if kw == 3 {
                    row3(orow, [tap_run(0), tap_run(1), tap_run(2)], [row_taps[0], row_taps[1], row_taps[2]]);
                    continue;
                }
                for (kx, &tap) in row_taps.iter().enumerate() {
                    let (run, shift) = tap_run(kx);
                    let (lo, hi) = valid_columns(run.len(), shift, orow.len());
                    if lo < hi {
                        let from = (lo as isize + shift) as usize;
                        for (o, v) in orow[lo..hi].iter_mut().zip(&run[from..from + (hi - lo)]) {
                            *o += tap * v;
                        }
                    }
                }
            }
        }
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
                    out[(c * oh + oy) * ow + ox] = s;
                }
            }
        }
        out
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 * 0.7311 + seed).sin() * 1.7).fract()).collect()
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
        ];
        for (i, &(channels, h, w, kh, kw, stride, pad, per_channel)) in cases.iter().enumerate() {
            let output = [
                (h + 2 * pad[0] - kh) / stride[0] + 1,
                (w + 2 * pad[1] - kw) / stride[1] + 1,
            ];
            let op = Depthwise { batch_axis: true, channels, input: [h, w], output, kernel: [kh, kw], stride, pad };
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
        }
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
            (1, PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]), 1), // a plain conv: untouched
        ] {
            let (c, h, w) = (6, 15, 20);
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, c, h, w]))?;
            let k = model.add_const(
                "k",
                Tensor::from_shape(&[c, c / group, 3, 3], &values(c * c / group * 9, 3.0))?,
            )?;
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
            model.select_output_outlets(&y)?;
            let input = Tensor::from_shape(&[1, c, h, w], &values(c * h * w, 5.0))?;
            let theirs = model.clone().into_runnable()?.run(tvec![input.clone().into_tvalue()])?;
            // As loading does (`model::optimize`): declutter (which drops the batch axis,
            // making the convolution CHW), substitute, generate code.
            let ours = crate::model::optimize(model.clone())?;
            let replaced = ours.nodes().iter().filter(|n| n.op_is::<Depthwise>()).count();
            assert_eq!(replaced, usize::from(group == c));
            // And on the graph as built, NCHW with its batch axis.
            let mut nchw = model;
            assert_eq!(substitute_depthwise(&mut nchw)?, usize::from(group == c));
            let nchw = nchw.into_optimized()?.into_runnable()?.run(tvec![input.clone().into_tvalue()])?;
            let ours = ours.into_runnable()?.run(tvec![input.into_tvalue()])?;
            assert_eq!(nchw[0], ours[0]);
            let (theirs, ours) = (theirs[0].to_plain_array_view::<f32>()?, ours[0].to_plain_array_view::<f32>()?);
            assert_eq!(theirs.shape(), ours.shape());
            for (t, o) in theirs.iter().zip(ours.iter()) {
                assert!((t - o).abs() <= 1e-5 * (1.0 + t.abs()), "stride {stride}, group {group}: {o} vs tract's {t}");
            }
        }
        Ok(())
    }
}
