//! Per-face analysis of aligned crops: the identity embedding, age, gender and faceness.
//!
//! The default per-face model is the multi-task network (`models/mtl*.toml`): one run on the
//! 112×112 ArcFace-aligned crop gives all four. The teachers it was trained from stay available:
//! MobileFaceNet for the embedding and HSE FaceRes (its own 224-px crop) for age and gender.
//!
//! Each model declares its crop in its manifest (template, size and zoom); the crops are made
//! here from the detection's landmarks with [`crate::align`], so the same frame and landmarks
//! always give the same crop.

use image::RgbImage;

use crate::align::{self, Point, ARCFACE_112};
use crate::error::ModelError;
use crate::model::{Model, Task};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    Male,
    Female,
}

/// What the per-face models say about one face.
#[derive(Clone, Debug, Default)]
pub struct FaceAnalysis {
    /// L2-normalised identity embedding, when computed.
    pub embedding: Option<Vec<f32>>,
    pub age: Option<f32>,
    pub male_prob: Option<f32>,
    /// Probability that the crop is a face, from the multi-task model.
    pub faceness: Option<f32>,
    /// Probability that the face is live (not a print or a screen), when asked for
    /// ([`crate::liveness`]).
    pub liveness: Option<f32>,
}

impl FaceAnalysis {
    pub fn gender(&self) -> Option<Gender> {
        self.male_prob.map(|p| if p >= 0.5 { Gender::Male } else { Gender::Female })
    }
}

/// Normalises `v` in place to unit length; `false` if it is zero or not finite.
pub fn l2_normalise(v: &mut [f32]) -> bool {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(n.is_finite() && n > 1e-12) {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= n);
    true
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn crop_for(model: &Model, img: &RgbImage, landmarks: &[Point; 5]) -> Result<RgbImage, ModelError> {
    let m = &model.manifest;
    let size = m.input_size[0];
    let template = m.template.unwrap_or(ARCFACE_112);
    let zoom = m.align_zoom.unwrap_or(1.0);
    align::align(img, landmarks, &template, size, zoom).ok_or_else(|| ModelError::Contract {
        model: m.name.clone(),
        detail: "landmarks are degenerate; the face cannot be aligned".into(),
    })
}

/// The per-face model on the 112×112 ArcFace-aligned crop: an embedder (MobileFaceNet) or the
/// multi-task model, which adds age, gender and faceness to the embedding in the same run.
pub struct Embedder {
    pub model: Model,
}

impl Embedder {
    pub fn new(name: &str) -> Result<Embedder, ModelError> {
        Ok(Embedder { model: Model::embedded(name)? })
    }

    pub fn dim(&self) -> usize {
        self.model.manifest.embedding_dim.unwrap_or(0)
    }

    pub fn crop(&self, img: &RgbImage, landmarks: &[Point; 5]) -> Result<RgbImage, ModelError> {
        crop_for(&self.model, img, landmarks)
    }

    /// Whether one run also gives age, gender and faceness.
    pub fn is_multitask(&self) -> bool {
        self.model.manifest.task == Task::Multitask
    }

    /// Probability of a face at or above which the multi-task model's crop counts as a face.
    pub fn face_threshold(&self) -> f32 {
        self.model.manifest.face_threshold.unwrap_or(0.5)
    }

    /// Runs the model once on an aligned crop of its input size: the embedding, and for the
    /// multi-task model also age, male probability and faceness.
    pub fn run_crop(&self, crop: &RgbImage) -> Result<FaceAnalysis, ModelError> {
        let outputs = self.model.run(self.model.input_from_rgb(crop)?)?;
        let (e, _) = self.model.output(&outputs, "embedding")?;
        let mut v = e.to_vec();
        let contract = |detail: String| ModelError::Contract { model: self.model.name().to_string(), detail };
        if v.len() != self.dim() || !l2_normalise(&mut v) {
            return Err(contract(format!("embedding of length {} is not a usable {}-d vector", v.len(), self.dim())));
        }
        let mut analysis = FaceAnalysis { embedding: Some(v), ..FaceAnalysis::default() };
        if self.is_multitask() {
            let (male, _) = self.model.output(&outputs, "gender")?;
            let (ages, _) = self.model.output(&outputs, "age")?;
            let (face, _) = self.model.output(&outputs, "faceness")?;
            let age = age_from_probs(ages, self.model.manifest.age_rule.as_deref().unwrap_or("expectation"));
            let (male, face) = (male.first().copied().unwrap_or(f32::NAN), face.first().copied().unwrap_or(f32::NAN));
            if !(age.is_finite() && male.is_finite() && face.is_finite()) {
                return Err(contract("age, gender or faceness output is not finite".into()));
            }
            analysis.age = Some(age);
            analysis.male_prob = Some(male.clamp(0.0, 1.0));
            analysis.faceness = Some(face.clamp(0.0, 1.0));
        }
        Ok(analysis)
    }

    /// Embeds an aligned crop of the model's input size.
    pub fn embed_crop(&self, crop: &RgbImage) -> Result<Vec<f32>, ModelError> {
        Ok(self.run_crop(crop)?.embedding.unwrap_or_default())
    }

    pub fn embed(&self, img: &RgbImage, landmarks: &[Point; 5]) -> Result<Vec<f32>, ModelError> {
        self.embed_crop(&self.crop(img, landmarks)?)
    }
}

/// Age from a softmax over one-year bins, by the rule the manifest names.
pub fn age_from_probs(p: &[f32], rule: &str) -> f32 {
    match rule {
        // Expectation over the two most likely bins, renormalised; bin i is age i + 1.
        "top2-renormalised-expectation+1" => {
            let mut idx: Vec<usize> = (0..p.len()).collect();
            idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            let top = &idx[..idx.len().min(2)];
            let mass: f32 = top.iter().map(|&i| p[i]).sum();
            if mass > 0.0 {
                1.0 + top.iter().map(|&i| p[i] * i as f32).sum::<f32>() / mass
            } else {
                f32::NAN
            }
        }
        // Plain expectation; bin i is age i.
        _ => p.iter().enumerate().map(|(i, &q)| q * i as f32).sum::<f32>(),
    }
}

/// Age and gender (HSE FaceRes): its own crop framing, from the manifest.
pub struct AttributeModel {
    pub model: Model,
}

impl AttributeModel {
    pub fn new(name: &str) -> Result<AttributeModel, ModelError> {
        Ok(AttributeModel { model: Model::embedded(name)? })
    }

    /// `(age in years, probability of male)`.
    pub fn predict(&self, img: &RgbImage, landmarks: &[Point; 5]) -> Result<(f32, f32), ModelError> {
        let crop = crop_for(&self.model, img, landmarks)?;
        let outputs = self.model.run(self.model.input_from_rgb(&crop)?)?;
        let (g, _) = self.model.output(&outputs, "gender")?;
        let (a, _) = self.model.output(&outputs, "age")?;
        let rule = self.model.manifest.age_rule.as_deref().unwrap_or("expectation");
        let age = age_from_probs(a, rule);
        let male = g.first().copied().unwrap_or(f32::NAN);
        if !(age.is_finite() && male.is_finite()) {
            return Err(ModelError::Contract {
                model: self.model.name().to_string(),
                detail: "age or gender output is not finite".into(),
            });
        }
        Ok((age, male.clamp(0.0, 1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_refuses_zero() {
        let mut v = [3.0, 4.0];
        assert!(l2_normalise(&mut v));
        assert_eq!(v, [0.6, 0.8]);
        assert!(!l2_normalise(&mut [0.0, 0.0]));
        assert!(!l2_normalise(&mut [f32::NAN, 1.0]));
    }

    #[test]
    fn top2_age_rule() {
        let mut p = vec![0.0f32; 100];
        p[29] = 0.6;
        p[30] = 0.2;
        p[70] = 0.1;
        // 1 + (0.6·29 + 0.2·30) / 0.8 = 30.25
        assert!((age_from_probs(&p, "top2-renormalised-expectation+1") - 30.25).abs() < 1e-4);
    }
}
