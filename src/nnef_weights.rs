//! Weights stored as f16 in the embedded NNEF, computed in f32.
//!
//! A board binary embeds the detector and one per-face model; their float weights are most of
//! its size. [`write_tar`] writes a network as tract's NNEF writer does, except that every
//! large f32 weight is stored as f16 and read through `tract_core_cast(…, to = "f32")`. The
//! NNEF then holds half the bytes, and tract folds each cast into an f32 constant when the
//! model is optimised at load, so the plan and its speed are those of the f32 model; only the
//! weights' rounding differs (11 significant bits).
//!
//! The rewrite works on the serialised form (the proto model), after tract's own rewrites:
//! rewriting the graph instead does not survive, since the writer propagates constants and
//! would fold the casts straight back into f32 weights.
//!
//! `build.rs` uses it when `FACEGATE_WEIGHTS=f16` (`scripts/package` sets it) and
//! `tests/golden.rs` applies it to the f32 networks to check the outputs against the reference
//! runtime within the tolerance it names. Both sides compile this file.

use std::collections::HashSet;
use std::io::Write;

use tract_nnef::ast::{Argument, Invocation, Literal, ProtoModel, RValue};
use tract_nnef::internal::*;

/// Weights smaller than this stay f32: biases, batch-norm and PReLU parameters cost little
/// and carry the offsets that rounding would shift the most.
pub const MIN_ELEMENTS: usize = 1024;

/// The NNEF of `model` with its large f32 weights stored as f16, as a tar written to `w`
/// (entries in a fixed order with a fixed time stamp). Returns the writer and how many bytes
/// the stored weights shrank by. A quantized network (one with a `graph.quant`) is written
/// by tract unchanged: its float weights are few.
pub fn write_tar<W: Write>(nnef: &Nnef, model: &TypedModel, w: W) -> TractResult<(W, usize)> {
    let mut proto = tract_nnef::ser::to_proto_model(nnef, model)?;
    if proto.quantization.as_ref().is_some_and(|q| !q.is_empty()) || !proto.resources.is_empty() {
        return Ok((nnef.write_to_tar_with_config(model, w, false, true)?, 0));
    }
    let saved = narrow_weights(&mut proto)?;

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

/// Replaces each large f32 tensor of `proto` by its f16 rounding and wraps the `variable`
/// that reads it in a cast back to f32. Returns the bytes saved.
fn narrow_weights(proto: &mut ProtoModel) -> TractResult<usize> {
    let mut narrowed = HashSet::new();
    let mut saved = 0;
    for (label, tensor) in proto.tensors.iter_mut() {
        if tensor.datum_type() == f32::datum_type() && tensor.len() >= MIN_ELEMENTS {
            saved += tensor.len() * 2;
            *tensor = tensor.cast_to_dt(f16::datum_type())?.into_owned().into_arc_tensor();
            narrowed.insert(label.0.clone());
        }
    }
    let mut wrapped = 0;
    for assignment in proto.doc.graph_def.body.iter_mut() {
        if variable_label(&assignment.right).is_some_and(|l| narrowed.contains(l)) {
            let variable = std::mem::replace(&mut assignment.right, RValue::Tuple(vec![]));
            assignment.right = RValue::Invocation(Invocation {
                id: "tract_core_cast".into(),
                generic_type_name: None,
                arguments: vec![
                    Argument { id: None, rvalue: variable },
                    Argument {
                        id: Some("to".into()),
                        rvalue: RValue::Literal(Literal::String("f32".into())),
                    },
                ],
            });
            wrapped += 1;
        }
    }
    ensure!(wrapped == narrowed.len(), "{} f16 tensors but {wrapped} variables read them", narrowed.len());
    let core = (Identifier::from("tract_registry"), "tract_core".to_string());
    if wrapped > 0 && !proto.doc.extension.contains(&core) {
        proto.doc.extension.push(core);
    }
    Ok(saved)
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
