//! Golden tests: each embedded model, run by tract from the NNEF compiled into the binary, on a
//! committed preprocessed input, against outputs of the reference runtimes (`models/golden/`).

mod common;

use common::*;
use facegate::model::Model;
use tract_core::prelude::*;

/// Tract against onnxruntime on the same ONNX: kernels differ in summation order only.
/// Measured on x86: at most 4e-5 (CenterFace scale map), 3e-7 (embedding). ARM kernels differ
/// slightly more, hence the margin.
const CLOSE: f32 = 2e-4;
/// Against the original runtime of the unconverted model (tflite, tfjs): conversion plus kernels.
const APPROXIMATE: f32 = 1e-3;
/// The int8 model, tract's integer kernels against onnxruntime's: both requantise each
/// QLinearConv output to uint8, and a value on a rounding edge lands one step apart, which the
/// following layers carry. Probabilities within QUANTIZED_PROB; the embedding (a unit vector,
/// compared by cosine as it is used) within QUANTIZED_MIN_COSINE. Measured on x86: probabilities
/// 4.9e-3 (age bins), embedding cosine 0.9978 (max abs 2.8e-2): the two int8 runtimes are about
/// as far apart as each is from the float model (0.9964 on this face), in other directions.
/// What the product needs, int8 close to float, is checked on real faces in tests/pipeline.rs.
const QUANTIZED_PROB: f32 = 2e-2;
const QUANTIZED_MIN_COSINE: f32 = 0.993;
/// Float weights stored as f16 (`FACEGATE_WEIGHTS=f16`, what the board packages embed): the
/// rounding of every large weight to 11 significant bits, against onnxruntime on the f32 ONNX,
/// as a fraction of each output's range. Measured on x86 (`narrow_weights_stay_close_to_the_reference`):
/// CenterFace 4.5e-4 (heatmap) to 7.0e-3 (landmarks), the multi-task heads below 4e-5, the
/// embedding's cosine 0.9999996.
const F16_WEIGHTS: f32 = 1e-2;
const F16_MIN_COSINE: f32 = 0.99999;
/// Float weights stored as int8 with a scale per output channel (`FACEGATE_WEIGHTS=i8`, what
/// the board packages embed), computed in f32; measured on x86 the same way: CenterFace 1.8e-2
/// (heatmap) to 8.2e-2 (landmark offsets, in box sizes), the multi-task heads below 1.3e-3, the
/// embedding's cosine 0.99962. End to end on celeba-id (README): verification 94.30 % against
/// 94.23 % with f32 weights.
const I8_WEIGHTS: f32 = 0.1;
const I8_MIN_COSINE: f32 = 0.999;

struct Golden {
    input: Tensor,
    outputs: Vec<(String, Vec<f32>, String)>,
}

fn golden(name: &str) -> Golden {
    let dir = root().join("models/golden");
    let g = read_toml(&dir.join(format!("{name}.toml")));
    let shape: Vec<usize> =
        g["input_shape"].as_array().unwrap().iter().map(|v| v.as_integer().unwrap() as usize).collect();
    let file = dir.join(g["input_file"].as_str().unwrap());
    let data: Vec<f32> = match g["input_dtype"].as_str().unwrap() {
        "u8" => std::fs::read(&file).unwrap().into_iter().map(f32::from).collect(),
        "f32" => read_f32(&file),
        other => panic!("unknown dtype {other}"),
    };
    let input = Tensor::from_shape(&shape, &data).unwrap();
    let outputs = g["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_string(),
                read_f32(&dir.join(o["file"].as_str().unwrap())),
                o["reference"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    Golden { input, outputs }
}

fn check(name: &str) {
    // A binary built with FACEGATE_WEIGHTS=f16 or i8 runs rounded weights: their tolerance,
    // relative to each output's range (check_within).
    let floor = match facegate::model::WEIGHTS {
        "f16" => F16_WEIGHTS,
        "i8" => I8_WEIGHTS,
        _ => 0.0,
    };
    check_within(name, |reference| {
        floor.max(if reference.starts_with("onnxruntime") { CLOSE } else { APPROXIMATE })
    })
}

/// An output's largest magnitude, at least 1: narrow weights' error scales with the values
/// (the detector's log-scales reach about 5), so their tolerances are fractions of it.
fn output_range(expected: &[f32]) -> f32 {
    expected.iter().fold(1f32, |m, v| m.max(v.abs()))
}

/// The divisor of an output's differences: its range in a build with narrow weights, else 1.
fn range(expected: &[f32]) -> f32 {
    if facegate::model::WEIGHTS == "f32" { 1.0 } else { output_range(expected) }
}

fn check_within(name: &str, tolerance: impl Fn(&str) -> f32) {
    let g = golden(name);
    let (manifest, network) = facegate::model::embedded_typed(name).unwrap();
    // The detector's size is symbolic in the NNEF: pin it to the golden input's.
    let hw = (manifest.task == facegate::model::Task::Detector).then(|| [g.input.shape()[2], g.input.shape()[3]]);
    let model = Model::from_typed(manifest, network, hw).unwrap();
    assert_eq!(g.input.shape(), model.input_shape.as_slice());
    let outputs = model.run(g.input.clone()).unwrap();
    for (out_name, expected, reference) in &g.outputs {
        let (got, _) = model.output(&outputs, out_name).unwrap();
        let tol = tolerance(reference);
        let diff = max_abs_diff(got, expected) / range(expected);
        eprintln!("{name}.{out_name} vs {reference}: max abs diff {diff:.2e} (tolerance {tol:.0e})");
        assert!(diff <= tol, "{name}.{out_name} differs from {reference} by {diff}");
    }
}

#[test]
fn centerface_matches_onnxruntime() {
    check("centerface");
}

#[test]
fn mobilefacenet_matches_onnxruntime_and_tflite() {
    check("mobilefacenet");
}

#[test]
fn faceres_matches_onnxruntime_and_tfjs() {
    check("faceres");
}

#[test]
fn multitask_matches_onnxruntime() {
    check("mtl");
}

/// The liveness models (#19) on the 80×80 crop of obama.jpg that the reference's crop rule makes,
/// against PyTorch on the published state dicts.
#[test]
fn liveness_models_match_pytorch() {
    check("minifasnet-v2");
    check("minifasnet-v1se");
}

#[test]
fn multitask_int8_matches_onnxruntime() {
    let g = golden("mtl-int8");
    let model = Model::embedded("mtl-int8").unwrap();
    let outputs = model.run(g.input.clone()).unwrap();
    for (out_name, expected, reference) in &g.outputs {
        let (got, _) = model.output(&outputs, out_name).unwrap();
        if out_name == "embedding" {
            let cos = cosine(got, expected);
            eprintln!("mtl-int8.embedding vs {reference}: cosine {cos:.6} (at least {QUANTIZED_MIN_COSINE}), max abs diff {:.2e}", max_abs_diff(got, expected));
            assert!(cos >= QUANTIZED_MIN_COSINE, "mtl-int8 embedding cosine {cos}");
        } else {
            let diff = max_abs_diff(got, expected);
            eprintln!("mtl-int8.{out_name} vs {reference}: max abs diff {diff:.2e} (tolerance {QUANTIZED_PROB:.0e})");
            assert!(diff <= QUANTIZED_PROB, "mtl-int8.{out_name} differs from {reference} by {diff}");
        }
    }
}

/// The multi-task models keep MobileFaceNet's embedding space (frozen identity path), which is
/// why galleries are shared between them (`model::fingerprint`): checked on the golden face.
#[test]
fn multitask_embeddings_share_the_teachers_space() {
    let g = golden("mobilefacenet");
    let embed = |name: &str| {
        let model = Model::embedded(name).unwrap();
        let outputs = model.run(g.input.clone()).unwrap();
        model.output(&outputs, "embedding").unwrap().0.to_vec()
    };
    let (teacher, float, int8) = (embed("mobilefacenet"), embed("mtl"), embed("mtl-int8"));
    let (c_float, c_int8) = (cosine(&float, &teacher), cosine(&int8, &float));
    eprintln!("golden face: cosine mtl/mobilefacenet {c_float:.7}, mtl-int8/mtl {c_int8:.5}");
    assert!(c_float >= 0.9999, "mtl vs mobilefacenet: {c_float}");
    assert!(c_int8 >= 0.98, "mtl-int8 vs mtl: {c_int8}");
    let fp = facegate::model::fingerprint("mobilefacenet").unwrap();
    assert_eq!(facegate::model::fingerprint("mtl").unwrap(), fp);
    assert_eq!(facegate::model::fingerprint("mtl-int8").unwrap(), fp);
    assert_ne!(facegate::model::fingerprint("faceres").unwrap(), fp);
}

/// Narrow weight storage (`src/nnef_weights.rs`, written by build.rs under
/// `FACEGATE_WEIGHTS=f16|i8`): the embedded networks written by the same function and read
/// back as the binary reads its own must shrink, fold back into the f32 model's plan when
/// optimised (the same number of nodes: no cast or scale left to run) and stay within the
/// storage's tolerance of the reference outputs (the embedding within its cosine).
#[test]
fn narrow_weights_stay_close_to_the_reference() {
    use facegate::nnef_weights::{write_tar, Storage};
    if facegate::model::WEIGHTS != "f32" {
        eprintln!(
            "skipped: this build embeds {} weights (FACEGATE_WEIGHTS); the golden tests above check them against the references",
            facegate::model::WEIGHTS
        );
        return;
    }
    for (storage, tolerance, min_cosine, max_share) in
        [(Storage::F16, F16_WEIGHTS, F16_MIN_COSINE, 0.6), (Storage::I8, I8_WEIGHTS, I8_MIN_COSINE, 0.35)]
    {
        for name in ["centerface", "mtl"] {
            let g = golden(name);
            let (manifest, network) = facegate::model::embedded_typed(name).unwrap();
            let hw = (manifest.task == facegate::model::Task::Detector).then(|| [g.input.shape()[2], g.input.shape()[3]]);
            // Node count, and how many depthwise layers run facegate's kernel: the narrow
            // weights must fold to constants before the substitution looks for them.
            let plan_nodes = |network: &TypedModel| {
                let pinned = facegate::model::pin_input_size(network.clone(), hw.unwrap_or([32, 32])).unwrap();
                let plan = facegate::model::optimize(pinned).unwrap();
                let ours = plan.nodes.iter().filter(|n| n.op_is::<facegate::kernels::Depthwise>()).count();
                assert!(ours > 0, "{name}: no depthwise layer substituted");
                (plan.nodes.len(), ours)
            };
            let f32_tar = tract_nnef::nnef().write_to_tar(&network, vec![]).unwrap();
            let (narrow_tar, saved) = write_tar(&tract_nnef::nnef(), &network, storage, vec![]).unwrap();
            eprintln!("{name} {storage:?}: NNEF {} -> {} bytes ({saved} bytes of weights saved)", f32_tar.len(), narrow_tar.len());
            let share = narrow_tar.len() as f64 / f32_tar.len() as f64;
            assert!(share < max_share, "{name} {storage:?}: NNEF is {share:.2} of the f32 one");
            let narrow = tract_nnef::nnef().model_for_read(&mut &narrow_tar[..]).unwrap();
            assert_eq!(plan_nodes(&narrow), plan_nodes(&network), "{name} {storage:?}: the optimised plans differ");
            let model = Model::from_typed(manifest, narrow, hw).unwrap();
            let outputs = model.run(g.input.clone()).unwrap();
            for (out_name, expected, reference) in &g.outputs {
                let (got, _) = model.output(&outputs, out_name).unwrap();
                let range = output_range(expected);
                let diff = max_abs_diff(got, expected) / range;
                let cos = cosine(got, expected);
                eprintln!("{name}.{out_name} ({storage:?} weights) vs {reference}: max abs diff {diff:.2e} of the range {range:.2} (tolerance {tolerance:.0e}), cosine {cos:.7}");
                if out_name == "embedding" {
                    assert!(cos >= min_cosine, "{name}.{out_name} {storage:?}: cosine {cos}");
                }
                assert!(diff <= tolerance, "{name}.{out_name} with {storage:?} weights differs from {reference} by {diff} of its range");
            }
        }
    }
}
