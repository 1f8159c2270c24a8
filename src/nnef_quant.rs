//! NNEF for tract's per-tensor quantise and dequantise operators.
//!
//! tract 0.23.9 loads ONNX `QuantizeLinear` / `DequantizeLinear` (around each `QLinearConv` of an
//! int8 QOperator model) as `QuantizeLinearU8`, `QuantizeLinearI8` and `DequantizeLinearF32`, and
//! has no NNEF serialiser for them. This registry adds one, used by `build.rs` to write the
//! int8 model and by the run time to read it back. Both sides compile this same file (build.rs
//! includes it by path), so the names and parameters cannot drift apart.
//!
//! Per-axis quantisation never reaches these operators: tract-onnx expands it into casts and
//! arithmetic, which NNEF already covers.

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::element_wise::ElementWiseOp;
use tract_nnef::tract_core::ops::quant::{
    quantize_linear_i8, quantize_linear_u8, DequantizeLinearF32, QuantizeLinearI8, QuantizeLinearU8,
};

const QUANTIZE_U8: &str = "facegate_quantize_linear_u8";
const QUANTIZE_I8: &str = "facegate_quantize_linear_i8";
const DEQUANTIZE: &str = "facegate_dequantize_linear_f32";

/// The registry to add to `tract_nnef::nnef()` wherever the int8 model is written or read.
pub fn registry() -> Registry {
    let mut r = Registry::new("facegate_quant");
    r.register_element_wise(QUANTIZE_U8, TypeId::of::<QuantizeLinearU8>(), Box::new(dump_quantize), params(), load_u8);
    r.register_element_wise(QUANTIZE_I8, TypeId::of::<QuantizeLinearI8>(), Box::new(dump_quantize), params(), load_i8);
    r.register_dumper(dump_dequantize);
    r.register_primitive(DEQUANTIZE, &params(), &[("output", TypeName::Scalar.tensor())], load_dequantize);
    r
}

fn params() -> Vec<Parameter> {
    vec![
        TypeName::Scalar.tensor().named("input"),
        TypeName::Scalar.named("scale"),
        TypeName::Integer.named("zero_point"),
    ]
}

fn dump_quantize(ast: &mut IntoAst, node: &TypedNode) -> TractResult<Option<Arc<RValue>>> {
    let Some(op) = node.op_as::<ElementWiseOp>() else { return Ok(None) };
    let (id, scale, zero_point) = if let Some(q) = op.0.downcast_ref::<QuantizeLinearU8>() {
        (QUANTIZE_U8, q.scale, q.zero_point as i64)
    } else if let Some(q) = op.0.downcast_ref::<QuantizeLinearI8>() {
        (QUANTIZE_I8, q.scale, q.zero_point as i64)
    } else {
        return Ok(None);
    };
    let input = ast.mapping[&node.inputs[0]].clone();
    Ok(Some(invocation(id, &[input], &[("scale", numeric(scale)), ("zero_point", numeric(zero_point))])))
}

fn scale_and_zero_point(builder: &mut ModelBuilder, inv: &ResolvedInvocation) -> TractResult<(f32, i64)> {
    let scale: f32 = inv.named_arg_as(builder, "scale")?;
    let zero_point: i64 = inv.named_arg_as(builder, "zero_point")?;
    ensure!(scale.is_finite() && scale != 0.0, "quantisation scale {scale} is not usable");
    Ok((scale, zero_point))
}

fn load_u8(builder: &mut ModelBuilder, inv: &ResolvedInvocation) -> TractResult<Value> {
    let input = inv.named_arg_as(builder, "input")?;
    let (scale, zp) = scale_and_zero_point(builder, inv)?;
    let zp = u8::try_from(zp).map_err(|_| format_err!("u8 zero point {zp} out of range"))?;
    builder.wire(quantize_linear_u8(scale, zp), &[input])
}

fn load_i8(builder: &mut ModelBuilder, inv: &ResolvedInvocation) -> TractResult<Value> {
    let input = inv.named_arg_as(builder, "input")?;
    let (scale, zp) = scale_and_zero_point(builder, inv)?;
    let zp = i8::try_from(zp).map_err(|_| format_err!("i8 zero point {zp} out of range"))?;
    builder.wire(quantize_linear_i8(scale, zp), &[input])
}

fn dump_dequantize(ast: &mut IntoAst, node: &TypedNode, op: &DequantizeLinearF32) -> TractResult<Option<Arc<RValue>>> {
    let input = ast.mapping[&node.inputs[0]].clone();
    Ok(Some(invocation(
        DEQUANTIZE,
        &[input],
        &[("scale", numeric(op.scale)), ("zero_point", numeric(op.zero_point as i64))],
    )))
}

fn load_dequantize(builder: &mut ModelBuilder, inv: &ResolvedInvocation) -> TractResult<Value> {
    let input = inv.named_arg_as(builder, "input")?;
    let (scale, zp) = scale_and_zero_point(builder, inv)?;
    let zp = i32::try_from(zp).map_err(|_| format_err!("zero point {zp} out of range"))?;
    builder.wire(DequantizeLinearF32::new(scale, zp), &[input])
}
