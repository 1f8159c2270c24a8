//! The per-frame pipeline: detect, then align and analyse every face.
//!
//! Models are loaded once; [`Pipeline::analyze`] is called per frame and is what the CLI, the
//! tests and the benches share.

use image::RgbImage;

use crate::analyze::{AttributeModel, Embedder, FaceAnalysis};
use crate::detect::{Detection, Detector, DetectorConfig};
use crate::error::ModelError;

/// Which models to load, by embedded name.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub detector: String,
    pub embedder: String,
    /// `None`: no age and gender.
    pub attributes: Option<String>,
    pub detector_config: Option<DetectorConfig>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            detector: "centerface".into(),
            embedder: "mobilefacenet".into(),
            attributes: Some("faceres".into()),
            detector_config: None,
        }
    }
}

/// What to compute per face beyond detection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Want {
    pub embedding: bool,
    pub attributes: bool,
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
}

impl Pipeline {
    pub fn new(config: &PipelineConfig) -> Result<Pipeline, ModelError> {
        let detector = Detector::new(&config.detector, config.detector_config.clone())?;
        let embedder = Embedder::new(&config.embedder)?;
        let attributes = config.attributes.as_deref().map(AttributeModel::new).transpose()?;
        Ok(Pipeline { detector, embedder, attributes })
    }

    /// Detects every face in `img` and analyses each as asked, largest face first.
    pub fn analyze(&self, img: &RgbImage, want: Want) -> Result<Vec<Face>, ModelError> {
        let mut detections: Vec<Detection> = self.detector.detect(img)?.into_iter().collect();
        detections.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
        let mut faces = Vec::with_capacity(detections.len());
        for detection in detections {
            let mut analysis = FaceAnalysis::default();
            if want.embedding {
                analysis.embedding = Some(self.embedder.embed(img, &detection.landmarks)?);
            }
            if let (true, Some(attr)) = (want.attributes, &self.attributes) {
                let (age, male) = attr.predict(img, &detection.landmarks)?;
                analysis.age = Some(age);
                analysis.male_prob = Some(male);
            }
            faces.push(Face { detection, analysis });
        }
        Ok(faces)
    }
}
