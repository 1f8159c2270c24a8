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
    let g = golden(name);
    let (manifest, network) = facegate::model::embedded_typed(name).unwrap();
    // The detector's size is symbolic in the NNEF: pin it to the golden input's.
    let hw = (manifest.task == facegate::model::Task::Detector).then(|| [g.input.shape()[2], g.input.shape()[3]]);
    let model = Model::from_typed(manifest, network, hw).unwrap();
    assert_eq!(g.input.shape(), model.input_shape.as_slice());
    let outputs = model.run(g.input.clone()).unwrap();
    for (out_name, expected, reference) in &g.outputs {
        let (got, _) = model.output(&outputs, out_name).unwrap();
        let tol = if reference.starts_with("onnxruntime") { CLOSE } else { APPROXIMATE };
        let diff = max_abs_diff(got, expected);
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
