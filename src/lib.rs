//! facegate: offline face recognition for door-access kiosks and edge boards.
//!
//! Stages, one module each (see `ARCHITECTURE.md`): [`frame`] decodes images, [`detect`]
//! finds faces and landmarks, [`align`] warps them onto a template, [`analyze`] runs the per-face
//! models, [`gallery`] matches embeddings against enrolled identities, and [`commands`] wires
//! them into the CLI. [`model`] holds the manifests and the embedded NNEF models.
//! [`eval`] measures accuracy on labelled photos and calibrates the thresholds that [`config`]
//! layers over the manifests.

pub mod act;
pub mod admin;
pub mod align;
pub mod analyze;
pub mod board;
pub mod annotate;
pub mod commands;
pub mod config;
pub mod detect;
pub mod error;
pub mod eval;
pub mod frame;
pub mod gallery;
pub mod kernels;
pub mod kiosk;
pub mod liveness;
pub mod model;
mod nnef_quant;
pub mod nnef_weights;
pub mod pipeline;
pub mod policy;
#[doc(hidden)]
pub mod scene;
pub mod source;
pub mod track;

pub use error::{exit, DecodeError, ModelError};
pub use pipeline::{Face, Pipeline, PipelineConfig, Want};
