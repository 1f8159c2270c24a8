//! Converts the ONNX models in `models/` to NNEF at build time.
//!
//! For every manifest `models/<name>.toml` that names an ONNX `file`: check the file's sha256
//! against the manifest, load it with tract-onnx, pin the input shape from the manifest (the
//! detector keeps a symbolic size, pinned per frame at run time), declutter, and write an NNEF
//! tar into `OUT_DIR`. `embedded_models.rs` in `OUT_DIR` then lists the manifests and NNEF
//! bytes for `include_bytes!`. At run time only tract-core and tract-nnef are needed. No network: everything comes from the repository.
//!
//! `FACEGATE_MODELS=centerface,mtl` (names, comma-separated) embeds only those models: a board
//! build needs the detector and one per-face model, not the teachers and both variants.
//! `FACEGATE_WEIGHTS=f16` (or `i8`) stores the large weights as f16 (or int8 with a scale per
//! output channel), widened to f32 at load (`src/nnef_weights.rs`): half (a quarter of) the
//! embedded bytes, the same plan and speed. `FACEGATE_NNEF_GZIP=1` gzips each NNEF tar (tract-nnef
//! reads gzip by its magic bytes): a quarter less to embed for boards, a few milliseconds more at
//! start-up to inflate it.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use anyhow::{bail, ensure, Context as _};
use tract_onnx::prelude::*;

// The NNEF operators of int8 models, shared with the run time (`src/nnef_quant.rs`).
#[path = "src/nnef_quant.rs"]
#[allow(dead_code)]
mod nnef_quant;
#[path = "src/nnef_weights.rs"]
mod nnef_weights;
use nnef_weights::Storage;

#[derive(Deserialize)]
struct Manifest {
    name: String,
    task: String,
    file: String,
    sha256: String,
    layout: String,
    input_size: [usize; 2],
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let models = root.join("models");
    println!("cargo:rerun-if-changed={}", models.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/nnef_quant.rs");
    println!("cargo:rerun-if-changed=src/nnef_weights.rs");
    println!("cargo:rerun-if-env-changed=FACEGATE_WEIGHTS");
    println!("cargo:rerun-if-env-changed=FACEGATE_NNEF_GZIP");
    let gzip = std::env::var("FACEGATE_NNEF_GZIP").is_ok_and(|v| v == "1");
    // How the embedded NNEF stores the large float weights: None keeps f32.
    let storage = Storage::from_env_value(&std::env::var("FACEGATE_WEIGHTS").unwrap_or_default())
        .unwrap_or_else(|e| fail(&e));

    let mut manifests: Vec<PathBuf> = fs::read_dir(&models)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    manifests.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    manifests.sort();

    println!("cargo:rerun-if-env-changed=FACEGATE_MODELS");
    let only: Option<Vec<String>> = std::env::var("FACEGATE_MODELS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.split(',').map(|n| n.trim().to_string()).collect());
    let mut embedded = Vec::new();
    let mut listing = String::from("pub(crate) static EMBEDDED_MODELS: &[EmbeddedModel] = &[\n");
    for path in &manifests {
        println!("cargo:rerun-if-changed={}", path.display());
        let manifest = match read_manifest(path) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => fail(&format!("manifest {}: {e}", path.display())),
        };
        if only.as_ref().is_some_and(|names| !names.contains(&manifest.name)) {
            continue;
        }
        embedded.push(manifest.name.clone());
        let onnx = models.join(&manifest.file);
        println!("cargo:rerun-if-changed={}", onnx.display());
        let nnef = out.join(format!("{}.nnef.tar", manifest.name));
        if let Err(e) = convert(&manifest, &onnx, &nnef, storage, gzip) {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            fail(&format!(
                "model `{}` ({}) could not be converted to NNEF:\n  {}",
                manifest.name,
                onnx.display(),
                chain.join("\n  ")
            ));
        }
        writeln!(
            listing,
            "    EmbeddedModel {{ name: {:?}, manifest: include_str!({:?}), nnef: include_bytes!({:?}) }},",
            manifest.name,
            path.display().to_string(),
            nnef.display().to_string(),
        )
        .unwrap();
    }
    if let Some(names) = &only {
        if let Some(missing) = names.iter().find(|n| !embedded.contains(n)) {
            fail(&format!("FACEGATE_MODELS names {missing:?}, which has no manifest in models/"));
        }
    }
    listing.push_str("];\n");
    let stored = storage.map_or("f32", Storage::name);
    writeln!(listing, "/// How the embedded NNEF stores the large float weights (`FACEGATE_WEIGHTS` at build time).").unwrap();
    writeln!(listing, "pub const WEIGHTS: &str = {stored:?};").unwrap();
    fs::write(out.join("embedded_models.rs"), listing).unwrap();
}

fn fail(msg: &str) -> ! {
    // Cargo shows a build script's stderr when it fails; a panic would bury the message.
    eprintln!("error: facegate build: {msg}");
    std::process::exit(1);
}

/// `Ok(None)` for TOML files in `models/` that are not model manifests.
fn read_manifest(path: &Path) -> Result<Option<Manifest>, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    let value: toml::Value = toml::from_str(&text).map_err(|e| e.to_string())?;
    if value.get("task").is_none() || value.get("file").is_none() {
        return Ok(None);
    }
    value.try_into().map(Some).map_err(|e| e.to_string())
}

fn convert(m: &Manifest, onnx: &Path, nnef: &Path, storage: Option<Storage>, gzip: bool) -> TractResult<()> {
    let bytes = fs::read(onnx).with_context(|| format!("reading {}", onnx.display()))?;
    let digest = format!("{:x}", Sha256::digest(&bytes));
    ensure!(
        digest == m.sha256,
        "sha256 of {} is {digest}, the manifest says {}",
        onnx.display(),
        m.sha256
    );
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_read(&mut &bytes[..])?;
    let [h, w] = m.input_size;
    let shape: TVec<TDim> = match (m.task.as_str(), m.layout.as_str()) {
        // The detector is fully convolutional and its size is chosen at run time per frame, so
        // its sides stay symbolic: 32·h × 32·w, which makes every stride-2 stage divide exactly.
        ("detector", "NCHW") => {
            let (hs, ws) = (model.symbols.sym("h"), model.symbols.sym("w"));
            tvec![1.into(), 3.into(), TDim::from(hs) * 32, TDim::from(ws) * 32]
        }
        (_, "NCHW") => tvec![1.into(), 3.into(), h.into(), w.into()],
        (_, "NHWC") => tvec![1.into(), h.into(), w.into(), 3.into()],
        (_, other) => bail!("unknown layout {other:?}"),
    };
    model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))?;
    let typed = model.into_typed()?;
    // tract 0.23.9 cannot write the decluttered symbolic detector to NNEF: declutter turns 1×1
    // convolutions into reshapes over H·W products it cannot serialise (`TDim` max/broadcast).
    // The detector is decluttered at load, after its size is pinned.
    let typed = if m.task == "detector" { typed } else { typed.into_decluttered()? };
    let writer = tract_nnef::nnef().with_registry(nnef_quant::registry());
    let tar = match storage {
        None => writer.write_to_tar(&typed, Vec::new())?,
        Some(storage) => nnef_weights::write_tar(&writer, &typed, storage, Vec::new())?.0,
    };
    if gzip {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(fs::File::create(nnef)?, flate2::Compression::best());
        gz.write_all(&tar)?;
        gz.finish()?.sync_all()?;
    } else {
        fs::write(nnef, tar)?;
    }
    Ok(())
}
