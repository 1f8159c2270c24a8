//! Inverted-residual blocks fused: a 1×1 (or windowed) expansion, the 3×3 depthwise
//! convolution that reads it and the 1×1 projection that reads that, run a few rows at a time.
//!
//! Unfused, the expansion writes its whole output (CenterFace's 96 channels at 240×320 are
//! 29 MB at 640×480) and the depthwise convolution reads it back: both stream through memory,
//! and so do the depthwise output and the projection's read of it. Fused, the expansion writes
//! a ring of rows per channel that stays in L2, the depthwise convolution turns them into one
//! output row per channel, and the projection runs over a few such rows: only the block's
//! input and output, which have few channels, leave the cache.

use tract_core::internal::*;

use super::{
    clamp_plane, pointwise_kernel_available, pointwise_span, sole_successor, split_by_parity, window_input, Depthwise,
    Planes, Pointwise,
};

/// Below this size of the expanded tensor (bytes) a block is left unfused: it stays in the
/// cache anyway.
const MIN_EXPANDED_BYTES: usize = 3 << 20;

/// Pixels the projection runs per call at most (whole rows of the output): enough for the 1×1
/// kernel's panels.
const PIXELS_PER_CALL: usize = 512;

/// Bytes of the expansion's rows a block holds at once: well inside L2 with the other buffers.
const RING_BYTES: usize = 512 * 1024;

/// An expansion, a depthwise convolution on its output and a projection of that, computed a
/// few rows at a time (see the module's note). Inputs: the expansion's (activation, packed
/// weights, bias, PReLU alpha if any), then the depthwise convolution's after its activation
/// (kernel, bias, alpha if any), then the projection's after its activation (packed weights,
/// bias, residual if any, alpha if any).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Block {
    pub expand: Pointwise,
    pub depthwise: Depthwise,
    pub project: Pointwise,
}

impl Block {
    fn input_count(&self) -> usize {
        self.expand.input_count() + 2 + usize::from(self.depthwise.prelu) + self.project.input_count() - 1
    }
}

/// Replaces every expansion → depthwise → projection chain `block_at` accepts with one
/// [`Block`]. Run after `substitute_depthwise`, `substitute_dense` and `substitute_pointwise`,
/// whose ops it fuses. Returns how many blocks were fused.
pub fn substitute_blocks(model: &mut TypedModel) -> TractResult<usize> {
    fuse_blocks(model, MIN_EXPANDED_BYTES)
}

/// `substitute_blocks` with the size below which blocks stay unfused as a parameter.
fn fuse_blocks(model: &mut TypedModel, min_expanded_bytes: usize) -> TractResult<usize> {
    if !pointwise_kernel_available() {
        return Ok(0);
    }
    let mut fused = 0;
    for id in model.eval_order()? {
        let Some((block, [e, d, p])) = block_at(model, id, min_expanded_bytes) else {
            continue;
        };
        let mut wires: TVec<OutletId> = model.node(e).inputs.iter().copied().collect();
        wires.extend(model.node(d).inputs.iter().skip(1).copied());
        wires.extend(model.node(p).inputs.iter().skip(1).copied());
        let mut patch = TypedModelPatch::default();
        let taps = patch.taps(model, &wires)?;
        let y = patch.wire_node(format!("{}.block", model.node(e).name), block, &taps)?;
        patch.shunt_outside(model, p.into(), y[0])?;
        patch.apply(model)?;
        fused += 1;
    }
    model.compact()?;
    Ok(fused)
}

/// Turns channel-last prefixes channel-first: a windowed [`Pointwise`] writing `[H, W, C]`
/// (FaceRes' and MobileFaceNet's first layers, NHWC models), the channel-last [`Depthwise`]
/// that is its only consumer, and the [`Pointwise`] reading that channel-last as the
/// depthwise output's only consumer become the same three ops on `[C, H, W]` planes, which
/// the depthwise kernel runs faster (FaceRes' 32 channels at 112×112: 0.9 ms channel-last).
/// Returns how many prefixes were turned.
pub fn channels_first_prefixes(model: &mut TypedModel) -> TractResult<usize> {
    let mut turned = 0;
    for id in model.eval_order()? {
        let Some(conv) = model.node(id).op_as::<Pointwise>() else {
            continue;
        };
        if conv.window.is_none() || !conv.y_channels_last {
            continue;
        }
        let Some((d, 0)) = sole_successor(model, id) else {
            continue;
        };
        let Some(depthwise) = model.node(d).op_as::<Depthwise>() else {
            continue;
        };
        let Some((p, 0)) = sole_successor(model, d) else {
            continue;
        };
        let Some(project) = model.node(p).op_as::<Pointwise>() else {
            continue;
        };
        if !depthwise.channels_last
            || depthwise.batch_axis != conv.y_batch
            || depthwise.input != conv.hw
            || depthwise.channels != conv.co
            || project.window.is_some()
            || !project.x_channels_last
            || project.x_batch != depthwise.batch_axis
            || project.hw != depthwise.output
        {
            continue;
        }
        let conv = Pointwise { y_channels_last: false, ..conv.clone() };
        let depthwise = Depthwise { channels_last: false, ..depthwise.clone() };
        let project = Pointwise { x_channels_last: false, ..project.clone() };
        let mut patch = TypedModelPatch::default();
        let mut y = patch.taps(model, &model.node(id).inputs)?;
        for (node, op) in [(id, Box::new(conv) as Box<dyn TypedOp>), (d, Box::new(depthwise)), (p, Box::new(project))] {
            let mut inputs = tvec![y[0]];
            if node != id {
                inputs.extend(patch.taps(model, &model.node(node).inputs[1..])?);
            } else {
                inputs = y.clone();
            }
            y = patch.wire_node(format!("{}.channels_first", model.node(node).name), op, &inputs)?;
        }
        patch.shunt_outside(model, p.into(), y[0])?;
        patch.apply(model)?;
        turned += 1;
    }
    model.compact()?;
    Ok(turned)
}

/// The block starting at node `id`, if it is one: a channel-first [`Pointwise`] (1×1 or a
/// window) without a residual whose only consumer is a channel-first 3×3 [`Depthwise`] with
/// stride 1 and padding 1 or stride 2 and padding 0 or 1 (as much above as before), whose
/// only consumer is a channel-first
/// 1×1 [`Pointwise`]; and the expanded tensor at least `min_expanded_bytes`.
fn block_at(model: &TypedModel, id: usize, min_expanded_bytes: usize) -> Option<(Block, [usize; 3])> {
    let expand = model.node(id).op_as::<Pointwise>()?;
    if expand.y_channels_last || expand.residual {
        return None;
    }
    let (d, 0) = sole_successor(model, id)? else {
        return None;
    };
    let depthwise = model.node(d).op_as::<Depthwise>()?;
    let [sy, sx] = depthwise.stride;
    if depthwise.channels_last
        || depthwise.channels != expand.co
        || depthwise.input != expand.hw
        || depthwise.kernel != [3, 3]
        || depthwise.input[1] < 2
        || sy != sx
        || !(sy == 1 && depthwise.pad == [1, 1] || sy == 2 && depthwise.pad[0] == depthwise.pad[1] && depthwise.pad[0] <= 1)
    {
        return None;
    }
    let (p, 0) = sole_successor(model, d)? else {
        return None;
    };
    let project = model.node(p).op_as::<Pointwise>()?;
    if project.window.is_some()
        || project.x_channels_last
        || project.y_channels_last
        || project.ci != depthwise.channels
        || project.hw != depthwise.output
    {
        return None;
    }
    if 4 * expand.co * expand.hw[0] * expand.hw[1] < min_expanded_bytes {
        return None;
    }
    let block = Block { expand: expand.clone(), depthwise: depthwise.clone(), project: project.clone() };
    Some((block, [id, d, p]))
}

impl Op for Block {
    fn name(&self) -> StaticName {
        "FacegateBlock".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![
            format!("expand: {}", self.expand.info()?.join(" ")),
            format!("depthwise: {}", self.depthwise.info()?.join(" ")),
            format!("project: {}", self.project.info()?.join(" ")),
        ])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Block {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == self.input_count());
        ensure!(inputs[0].shape() == &*self.expand.input_shape(), "block input is {:?}", inputs[0].shape());
        let views: TVec<_> = inputs.iter().map(|t| t.try_as_plain_ram()).collect::<TractResult<_>>()?;
        let slices: TVec<&[f32]> = views.iter().map(|v| v.as_slice::<f32>()).collect::<TractResult<_>>()?;
        let mut next = slices.iter().copied();
        let mut take = |present: bool| if present { next.next() } else { None };
        let (e, d, p) = (&self.expand, &self.depthwise, &self.project);
        let x = take(true).unwrap_or_default();
        let expand = Weights { packed: take(true).unwrap_or_default(), bias: take(true).unwrap_or_default(), alpha: take(e.prelu) };
        let kernel = take(true).unwrap_or_default();
        let dw = Weights { packed: kernel, bias: take(true).unwrap_or_default(), alpha: take(d.prelu) };
        let (packed, bias) = (take(true).unwrap_or_default(), take(true).unwrap_or_default());
        let residual = take(p.residual);
        let project = Weights { packed, bias, alpha: take(p.prelu) };
        ensure!(dw.packed.len() == d.channels * 9 && (dw.bias.len() == 1 || dw.bias.len() == d.channels));
        for (w, channels) in [(&expand, e.co), (&dw, d.channels), (&project, p.co)] {
            ensure!(w.alpha.is_none_or(|a| a.len() == channels));
        }
        // SAFETY: f32 has no invalid bit patterns, and `run_block` writes every output pixel
        // of every channel (the projection runs over every output row).
        let mut out = unsafe { Tensor::uninitialized::<f32>(&p.output_shape())? };
        let mut view = out.try_as_plain_ram_mut()?;
        let out_values = view.as_slice_mut::<f32>()?;
        #[cfg(target_arch = "x86_64")]
        if pointwise_kernel_available() {
            // SAFETY: AVX2 was just checked for, the only feature `run_block_avx2` enables.
            unsafe { run_block_avx2(self, x, &expand, &dw, &project, residual, out_values)? };
            return Ok(tvec!(out.into_tvalue()));
        }
        run_block(self, x, &expand, &dw, &project, residual, out_values)?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Block {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == self.input_count());
        Ok(tvec!(f32::fact(self.project.output_shape())))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let (e, d, p) = (&self.expand, &self.depthwise, &self.project);
        let fma = e.depth() * e.co * e.hw[0] * e.hw[1]
            + d.channels * d.output[0] * d.output[1] * 9
            + p.depth() * p.co * p.hw[0] * p.hw[1];
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma.to_dim())))
    }

    as_op!();
}

/// One stage's constants: packed weights (the depthwise kernel for that stage), bias, alpha.
struct Weights<'a> {
    packed: &'a [f32],
    bias: &'a [f32],
    alpha: Option<&'a [f32]>,
}

/// PReLU on pixels `len` long from `at` in each of the channel planes `stride` apart.
fn prelu_rows(values: &mut [f32], stride: usize, at: usize, len: usize, alpha: &[f32]) {
    for (c, a) in alpha.iter().enumerate() {
        for v in &mut values[c * stride + at..][..len] {
            *v += a * v.min(0.0);
        }
    }
}

/// `run_block` compiled for AVX2 (its depthwise rows; the 1×1 kernels pick their own).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_block_avx2(
    block: &Block,
    x: &[f32],
    expand: &Weights,
    dw: &Weights,
    project: &Weights,
    residual: Option<&[f32]>,
    out: &mut [f32],
) -> TractResult<()> {
    run_block(block, x, expand, dw, project, residual, out)
}

/// The block over the whole plane, `group` output rows at a time: the expansion's rows those
/// read (zero rows where the depthwise convolution pads above or below) in `rows`, the rows
/// the next group reads again moved to its start rather than recomputed; the depthwise
/// convolution of the group into `dw_out`; the projection of the group into `out`.
#[inline(always)]
fn run_block(
    block: &Block,
    x: &[f32],
    expand: &Weights,
    dw: &Weights,
    project: &Weights,
    residual: Option<&[f32]>,
    out: &mut [f32],
) -> TractResult<()> {
    let (e, d, p) = (&block.expand, &block.depthwise, &block.project);
    let (ce, [h, w], [oh, ow]) = (e.co, e.hw, d.output);
    let [stride, _] = d.stride;
    let pad = d.pad[0] as isize;
    let group = group_rows(ce, w, ow, stride).min(oh);
    // Input rows one group reads, and the length of a split row (stride 2).
    let ring = (group - 1) * stride + 3;
    let split_len = ow + 2;
    let mut rows = vec![0f32; ce * ring * w];
    // Each channel's group of output rows sits between a spare row above and below, which
    // `same3x3_inner_rows` (stride 1) leaves alone.
    let mut dw_out = vec![0f32; ce * (group + 2) * ow];
    let mut split = if stride == 2 { vec![0f32; 2 * ring * split_len] } else { Vec::new() };
    let mut panel = Vec::new();
    let xin = window_input(e, x);
    // The input rows `rows` holds: from `held_top`, `held` of them.
    let (mut held_top, mut held) = (isize::MIN, 0usize);
    for oy0 in (0..oh).step_by(group) {
        let g = group.min(oh - oy0);
        let top = (oy0 * stride) as isize - pad;
        let needed = (g - 1) * stride + 3;
        // Rows the last group held that this one reads again, moved to the front.
        let kept = if held_top <= top && top < held_top + held as isize {
            let (from, kept) = ((top - held_top) as usize, (held_top + held as isize - top) as usize);
            if from > 0 {
                for plane in rows.chunks_exact_mut(ring * w) {
                    plane.copy_within(from * w..(from + kept) * w, 0);
                }
            }
            kept.min(needed)
        } else {
            0
        };
        // The rest: image rows from the expansion, in one call; padding rows zero.
        let first_new = top + kept as isize;
        let (image_from, image_to) = (first_new.clamp(0, h as isize) as usize, (top + needed as isize).clamp(0, h as isize) as usize);
        for plane in rows.chunks_exact_mut(ring * w) {
            for r in kept..needed {
                let iy = top + r as isize;
                if iy < 0 || iy >= h as isize {
                    plane[r * w..][..w].fill(0.0);
                }
            }
        }
        if image_from < image_to {
            // Input row `iy` goes to row `iy − top` of each channel's ring.
            let at = (image_from as isize - top) as usize;
            let span = image_from * w..image_to * w;
            let ring_planes = Planes { stride: ring * w, first: image_from * w };
            let planes = &mut rows[at * w..];
            pointwise_span(e, &xin, Planes::whole(h * w), expand.packed, expand.bias, None, planes, ring_planes, span, &mut panel)?;
            if let Some(alpha) = expand.alpha {
                prelu_rows(&mut rows, ring * w, at * w, (image_to - image_from) * w, alpha);
            }
        }
        (held_top, held) = (top, needed);
        for (c, (plane, dwp)) in rows.chunks_exact(ring * w).zip(dw_out.chunks_exact_mut((group + 2) * ow)).enumerate() {
            let taps: &[f32; 9] = dw.packed[c * 9..][..9].try_into().expect("nine taps");
            let bias = if dw.bias.len() == 1 { dw.bias[0] } else { dw.bias[c] };
            if stride == 1 {
                super::same3x3_inner_rows(&plane[..(g + 2) * w], &mut dwp[..(g + 2) * ow], taps, bias, g + 2, w);
            } else {
                halve_rows(&plane[..needed * w], &mut dwp[ow..(g + 1) * ow], taps, bias, w, pad == 1, &mut split);
            }
            let rows_out = &mut dwp[ow..(g + 1) * ow];
            clamp_plane(rows_out, d.lo, d.hi);
            if let Some(a) = dw.alpha {
                for v in rows_out.iter_mut() {
                    *v += a[c] * v.min(0.0);
                }
            }
        }
        let span = oy0 * ow..(oy0 + g) * ow;
        let planes = Planes { stride: (group + 2) * ow, first: oy0 * ow };
        let whole = Planes::whole(oh * ow);
        pointwise_span(p, &dw_out[ow..], planes, project.packed, project.bias, residual, out, whole, span, &mut panel)?;
        if let Some(alpha) = project.alpha {
            prelu_rows(out, oh * ow, oy0 * ow, g * ow, alpha);
        }
    }
    Ok(())
}

/// Output rows per group: as many as keep the expansion's rows for a group (`ce` channels of
/// `w`) within `RING_BYTES` and the projection's calls within `PIXELS_PER_CALL`; at least one.
fn group_rows(ce: usize, w: usize, ow: usize, stride: usize) -> usize {
    let rows_fit = RING_BYTES / (4 * ce * w).max(1);
    let by_ring = rows_fit.saturating_sub(3) / stride + 1;
    by_ring.min(PIXELS_PER_CALL.div_ceil(ow)).max(1)
}

/// A 3×3 stride-2 depthwise convolution of the rows `rows` (`2g + 1` of `w`, zero rows where
/// the convolution pads above or below) into `g` output rows (`out`, `g × ow`), with zero
/// padding of one column before (`pad_left`) or none, and after as far as the output reaches.
/// Each row is split by column parity into `split` (two runs of `ow + 2` per row, zero past
/// the row's columns and, with `pad_left`, before the odd ones), so every output column reads
/// its nine taps at fixed offsets, in one pass without border cases.
#[inline(always)]
fn halve_rows(rows: &[f32], out: &mut [f32], taps: &[f32; 9], bias: f32, w: usize, pad_left: bool, split: &mut [f32]) {
    let ow = out.len() / (rows.len() / w / 2).max(1);
    let len = ow + 2;
    let odd_at = usize::from(pad_left);
    for (row, s) in rows.chunks_exact(w).zip(split.chunks_exact_mut(2 * len)) {
        let (evens, odds) = s.split_at_mut(len);
        split_by_parity(row, &mut evens[..w.div_ceil(2)], &mut odds[odd_at..odd_at + w / 2 + w % 2]);
    }
    let [t0, t1, t2, t3, t4, t5, t6, t7, t8] = *taps;
    let row = |r: usize| -> [&[f32]; 3] {
        let (evens, odds) = split[r * 2 * len..][..2 * len].split_at(len);
        // Column 2·ox + kx − pad of the input, for kx = 0, 1, 2.
        if pad_left {
            [&odds[..ow], &evens[..ow], &odds[1..ow + 1]]
        } else {
            [&evens[..ow], &odds[..ow], &evens[1..ow + 1]]
        }
    };
    for (j, orow) in out.chunks_exact_mut(ow).enumerate() {
        let ([a0, a1, a2], [b0, b1, b2], [c0, c1, c2]) = (row(2 * j), row(2 * j + 1), row(2 * j + 2));
        for i in 0..ow {
            let top = t0 * a0[i] + t1 * a1[i] + t2 * a2[i];
            let mid = t3 * b0[i] + t4 * b1[i] + t5 * b2[i];
            let bot = t6 * c0[i] + t7 * c1[i] + t8 * c2[i];
            orow[i] = bias + top + mid + bot;
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::tests::{values, wire_conv};
    use super::*;
    use tract_core::ops::cnn::PaddingSpec;
    use tract_core::ops::math;
    use tract_core::ops::nn::DataFormat;


    /// What follows a layer in the test graphs.
    #[derive(Clone, Copy, Debug)]
    enum Act {
        None,
        Relu6,
        Prelu,
    }

    /// One geometry of an expansion → depthwise → projection chain.
    #[derive(Clone, Copy, Debug)]
    struct Case {
        ci: usize,
        ce: usize,
        co: usize,
        hw: [usize; 2],
        /// The expansion is a 3×3 stride-2 convolution (CenterFace's first layer) rather than 1×1.
        windowed: bool,
        stride: usize,
        /// Explicit padding of 1 all round, or TensorFlow's SAME (after only, at stride 2).
        same_upper: bool,
        acts: [Act; 3],
        residual: bool,
    }

    /// The chain as tract's own ops, decluttered.
    fn graph(case: Case) -> TractResult<TypedModel> {
        let Case { ci, ce, co, hw: [h, w], windowed, stride, same_upper, acts, residual } = case;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, ci, h, w]))?;
        let mut seed = 1.0;
        let mut conv = |model: &mut TypedModel, name: &str, x: OutletId, io: [usize; 2], k: usize, group: usize,
                        stride: usize, padding: PaddingSpec| {
            seed += 1.0;
            wire_conv(model, name, x, DataFormat::NCHW, io, k, group, stride, padding, seed)
        };
        let act = |model: &mut TypedModel, name: &str, y: OutletId, act: Act, c: usize| -> TractResult<OutletId> {
            let zero = model.add_const(format!("{name}.zero"), Tensor::from_shape(&[1, 1, 1, 1], &[0f32])?)?;
            match act {
                Act::None => Ok(y),
                Act::Relu6 => {
                    let six = model.add_const(format!("{name}.six"), Tensor::from_shape(&[1, 1, 1, 1], &[0.6f32])?)?;
                    let y = model.wire_node(format!("{name}.max"), math::max(), &[y, zero])?[0];
                    Ok(model.wire_node(format!("{name}.min"), math::min(), &[y, six])?[0])
                }
                Act::Prelu => {
                    let alpha = Tensor::from_shape(&[1, c, 1, 1], &values(c, 9.0))?;
                    let alpha = model.add_const(format!("{name}.alpha"), alpha)?;
                    let neg = model.wire_node(format!("{name}.neg"), math::min(), &[y, zero])?[0];
                    let scaled = model.wire_node(format!("{name}.scaled"), math::mul(), &[neg, alpha])?[0];
                    Ok(model.wire_node(format!("{name}.add"), math::add(), &[y, scaled])?[0])
                }
            }
        };
        let pad1 = || PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]);
        let e = if windowed {
            conv(&mut model, "expand", x, [ci, ce], 3, 1, 2, pad1())?
        } else {
            conv(&mut model, "expand", x, [ci, ce], 1, 1, 1, PaddingSpec::Valid)?
        };
        let e = act(&mut model, "expand", e, acts[0], ce)?;
        let padding = if same_upper { PaddingSpec::SameUpper } else { pad1() };
        let d = conv(&mut model, "dw", e, [ce, ce], 3, ce, stride, padding)?;
        let d = act(&mut model, "dw", d, acts[1], ce)?;
        let mut y = conv(&mut model, "project", d, [ce, co], 1, 1, 1, PaddingSpec::Valid)?;
        if residual {
            y = model.wire_node("residual", math::add(), &[y, x])?[0];
        }
        let y = act(&mut model, "project", y, acts[2], co)?;
        model.select_output_outlets(&[y])?;
        model.declutter()?;
        Ok(model)
    }

    /// FaceRes' start: an NHWC input moved to NCHW, then a 3×3 stride-2 convolution, ReLU,
    /// depthwise 3×3 and 1×1. tract's declutter pushes the move into the convolutions, leaving
    /// the first two channel-last; they are turned channel-first, the same outputs as tract's.
    #[test]
    fn channel_last_prefix_turns_channel_first() -> TractResult<()> {
        if !pointwise_kernel_available() {
            eprintln!("skipped: this CPU has no AVX2+FMA, so the prefix keeps tract's ops");
            return Ok(());
        }
        let (c, h, w) = (3, 30, 44);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, h, w, c]))?;
        let x = model.wire_node("to_nchw", AxisOp::Move(3, 1), &[x])?[0];
        let conv = |model: &mut TypedModel, name: &str, x: OutletId, io: [usize; 2], k: usize, group: usize,
                    stride: usize| {
            let padding = if k == 3 { PaddingSpec::SameUpper } else { PaddingSpec::Valid };
            wire_conv(model, name, x, DataFormat::NCHW, io, k, group, stride, padding, k as f32)
        };
        let zero = model.add_const("zero", Tensor::from_shape(&[1, 1, 1, 1], &[0f32])?)?;
        let y = conv(&mut model, "first", x, [c, 16], 3, 1, 2)?;
        let y = model.wire_node("relu", math::max(), &[y, zero])?[0];
        let y = conv(&mut model, "dw", y, [16, 16], 3, 16, 1)?;
        let y = conv(&mut model, "pw", y, [16, 8], 1, 1, 1)?;
        model.select_output_outlets(&[y])?;
        let input = Tensor::from_shape(&[1, h, w, c], &values(c * h * w, 7.0))?;
        let theirs = model.clone().into_runnable()?.run(tvec![input.clone().into_tvalue()])?;
        let ours = crate::model::optimize(model)?;
        // Turned by `channels_first_prefixes` (which names what it wires so), not laid out so
        // from the start.
        let turned = |n: &TypedNode| n.name.ends_with(".channels_first");
        let depthwise: Vec<_> = ours.nodes().iter().filter(|n| n.op_as::<Depthwise>().is_some()).collect();
        assert_eq!(depthwise.len(), 1);
        assert!(turned(depthwise[0]) && !depthwise[0].op_as::<Depthwise>().is_some_and(|d| d.channels_last));
        assert_eq!(ours.nodes().iter().filter(|n| turned(n)).count(), 3, "convolution, depthwise, 1x1");
        let ours = ours.into_runnable()?.run(tvec![input.into_tvalue()])?;
        let (theirs, ours) = (theirs[0].to_plain_array_view::<f32>()?, ours[0].to_plain_array_view::<f32>()?);
        assert_eq!(theirs.shape(), ours.shape());
        for (t, o) in theirs.iter().zip(ours.iter()) {
            assert!((t - o).abs() <= 1e-4 * (1.0 + t.abs()), "{o} vs tract's {t}");
        }
        Ok(())
    }

    /// Fused blocks against the same layers unfused (facegate's kernels one by one) and against
    /// tract's own ops: strides 1 and 2, explicit and SAME padding, odd sizes, rings narrower
    /// than the plane and wider, a windowed expansion, ReLU6 and PReLU at every stage, a
    /// residual.
    #[test]
    fn fused_block_matches_the_layers_it_fuses() -> TractResult<()> {
        if !pointwise_kernel_available() {
            eprintln!("skipped: this CPU has no AVX2+FMA, so blocks are never fused");
            return Ok(());
        }
        use Act::*;
        let base = Case {
            ci: 8,
            ce: 24,
            co: 8,
            hw: [9, 12],
            windowed: false,
            stride: 1,
            same_upper: false,
            acts: [Relu6, Relu6, None],
            residual: true,
        };
        let cases = [
            base,
            Case { ci: 6, ce: 20, co: 10, hw: [40, 33], stride: 2, residual: false, ..base },
            Case { hw: [16, 64], stride: 2, same_upper: true, residual: false, ..base },
            Case { hw: [15, 17], stride: 2, residual: false, ..base },
            Case { hw: [11, 300], stride: 2, residual: false, ..base },
            Case { hw: [7, 300], ..base },
            Case { hw: [30, 26], acts: [Prelu, Prelu, Prelu], ..base },
            Case { ci: 3, ce: 16, co: 8, hw: [34, 48], windowed: true, residual: false, ..base },
            Case { ci: 16, ce: 96, co: 24, hw: [12, 320], stride: 2, acts: [Relu6, Relu6, None], residual: false, ..base },
        ];
        for case in cases {
            let model = graph(case)?;
            let [h, w] = case.hw;
            let input = Tensor::from_shape(&[1, case.ci, h, w], &values(case.ci * h * w, 3.0))?;
            let theirs = model.clone().into_runnable()?.run(tvec![input.clone().into_tvalue()])?;
            let mut layers = model;
            super::super::substitute_depthwise(&mut layers)?;
            super::super::substitute_dense(&mut layers)?;
            super::super::substitute_pointwise(&mut layers)?;
            let mut fused = layers.clone();
            assert_eq!(fuse_blocks(&mut fused, 0)?, 1, "{case:?}: one block fused");
            assert!(!fused.nodes().iter().any(|n| n.op_as::<Depthwise>().is_some()), "{case:?}");
            let run = |m: TypedModel| m.into_runnable()?.run(tvec![input.clone().into_tvalue()]);
            let (layers, fused) = (run(layers)?, run(fused)?);
            let views = [&theirs[0], &layers[0], &fused[0]].map(|t| t.to_plain_array_view::<f32>());
            let [theirs, layers, fused] = views;
            let (theirs, layers, fused) = (theirs?, layers?, fused?);
            assert_eq!(fused.shape(), theirs.shape(), "{case:?}");
            for (i, ((t, l), f)) in theirs.iter().zip(layers.iter()).zip(fused.iter()).enumerate() {
                let tol = 1e-5 * (1.0 + t.abs()) * case.ce as f32;
                assert!((f - l).abs() <= tol && (f - t).abs() <= tol, "{case:?} at {i}: fused {f}, layers {l}, tract {t}");
            }
        }
        Ok(())
    }
}
