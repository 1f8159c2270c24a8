//! Models as data with a contract: the manifest beside each model, the NNEF converted from it
//! at build time and embedded in the binary, and the checks run when a model is loaded.
//!
//! Loading pins the input shape, checks the output count and shapes against the manifest, and
//! runs one warm-up that must give finite values. Preprocessing (layout, colour order, mean and
//! std) is read from the manifest, never guessed from tensor shapes.

use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

use tract_core::internal::DimLike;
use tract_core::prelude::*;

use crate::error::ModelError;

/// One model compiled into the binary by `build.rs`.
pub(crate) struct EmbeddedModel {
    pub name: &'static str,
    pub manifest: &'static str,
    pub nnef: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/embedded_models.rs"));

/// Names of the models compiled into this binary.
pub fn embedded_names() -> Vec<&'static str> {
    EMBEDDED_MODELS.iter().map(|m| m.name).collect()
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Detector,
    Embedder,
    Attributes,
    Multitask,
    /// Presentation-attack detection on a crop of the frame around the face box.
    Liveness,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Layout {
    NCHW,
    NHWC,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Colour {
    RGB,
    BGR,
}

#[derive(Clone, Debug, Deserialize)]
pub struct OutputSpec {
    pub name: String,
    /// `-1` marks a dimension that depends on a symbolic input dimension.
    pub shape: Vec<i64>,
    #[serde(default)]
    pub meaning: String,
}

/// The manifest `models/<name>.toml`; see `models/README.md` for the fields.
#[derive(Clone, Debug, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub task: Task,
    pub file: String,
    pub sha256: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub licence: String,
    pub layout: Layout,
    pub colour: Colour,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// `[height, width]`; the detector's can be changed at build time.
    pub input_size: [usize; 2],
    pub outputs: Vec<OutputSpec>,
    // Detector.
    pub score_threshold: Option<f32>,
    pub nms_iou: Option<f32>,
    pub stride: Option<usize>,
    // Embedder.
    pub embedding_dim: Option<usize>,
    pub template: Option<[[f32; 2]; 5]>,
    /// Cosine similarity at or above which two faces are called the same person.
    pub match_threshold: Option<f32>,
    /// How `match_threshold` was calibrated, and the 1:N rule (`facegate calibrate`).
    #[serde(default)]
    pub calibration: Option<crate::config::Calibration>,
    /// The embedding space a multi-task model shares with its teacher embedder (galleries are
    /// bound to the space, see [`fingerprint`]).
    #[serde(default)]
    pub embedding_space: Option<EmbeddingSpace>,
    // Attributes.
    pub align_zoom: Option<f32>,
    pub age_rule: Option<String>,
    /// Multi-task: faceness at or above which a crop counts as a face.
    pub face_threshold: Option<f32>,
    // Liveness.
    /// The crop's side over the face box's (the box scaled about its centre).
    pub crop_scale: Option<f32>,
    /// Index of the live class in the `probs` output.
    pub live_class: Option<usize>,
}

/// The embedder whose embeddings a model reproduces: its name and ONNX sha256.
#[derive(Clone, Debug, Deserialize)]
pub struct EmbeddingSpace {
    pub name: String,
    pub sha256: String,
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, ModelError> {
        toml::from_str(text).map_err(|e| ModelError::Manifest {
            model: "?".into(),
            detail: e.to_string(),
        })
    }

    pub fn output_index(&self, name: &str) -> Result<usize, ModelError> {
        self.outputs.iter().position(|o| o.name == name).ok_or_else(|| ModelError::Manifest {
            model: self.name.clone(),
            detail: format!("no output named {name:?}"),
        })
    }

    fn invalid(&self, detail: impl Into<String>) -> ModelError {
        ModelError::Manifest { model: self.name.clone(), detail: detail.into() }
    }

    /// Fields the manifest must carry for its task, checked before anything is built.
    fn validate(&self) -> Result<(), ModelError> {
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(self.invalid("std must be finite and non-zero"));
        }
        match self.task {
            Task::Detector => {
                if self.score_threshold.is_none() || self.stride.is_none() {
                    return Err(self.invalid("a detector needs score_threshold and stride"));
                }
            }
            Task::Embedder | Task::Multitask => {
                if self.embedding_dim.is_none() || self.template.is_none() {
                    return Err(self.invalid("an embedder needs embedding_dim and template"));
                }
                if let Some(c) = &self.calibration {
                    c.validate().map_err(|e| self.invalid(format!("{e:#}")))?;
                    if self.match_threshold != Some(c.threshold) {
                        return Err(self.invalid("match_threshold must equal calibration.threshold"));
                    }
                }
            }
            Task::Attributes => {
                if self.align_zoom.is_none() {
                    return Err(self.invalid("an attribute model needs align_zoom"));
                }
            }
            Task::Liveness => {
                if !self.crop_scale.is_some_and(|s| s.is_finite() && s > 0.0) {
                    return Err(self.invalid("a liveness model needs a positive crop_scale"));
                }
                let classes = self.outputs.first().and_then(|o| o.shape.last()).copied().unwrap_or(0);
                if !self.live_class.is_some_and(|c| (c as i64) < classes) {
                    return Err(self.invalid("a liveness model needs live_class within its output"));
                }
            }
        }
        Ok(())
    }
}

/// A loaded, optimised model ready to run. Plans are `Send + Sync`.
pub struct Model {
    pub manifest: Manifest,
    plan: Arc<TypedRunnableModel>,
    /// The input shape pinned at build time.
    pub input_shape: Vec<usize>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.manifest.name).finish()
    }
}

thread_local! {
    static NNEF: tract_nnef::framework::Nnef = tract_nnef::nnef().with_registry(crate::nnef_quant::registry());
}

/// The embedded NNEF bytes of model `name`, as `build.rs` wrote them.
pub fn embedded_nnef(name: &str) -> Result<&'static [u8], ModelError> {
    Ok(find(name)?.nnef)
}

/// Pins a symbolic-size network (`[1, 3, 32·h, 32·w]`, as `build.rs` stores the detector) to
/// `[height, width]`, both non-zero multiples of 32. A network without those symbols is
/// returned unchanged.
pub fn pin_input_size(typed: TypedModel, [h, w]: [usize; 2]) -> anyhow::Result<TypedModel> {
    if h == 0 || w == 0 || h % 32 != 0 || w % 32 != 0 {
        return Err(ModelError::Contract {
            model: typed.name().unwrap_or("?").to_string(),
            detail: format!("input {w}x{h} must be a non-zero multiple of 32 on each side"),
        }
        .into());
    }
    let mut subs = HashMap::new();
    for (sym, v) in [("h", h / 32), ("w", w / 32)] {
        if let Some(s) = typed.symbols.get(sym) {
            subs.insert(s, TDim::from(v as i64));
        }
    }
    typed.set_symbols(&subs)
}

/// Keeps freed memory in the process rather than returning it to the system (glibc on 64-bit
/// Linux). A model run allocates and frees tensors of up to tens of MB; with glibc's defaults
/// the larger ones are mapped and unmapped, or the heap trimmed, between runs, so every run
/// faulted its pages in again, zeroed by the kernel: `analyze` with the teachers took 3,300
/// page faults per image and 18 % more time (`perf stat`, 60 celeba-id photos). Call it once,
/// first thing in `main`; the heap then stays at its peak (tens of MB).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    // SAFETY: mallopt only sets two of the allocator's parameters, to values glibc accepts
    // (its ceiling for the mapping threshold is 32 MB on 64-bit).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// What loading does to a pinned network before planning it: tract's declutter, facegate's own
/// kernels in place of the ops tract runs slowly (`kernels`), then tract's code generation.
pub fn optimize(mut typed: TypedModel) -> TractResult<TypedModel> {
    typed.declutter()?;
    crate::kernels::substitute_depthwise(&mut typed)?;
    crate::kernels::substitute_dense(&mut typed)?;
    crate::kernels::substitute_upsample(&mut typed)?;
    crate::kernels::substitute_pointwise(&mut typed)?;
    crate::kernels::channels_first_prefixes(&mut typed)?;
    crate::kernels::substitute_blocks(&mut typed)?;
    typed.optimize()?;
    Ok(typed)
}

/// The embedded model's manifest and its network as stored, before pinning and optimising.
pub fn embedded_typed(name: &str) -> Result<(Manifest, TypedModel), ModelError> {
    let em = find(name)?;
    let manifest = embedded_manifest(name)?;
    let typed = NNEF
        .with(|fw| fw.model_for_read(&mut &em.nnef[..]))
        .map_err(|source| ModelError::Runtime { model: name.to_string(), source })?;
    Ok((manifest, typed))
}

/// The embedded model's manifest, without loading the network.
pub fn embedded_manifest(name: &str) -> Result<Manifest, ModelError> {
    let em = find(name)?;
    let mut m = Manifest::parse(em.manifest)?;
    m.name = em.name.to_string();
    Ok(m)
}

fn find(name: &str) -> Result<&'static EmbeddedModel, ModelError> {
    EMBEDDED_MODELS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| ModelError::Missing(name.to_string()))
}

/// Identity of an embedding space: the weights' hash, the preprocessing and the dimension.
/// A gallery made with another fingerprint holds vectors that cannot be compared.
///
/// A model that declares `[embedding_space]` (the multi-task models: their identity path is
/// MobileFaceNet's, frozen) is fingerprinted by that embedder's name and hash, so a gallery
/// enrolled with either is read by both. `tests/golden.rs` checks that the embeddings agree
/// (float: cosine ≥ 0.9999; int8: ≥ 0.98 on the bundled faces).
pub fn fingerprint(name: &str) -> Result<[u8; 32], ModelError> {
    let em = find(name)?;
    let m = embedded_manifest(name)?;
    let (space_sha, space_name) = match &m.embedding_space {
        Some(s) => (s.sha256.as_str(), s.name.as_str()),
        None => (m.sha256.as_str(), em.name),
    };
    let mut h = Sha256::new();
    h.update(space_sha.as_bytes());
    h.update(format!("{:?}|{:?}|{:?}|{:?}", m.layout, m.colour, m.mean, m.std).as_bytes());
    h.update(format!("{:?}|{:?}|{:?}", m.input_size, m.template, m.embedding_dim).as_bytes());
    h.update(space_name.as_bytes());
    Ok(h.finalize().into())
}

impl Model {
    /// Loads an embedded model whose input shape was pinned at build time.
    pub fn embedded(name: &str) -> Result<Model, ModelError> {
        let (manifest, typed) = embedded_typed(name)?;
        Model::from_typed(manifest, typed, None)
    }

    /// Pins a parsed model's symbolic input size (`[1, 3, 32·h, 32·w]` for the detector) to
    /// `input_hw`, checks it against its manifest, optimises it and runs the warm-up.
    pub fn from_typed(
        manifest: Manifest,
        mut typed: TypedModel,
        input_hw: Option<[usize; 2]>,
    ) -> Result<Model, ModelError> {
        manifest.validate()?;
        let name = manifest.name.clone();
        let rt = |source: anyhow::Error| ModelError::Runtime { model: name.clone(), source };
        if let Some(hw) = input_hw {
            typed = pin_input_size(typed, hw).map_err(|e| match e.downcast::<ModelError>() {
                Ok(ModelError::Contract { detail, .. }) => ModelError::Contract { model: name.clone(), detail },
                Ok(other) => other,
                Err(e) => rt(e),
            })?;
        }
        let fact = typed.input_fact(0).map_err(rt)?;
        let input_shape: Vec<usize> = fact
            .shape
            .iter()
            .map(|d| d.to_usize().ok())
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        let channels_at = match manifest.layout {
            Layout::NCHW => 1,
            Layout::NHWC => 3,
        };
        if input_shape.len() != 4 || input_shape[0] != 1 || input_shape[channels_at] != 3 {
            return Err(ModelError::Contract {
                model: name.clone(),
                detail: format!("input is {:?}, expected a 1×3-channel {:?} image", fact.shape, manifest.layout),
            });
        }
        if typed.outputs.len() != manifest.outputs.len() {
            return Err(ModelError::Contract {
                model: name.clone(),
                detail: format!(
                    "{} outputs, manifest lists {}",
                    typed.outputs.len(),
                    manifest.outputs.len()
                ),
            });
        }
        let optimized = optimize(typed).map_err(rt)?;
        let plan = TypedSimplePlan::new(optimized).map_err(rt)?;
        let model = Model { manifest, plan, input_shape };
        model.warm_up()?;
        Ok(model)
    }

    /// One run on a mid-grey input: every output must have the manifest's shape and be finite.
    fn warm_up(&self) -> Result<(), ModelError> {
        let input = Tensor::from_shape(&self.input_shape, &vec![0.5f32; self.input_shape.iter().product()])
            .map_err(|e| ModelError::Runtime { model: self.manifest.name.clone(), source: e })?;
        let outputs = self.run(input)?;
        for (spec, out) in self.manifest.outputs.iter().zip(outputs.iter()) {
            let shape = out.shape();
            let fits = spec.shape.len() == shape.len()
                && spec.shape.iter().zip(shape).all(|(&want, &got)| want < 0 || want as usize == got);
            if !fits {
                return Err(self.contract(format!(
                    "output {:?} has shape {shape:?}, manifest says {:?}",
                    spec.name, spec.shape
                )));
            }
            let view = out
                .to_plain_array_view::<f32>()
                .map_err(|e| ModelError::Runtime { model: self.manifest.name.clone(), source: e })?;
            if view.iter().any(|v| !v.is_finite()) {
                return Err(self.contract(format!("output {:?} is not finite on warm-up", spec.name)));
            }
        }
        Ok(())
    }

    fn contract(&self, detail: String) -> ModelError {
        ModelError::Contract { model: self.manifest.name.clone(), detail }
    }

    /// `[height, width]` of the input.
    pub fn input_hw(&self) -> [usize; 2] {
        match self.manifest.layout {
            Layout::NCHW => [self.input_shape[2], self.input_shape[3]],
            Layout::NHWC => [self.input_shape[1], self.input_shape[2]],
        }
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Runs the model on one input tensor of [`Model::input_shape`].
    pub fn run(&self, input: Tensor) -> Result<TVec<TValue>, ModelError> {
        self.plan
            .run(tvec![input.into_tvalue()])
            .map_err(|e| ModelError::Runtime { model: self.manifest.name.clone(), source: e })
    }

    /// Output `name` of `outputs` as a flat f32 slice with its shape.
    pub fn output<'a>(
        &self,
        outputs: &'a TVec<TValue>,
        name: &str,
    ) -> Result<(&'a [f32], &'a [usize]), ModelError> {
        let ix = self.manifest.output_index(name)?;
        let t = outputs.get(ix).ok_or_else(|| self.contract(format!("missing output {name:?}")))?;
        let slice = t
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(|e| ModelError::Runtime { model: self.manifest.name.clone(), source: e })?;
        Ok((slice, t.shape()))
    }

    /// Turns an RGB crop of exactly the model's input size into the input tensor, applying the
    /// manifest's layout, colour order, mean and std.
    pub fn input_from_rgb(&self, rgb: &image::RgbImage) -> Result<Tensor, ModelError> {
        let [h, w] = self.input_hw();
        if rgb.width() as usize != w || rgb.height() as usize != h {
            return Err(self.contract(format!(
                "crop is {}x{}, the input is {w}x{h}",
                rgb.width(),
                rgb.height()
            )));
        }
        let m = &self.manifest;
        let order = match m.colour {
            Colour::RGB => [0, 1, 2],
            Colour::BGR => [2, 1, 0],
        };
        let scale = [1.0 / m.std[0], 1.0 / m.std[1], 1.0 / m.std[2]];
        let mut data = vec![0f32; h * w * 3];
        let px = rgb.as_raw();
        match m.layout {
            Layout::NHWC => {
                for (dst, src) in data.chunks_exact_mut(3).zip(px.chunks_exact(3)) {
                    for c in 0..3 {
                        dst[c] = (src[order[c]] as f32 - m.mean[c]) * scale[c];
                    }
                }
            }
            Layout::NCHW => {
                let plane = h * w;
                for (i, src) in px.chunks_exact(3).enumerate() {
                    for c in 0..3 {
                        data[c * plane + i] = (src[order[c]] as f32 - m.mean[c]) * scale[c];
                    }
                }
            }
        }
        Tensor::from_shape(&self.input_shape, &data)
            .map_err(|e| ModelError::Runtime { model: m.name.clone(), source: e })
    }
}

#[cfg(test)]
mod tests {
    /// After `keep_freed_memory`, a tensor-sized buffer freed and allocated again reuses pages
    /// the process already holds: the second round takes (almost) no page faults, where glibc's
    /// defaults unmap the buffer and fault every page in again (5,000 for 20 MB).
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    #[test]
    fn freed_tensor_memory_is_reused_without_page_faults() {
        fn minor_faults() -> i64 {
            // SAFETY: getrusage writes the struct it is given.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) }, 0);
            usage.ru_minflt
        }
        super::keep_freed_memory();
        let touch = || {
            let buffer = vec![1u8; 20 << 20];
            std::hint::black_box(&buffer);
        };
        touch();
        let before = minor_faults();
        touch();
        let faults = minor_faults() - before;
        assert!(faults < 500, "{faults} page faults re-allocating 20 MB");
    }
}
