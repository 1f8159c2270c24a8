//! Transposed convolutions whose taps never overlap (kernel 2×2, stride 2: CenterFace's
//! upsampling to 30×40, 60×80 and 120×160), with the batch norm, the ReLU and the lateral
//! addition that follow them.
//!
//! tract lowers such a layer to a matrix product into a `[Co·4, H·W]` buffer that `DeconvSum`
//! then scatters, and runs the affine, ReLU and addition as a chain after it: 1.9 ms for the
//! last one of CenterFace at 640×480, where onnxruntime takes 0.8. Here the four taps are four
//! blocks of output rows of facegate's 1×1 kernel (the batch norm folded into its weights and
//! bias, the ReLU into its clamp), interleaved into the output with the addition on the way.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::cnn::deconv::Deconv;
use tract_core::ops::math::{Add, Mul};

use super::{activation_after, pack_pointwise_weights, per_channel, pointwise, pointwise_kernel_available, sole_successor, Pointwise};

/// A 2×2, stride-2 transposed convolution of a `[1, Ci, H, W]` input into `[1, Co, 2H, 2W]`,
/// clamped, plus a lateral `[1, Co, 2H, 2W]` input if `lateral`. Inputs: the activation, the
/// packed weights of `taps`, its bias, the lateral input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upsample {
    /// The four taps as one 1×1 convolution of `4·Co` output rows, row `(o·2 + dy)·2 + dx`
    /// holding output pixel `(2y + dy, 2x + dx)` of channel `o` for input pixel `(y, x)`.
    pub taps: Pointwise,
    pub lateral: bool,
}

impl Upsample {
    fn output_shape(&self) -> TVec<usize> {
        let [h, w] = self.taps.hw;
        tvec![1, self.taps.co / 4, 2 * h, 2 * w]
    }
}

/// Replaces each 2×2 stride-2 transposed convolution `upsample_at` accepts, and what it folds,
/// with an [`Upsample`]. x86_64 with AVX2+FMA only, like the 1×1 kernel. Returns how many.
pub fn substitute_upsample(model: &mut TypedModel) -> TractResult<usize> {
    if !pointwise_kernel_available() {
        return Ok(0);
    }
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some((op, last, packed, bias, lateral)) = upsample_at(model, id)? else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        let name = model.node(id).name.clone();
        let mut wires = tvec![model.node(id).inputs[0]];
        wires.extend(lateral);
        let taps = patch.taps(model, &wires)?;
        let packed = patch.add_const(format!("{name}.packed_weights"), packed.into_arc_tensor())?;
        let bias = patch.add_const(format!("{name}.bias_per_row"), bias.into_arc_tensor())?;
        let mut inputs = tvec![taps[0], packed, bias];
        inputs.extend(taps.get(1).copied());
        let y = patch.wire_node(format!("{name}.upsample"), op, &inputs)?;
        patch.shunt_outside(model, last.into(), y[0])?;
        patch.apply(model)?;
        replaced += 1;
    }
    model.compact()?;
    Ok(replaced)
}

/// What replaces node `id` if it is an f32 NCHW `Deconv` (batch 1) with a 2×2 kernel, stride 2,
/// no padding, dilation or adjustment, one group and constant weights and bias; then, each the
/// only consumer of the one before, optionally a per-channel `Mul` and `Add` by constants, a
/// ReLU/ReLU6 (`activation_after`), and an `Add` of a same-shape tensor. The op, the last node
/// it replaces, the packed weights, the bias per row and the lateral input.
#[allow(clippy::type_complexity)]
fn upsample_at(model: &TypedModel, id: usize) -> TractResult<Option<(Upsample, usize, Tensor, Tensor, Option<OutletId>)>> {
    let node = model.node(id);
    let Some(deconv) = node.op_as::<Deconv>() else {
        return Ok(None);
    };
    let spec = &deconv.pool_spec;
    let x = model.outlet_fact(node.inputs[0])?;
    let y = model.outlet_fact(OutletId::new(id, 0))?;
    let (kernel, bias) = (model.outlet_fact(node.inputs[1])?, model.outlet_fact(node.inputs[2])?);
    let (Some(xs), Some(ys), Some(k), Some(b)) =
        (x.shape.as_concrete(), y.shape.as_concrete(), kernel.konst.clone(), bias.konst.clone())
    else {
        return Ok(None);
    };
    let (ci, co) = (spec.input_channels, spec.output_channels);
    if deconv.group != 1
        || spec.data_format != tract_core::ops::nn::DataFormat::NCHW
        || spec.kernel_shape[..] != [2, 2]
        || spec.strides().iter().any(|&s| s != 2)
        || spec.dilations().iter().any(|&d| d != 1)
        || deconv.adjustments.iter().any(|&a| a != 0)
        || !(0..2).all(|ax| spec.padding.valid_dim(ax, false))
        || x.datum_type != f32::datum_type()
        || k.datum_type() != f32::datum_type()
        || b.datum_type() != f32::datum_type()
        || xs.len() != 4
        || xs[..2] != [1, ci]
        || ys[..] != [1, co, 2 * xs[2], 2 * xs[3]]
        || !(b.len() == 1 || b.len() == co)
        || xs[2] * xs[3] < super::MIN_POINTWISE_PIXELS
    {
        return Ok(None);
    }
    let format = deconv.kernel_format;
    let (o_axis, i_axis, h_axis) = (format.o_axis(k.shape()), format.i_axis(k.shape()), format.h_axis());
    if k.rank() != 4 || k.shape()[o_axis] != co || k.shape()[i_axis] != ci {
        return Ok(None);
    }
    // What follows: a per-channel scale (`Mul`) and shift (`Add`) by constants, each optional,
    // then an activation and a lateral addition.
    let folded = |at: usize, is_mul: bool| -> Option<(usize, Vec<f32>)> {
        let (next, slot) = sole_successor(model, at)?;
        let n = model.node(next);
        let bin = n.op_as::<TypedBinOp>()?;
        if !(if is_mul { bin.0.is::<Mul>() } else { bin.0.is::<Add>() }) || n.inputs.len() != 2 {
            return None;
        }
        let other = n.inputs[1 - slot];
        model.outlet_fact(other).ok()?.konst.as_ref()?;
        Some((next, per_channel(model, other, co, 3)?))
    };
    let mut at = id;
    let scale = folded(at, true).map_or(vec![1f32; co], |(next, v)| {
        at = next;
        v
    });
    let shift = folded(at, false).map_or(vec![0f32; co], |(next, v)| {
        at = next;
        v
    });
    let act = activation_after(model, at, co, 3)?;
    if act.prelu.is_some() {
        return Ok(None);
    }
    let mut last = act.chain.last().copied().unwrap_or(at);
    let mut lateral = None;
    if let Some((next, slot)) = sole_successor(model, last) {
        let n = model.node(next);
        let other = n.inputs.get(1 - slot).copied();
        if n.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Add>()) && n.inputs.len() == 2 {
            let other_fact = model.outlet_fact(other.unwrap_or(n.inputs[0]))?;
            if other_fact.konst.is_none()
                && other_fact.datum_type == f32::datum_type()
                && other_fact.shape.as_concrete() == Some(ys)
                && model.outlet_fact(OutletId::new(next, 0))?.shape.as_concrete() == Some(ys)
            {
                lateral = other;
                last = next;
            }
        }
    }
    // Row (o·2 + dy)·2 + dx: scale[o] · kernel[o, i, dy, dx]; its bias scale[o] · b[o] + shift[o].
    let kv = k.to_plain_array_view::<f32>()?;
    let mut weights = vec![0f32; 4 * co * ci];
    for o in 0..co {
        for tap in 0..4 {
            for i in 0..ci {
                let mut index = [0usize; 4];
                (index[o_axis], index[i_axis], index[h_axis], index[h_axis + 1]) = (o, i, tap / 2, tap % 2);
                weights[(o * 4 + tap) * ci + i] = scale[o] * kv[&index[..]];
            }
        }
    }
    let b = b.try_as_plain_ram()?;
    let b = b.as_slice::<f32>()?;
    let b: Vec<f32> = (0..4 * co).map(|r| scale[r / 4] * b[if b.len() == 1 { 0 } else { r / 4 }] + shift[r / 4]).collect();
    let [lo, hi] = act.clamp;
    let taps = Pointwise {
        x_batch: true,
        x_channels_last: false,
        y_batch: false,
        y_channels_last: false,
        ci,
        co: 4 * co,
        hw: [xs[2], xs[3]],
        residual: false,
        lo: lo.to_bits(),
        hi: hi.to_bits(),
        prelu: false,
        window: None,
    };
    let packed = pack_pointwise_weights(&weights, 4 * co, ci);
    let packed = Tensor::from_shape(&[packed.len()], &packed)?;
    let bias = Tensor::from_shape(&[4 * co], &b)?;
    Ok(Some((Upsample { taps, lateral: lateral.is_some() }, last, packed, bias, lateral)))
}

impl Op for Upsample {
    fn name(&self) -> StaticName {
        "FacegateUpsample".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let p = &self.taps;
        Ok(vec![format!(
            "{} -> {} ch 2x2 stride 2 from {:?}{} clamp [{}, {}]",
            p.ci,
            p.co / 4,
            p.hw,
            if self.lateral { " + lateral" } else { "" },
            f32::from_bits(p.lo),
            f32::from_bits(p.hi)
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Upsample {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 3 + usize::from(self.lateral));
        let p = &self.taps;
        let [h, w] = p.hw;
        let co = p.co / 4;
        ensure!(inputs[0].shape() == [1, p.ci, h, w], "upsample input is {:?}", inputs[0].shape());
        let views: TVec<_> = inputs.iter().map(|t| t.try_as_plain_ram()).collect::<TractResult<_>>()?;
        let slices: TVec<&[f32]> = views.iter().map(|v| v.as_slice::<f32>()).collect::<TractResult<_>>()?;
        let lateral = slices.get(3).copied();
        ensure!(lateral.is_none_or(|l| l.len() == co * 4 * h * w));
        let mut rows = vec![0f32; p.co * h * w];
        pointwise(p, slices[0], slices[1], slices[2], None, &mut rows)?;
        // SAFETY: f32 has no invalid bit patterns, and every output pixel is written below.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&self.output_shape())? };
        let mut view = out.try_as_plain_ram_mut()?;
        let out_values = view.as_slice_mut::<f32>()?;
        for (r, orow) in out_values.chunks_exact_mut(2 * w).enumerate() {
            // Output row r is row 2y + dy of channel o.
            let (o, y2) = (r / (2 * h), r % (2 * h));
            let (y, dy) = (y2 / 2, y2 % 2);
            let even = &rows[((o * 2 + dy) * 2) * h * w + y * w..][..w];
            let odd = &rows[((o * 2 + dy) * 2 + 1) * h * w + y * w..][..w];
            for ((pair, &a), &b) in orow.chunks_exact_mut(2).zip(even).zip(odd) {
                pair[0] = a;
                pair[1] = b;
            }
            if let Some(l) = lateral {
                for (v, &l) in orow.iter_mut().zip(&l[r * 2 * w..][..2 * w]) {
                    *v += l;
                }
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Upsample {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3 + usize::from(self.lateral));
        Ok(tvec!(f32::fact(self.output_shape())))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let p = &self.taps;
        Ok(tvec!((Cost::FMA(f32::datum_type()), (p.ci * p.co * p.hw[0] * p.hw[1]).to_dim())))
    }

    as_op!();
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::tests::values;
    use super::*;
    use tract_core::ops::cnn::conv::KernelFormat;
    use tract_core::ops::cnn::{PaddingSpec, PoolSpec};
    use tract_core::ops::math;
    use tract_core::ops::nn::DataFormat;


    /// CenterFace's upsampling as tract's ops (transposed convolution, batch norm as `Mul` and
    /// `Add`, ReLU, lateral `Add`), with more output than input channels so a swapped kernel
    /// axis would show: one `FacegateUpsample`, the same outputs as tract's.
    #[test]
    fn upsample_matches_tract() -> TractResult<()> {
        if !pointwise_kernel_available() {
            eprintln!("skipped: this CPU has no AVX2+FMA, so FacegateUpsample is never substituted");
            return Ok(());
        }
        let (ci, co, h, w) = (6, 10, 9, 13);
        for with_tail in [true, false] {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, ci, h, w]))?;
            let lateral = model.add_source("lateral", f32::fact([1, co, 2 * h, 2 * w]))?;
            let k = model.add_const("k", Tensor::from_shape(&[co, ci, 2, 2], &values(co * ci * 4, 1.0))?)?;
            let b = model.add_const("b", Tensor::from_shape(&[co], &values(co, 2.0))?)?;
            let pool_spec = PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![2, 2],
                padding: PaddingSpec::Valid,
                dilations: None,
                strides: Some(tvec![2, 2]),
                input_channels: ci,
                output_channels: co,
            };
            let op = Deconv { pool_spec, kernel_format: KernelFormat::OIHW, adjustments: tvec![0, 0], group: 1 };
            let mut y = model.wire_node("deconv", op, &[x, k, b])?[0];
            if with_tail {
                let scale = model.add_const("scale", Tensor::from_shape(&[1, co, 1, 1], &values(co, 3.0))?)?;
                let shift = model.add_const("shift", Tensor::from_shape(&[1, co, 1, 1], &values(co, 4.0))?)?;
                let zero = model.add_const("zero", Tensor::from_shape(&[1, 1, 1, 1], &[0f32])?)?;
                y = model.wire_node("bn.mul", math::mul(), &[y, scale])?[0];
                y = model.wire_node("bn.add", math::add(), &[y, shift])?[0];
                y = model.wire_node("relu", math::max(), &[y, zero])?[0];
                y = model.wire_node("lateral.add", math::add(), &[y, lateral])?[0];
            }
            model.select_output_outlets(&[y])?;
            let inputs = || -> TractResult<TVec<TValue>> {
                Ok(tvec![
                    Tensor::from_shape(&[1, ci, h, w], &values(ci * h * w, 5.0))?.into_tvalue(),
                    Tensor::from_shape(&[1, co, 2 * h, 2 * w], &values(co * 4 * h * w, 6.0))?.into_tvalue(),
                ])
            };
            let theirs = model.clone().into_runnable()?.run(inputs()?)?;
            let ours = crate::model::optimize(model)?;
            let ups: Vec<_> = ours.nodes().iter().filter_map(|n| n.op_as::<Upsample>()).collect();
            assert_eq!(ups.len(), 1, "the transposed convolution replaced");
            assert_eq!(ups[0].lateral, with_tail);
            if with_tail {
                assert!(!ours.nodes().iter().any(|n| ["Max", "Add", "Mul"].contains(&&*n.op().name())), "tail folded");
            }
            let ours = ours.into_runnable()?.run(inputs()?)?;
            let (theirs, ours) = (theirs[0].to_plain_array_view::<f32>()?, ours[0].to_plain_array_view::<f32>()?);
            assert_eq!(theirs.shape(), ours.shape());
            for (i, (t, o)) in theirs.iter().zip(ours.iter()).enumerate() {
                assert!((t - o).abs() <= 1e-5 * (1.0 + t.abs()) * ci as f32, "{with_tail} at {i}: {o} vs tract's {t}");
            }
        }
        Ok(())
    }
}
