//! Float weights stored narrow in the embedded NNEF, computed in f32.
//!
//! A board binary embeds the detector and one per-face model; their float weights are most of
//! its size. [`write_tar`] writes a network as tract's NNEF writer does, except that every
//! large f32 weight is stored narrow and read back through a widening expression:
//!
//! * [`Storage::F16`]: the weight rounded to f16, read as `tract_core_cast(w, to = "f32")`;
//!   half the bytes, 11 significant bits.
//! * [`Storage::I8`]: the weight as int8 with one f32 scale per row (per output channel of a
//!   convolution: the first axis), read as `mul(tract_core_cast(q, to = "f32"), scale)`; a
//!   quarter of the bytes. This is storage only: the network still computes in f32, unlike
//!   the `mtl-int8` model, whose convolutions run in int8.
//!
//! tract folds these constant expressions into f32 weights when the model is optimised at
//! load, so the plan and its speed are those of the f32 model; only the weights' rounding
//! differs.
//!
//! The rewrite works on the serialised form (the proto model), after tract's own rewrites:
//! rewriting the graph instead does not survive, since the writer propagates constants and
//! would fold the casts straight back into f32 weights.
//!
//! `build.rs` uses it under `FACEGATE_WEIGHTS=f16|i8` (`scripts/package` sets it) and
//! `tests/golden.rs` applies it to the f32 networks to check the outputs against the reference
//! runtime within the tolerances it names. Both sides compile this file.

use std::collections::HashMap;
use std::io::Write;

use tract_nnef::ast::{Argument, Invocation, Literal, ProtoModel, RValue};
use tract_nnef::internal::*;

/// How the large float weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    F16,
    I8,
}

impl Storage {
    /// `FACEGATE_WEIGHTS`' value: `None` for f32 (unset, empty or `f32`), else the storage.
    pub fn from_env_value(value: &str) -> Result<Option<Storage>, String> {
        match value.trim() {
            "" | "f32" => Ok(None),
            "f16" => Ok(Some(Storage::F16)),
            "i8" => Ok(Some(Storage::I8)),
            other => Err(format!("FACEGATE_WEIGHTS is {other:?}; use f32 (the default), f16 or i8")),
        }
    }

    /// The name `FACEGATE_WEIGHTS` and `facegate::model::WEIGHTS` use.
    pub fn name(self) -> &'static str {
        match self {
            Storage::F16 => "f16",
            Storage::I8 => "i8",
        }
    }
}

/// Weights smaller than this stay f32: biases, batch-norm and PReLU parameters cost little
/// and carry the offsets that rounding would shift the most.
pub const MIN_ELEMENTS: usize = 1024;

/// The NNEF of `model` with its large f32 weights stored as `storage`, as a tar written to `w`
/// (entries in a fixed order with a fixed time stamp). Returns the writer and how many bytes
/// the stored weights shrank by. A quantized network (one with a `graph.quant`) is written
/// by tract unchanged: its float weights are few.
pub fn write_tar<W: Write>(
    nnef: &Nnef,
    model: &TypedModel,
    storage: Storage,
    w: W,
) -> TractResult<(W, usize)> {
    let mut proto = tract_nnef::ser::to_proto_model(nnef, model)?;
    if proto.quantization.as_ref().is_some_and(|q| !q.is_empty()) || !proto.resources.is_empty() {
        return Ok((nnef.write_to_tar_with_config(model, w, false, true)?, 0));
    }
    let saved = narrow_weights(&mut proto, storage)?;

    let mut ar = tar::Builder::new(w);
    let mut graph = vec![];
    tract_nnef::ast::dump::Dumper::new(nnef, &mut graph).document(&proto.doc)?;
    append(&mut ar, "graph.nnef", &graph)?;
    let mut labels: Vec<&Identifier> = proto.tensors.keys().collect();
    labels.sort();
    for label in labels {
        let mut data = vec![];
        tract_nnef::tensors::write_tensor(&mut data, &proto.tensors[label])?;
        append(&mut ar, &format!("{}.dat", label.0.trim_start_matches('/')), &data)?;
    }
    Ok((ar.into_inner()?, saved))
}

/// Replaces each large f32 tensor of `proto` by its narrow form and the `variable` that reads
/// it by the expression that widens it back to f32. Returns the bytes saved.
fn narrow_weights(proto: &mut ProtoModel, storage: Storage) -> TractResult<usize> {
    let wide: Vec<Identifier> = proto
        .tensors
        .iter()
        .filter(|(_, t)| t.datum_type() == f32::datum_type() && t.len() >= MIN_ELEMENTS)
        .map(|(label, _)| label.clone())
        .collect();
    let mut scales = HashMap::new();
    let mut saved = 0;
    for label in &wide {
        let tensor = proto.tensors[label].clone();
        let narrow = match storage {
            Storage::F16 => tensor.cast_to_dt(f16::datum_type())?.into_owned(),
            Storage::I8 => {
                let (q, scale) = quantize_rows(&tensor)?;
                let scale_label = Identifier(format!("{}.scale", label.0));
                saved -= scale.len() * 4;
                proto.tensors.insert(scale_label.clone(), scale.into_arc_tensor());
                scales.insert(label.0.clone(), scale_label);
                q
            }
        };
        saved += tensor.len() * 4 - narrow.len() * narrow.datum_type().size_of();
        proto.tensors.insert(label.clone(), narrow.into_arc_tensor());
    }
    let mut wrapped = 0;
    for assignment in proto.doc.graph_def.body.iter_mut() {
        let Some(label) = variable_label(&assignment.right).filter(|l| wide.iter().any(|w| w.0 == *l)) else {
            continue;
        };
        let label = label.to_string();
        let variable = std::mem::replace(&mut assignment.right, RValue::Tuple(vec![]));
        let widened = invocation("tract_core_cast", vec![(None, variable), (Some("to"), string("f32"))]);
        assignment.right = match scales.get(&label) {
            None => widened,
            Some(scale_label) => {
                let shape = proto.tensors[scale_label].shape().iter().map(|&d| numeric(d)).collect();
                let scale = invocation(
                    "variable",
                    vec![(Some("label"), string(&scale_label.0)), (Some("shape"), RValue::Array(shape))],
                );
                invocation("mul", vec![(None, widened), (None, scale)])
            }
        };
        wrapped += 1;
    }
    ensure!(wrapped == wide.len(), "{} narrowed tensors but {wrapped} variables read them", wide.len());
    let core = (Identifier::from("tract_registry"), "tract_core".to_string());
    if wrapped > 0 && !proto.doc.extension.contains(&core) {
        proto.doc.extension.push(core);
    }
    Ok(saved)
}

/// `tensor` as int8 with one scale per index of its first axis (`max |w| / 127` of that row),
/// the scale shaped `[rows, 1, …]` to broadcast against it. (A per-row search for the scale
/// with the least squared rounding error made the detector's outputs worse, not better.)
fn quantize_rows(tensor: &Tensor) -> TractResult<(Tensor, Tensor)> {
    let rows = tensor.shape()[0];
    let values: Vec<f32> = tensor.to_plain_array_view::<f32>()?.iter().copied().collect();
    let per_row = values.len() / rows;
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(rows);
    for row in values.chunks(per_row) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        q.extend(row.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8));
        scales.push(scale);
    }
    let mut scale_shape = vec![1; tensor.rank()];
    scale_shape[0] = rows;
    Ok((Tensor::from_shape(tensor.shape(), &q)?, Tensor::from_shape(&scale_shape, &scales)?))
}

fn invocation(id: &str, arguments: Vec<(Option<&str>, RValue)>) -> RValue {
    RValue::Invocation(Invocation {
        id: id.into(),
        generic_type_name: None,
        arguments: arguments
            .into_iter()
            .map(|(id, rvalue)| Argument { id: id.map(Identifier::from), rvalue })
            .collect(),
    })
}

fn string(s: &str) -> RValue {
    RValue::Literal(Literal::String(s.to_string()))
}

fn numeric(n: usize) -> RValue {
    RValue::Literal(Literal::Numeric(n.to_string()))
}

/// The `label` of a `variable(label = "…", …)` invocation.
fn variable_label(rvalue: &RValue) -> Option<&str> {
    let RValue::Invocation(inv) = rvalue else { return None };
    if inv.id.0 != "variable" {
        return None;
    }
    inv.arguments.iter().find_map(|a| match (&a.id, &a.rvalue) {
        (Some(id), RValue::Literal(Literal::String(s))) if id.0 == "label" => Some(s.as_str()),
        _ => None,
    })
}

fn append<W: Write>(ar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> TractResult<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    // 1 Jan 1980, as tract's deterministic writer: the same weights give the same bytes.
    header.set_mtime(315_532_800);
    header.set_cksum();
    ar.append_data(&mut header, path, data).with_context(|| format!("appending {path}"))
}
