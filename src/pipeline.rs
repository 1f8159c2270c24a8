//! The per-frame pipeline: detect, then align and analyse every face.
//!
//! Models are loaded once; [`Pipeline::analyze`] is called per frame and is what the CLI, the
//! tests and the benches share.

use image::RgbImage;

use crate::analyze::{AttributeModel, Embedder, FaceAnalysis};
use crate::detect::{Detection, Detector, DetectorConfig};
use crate::error::ModelError;
use crate::liveness::Liveness;

/// The per-face models: the multi-task network (the default), its int8 version, or the two
/// separate teacher models it was trained from (kept for comparison).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FaceModel {
    /// One multi-task run per face: embedding, age, gender, faceness (`models/mtl.toml`).
    #[default]
    Mtl,
    /// The same network with int8 pointwise convolutions (`models/mtl-int8.toml`).
    MtlInt8,
    /// MobileFaceNet (embedding) and HSE FaceRes (age, gender): two runs per face, no faceness.
    Teachers,
}

impl FaceModel {
    /// The first of `mtl`, `mtl-int8`, `teachers` whose models this build embeds (a board
    /// build made with `FACEGATE_MODELS` may hold only one); `mtl` when none is complete, so
    /// that loading names what is missing.
    pub fn default_embedded() -> FaceModel {
        let names = crate::model::embedded_names();
        [FaceModel::Mtl, FaceModel::MtlInt8, FaceModel::Teachers]
            .into_iter()
            .find(|m| {
                let (embedder, attributes) = m.models();
                names.contains(&embedder) && attributes.is_none_or(|a| names.contains(&a))
            })
            .unwrap_or_default()
    }

    /// `(embedder, attribute model)` by embedded name.
    pub fn models(self) -> (&'static str, Option<&'static str>) {
        match self {
            FaceModel::Mtl => ("mtl", None),
            FaceModel::MtlInt8 => ("mtl-int8", None),
            FaceModel::Teachers => ("mobilefacenet", Some("faceres")),
        }
    }
}

/// Which models to load, by embedded name.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub detector: String,
    /// The model run on the 112-px aligned crop: a multi-task model or an embedder.
    pub embedder: String,
    /// A separate age and gender model; `None` with a multi-task embedder (its own heads) or
    /// when age and gender are not wanted.
    pub attributes: Option<String>,
    pub detector_config: Option<DetectorConfig>,
    /// Load the liveness models ([`crate::liveness::MODELS`]); only commands that score
    /// liveness pay for them.
    pub liveness: bool,
}

impl PipelineConfig {
    pub fn with_face_model(face_model: FaceModel) -> PipelineConfig {
        let (embedder, attributes) = face_model.models();
        PipelineConfig {
            detector: "centerface".into(),
            embedder: embedder.into(),
            attributes: attributes.map(String::from),
            detector_config: None,
            liveness: false,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig::with_face_model(FaceModel::default())
    }
}

/// What to compute per face beyond detection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Want {
    pub embedding: bool,
    pub attributes: bool,
    /// The probability that each face is live (the pipeline must have loaded the liveness
    /// models).
    pub liveness: bool,
}

#[derive(Clone, Debug)]
pub struct Face {
    pub detection: Detection,
    pub analysis: FaceAnalysis,
}

pub struct Pipeline {
    pub detector: Detector,
    pub embedder: Embedder,
    pub attributes: Option<AttributeModel>,
    pub liveness: Option<Liveness>,
}

impl Pipeline {
    pub fn new(config: &PipelineConfig) -> Result<Pipeline, ModelError> {
        let detector = Detector::new(&config.detector, config.detector_config.clone())?;
        let embedder = Embedder::new(&config.embedder)?;
        let attributes = config.attributes.as_deref().map(AttributeModel::new).transpose()?;
        let liveness = config.liveness.then(Liveness::new).transpose()?;
        Ok(Pipeline { detector, embedder, attributes, liveness })
    }

    /// Whether age and gender can be computed (multi-task model or a separate model loaded).
    pub fn has_attributes(&self) -> bool {
        self.embedder.is_multitask() || self.attributes.is_some()
    }

    /// Detects every face in `img` and analyses each as asked, largest face first. The
    /// multi-task model gives embedding, age, gender and faceness in one run whenever either is
    /// wanted.
    pub fn analyze(&self, img: &RgbImage, want: Want) -> Result<Vec<Face>, ModelError> {
        let mut detections: Vec<Detection> = self.detector.detect(img)?.into_iter().collect();
        detections.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
        let mut faces = Vec::with_capacity(detections.len());
        let multitask = self.embedder.is_multitask();
        for detection in detections {
            let mut analysis = FaceAnalysis::default();
            if want.embedding || (want.attributes && multitask) {
                analysis = self.embedder.run_crop(&self.embedder.crop(img, &detection.landmarks)?)?;
                if !want.embedding {
                    analysis.embedding = None;
                }
            }
            if let (true, Some(attr)) = (want.attributes, &self.attributes) {
                let (age, male) = attr.predict(img, &detection.landmarks)?;
                analysis.age = Some(age);
                analysis.male_prob = Some(male);
            }
            if want.liveness {
                let liveness = self.liveness.as_ref().ok_or_else(|| ModelError::Missing("liveness (not loaded)".into()))?;
                analysis.liveness = Some(liveness.score(img, &detection.bbox)?);
            }
            faces.push(Face { detection, analysis });
        }
        Ok(faces)
    }
}
