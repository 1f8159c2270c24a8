//! The CLI's commands over the library. `main.rs` parses arguments and maps the returned
//! [`Outcome`] or error to an exit code; these functions do the work and write the output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::{bail, Context as _, Result};
use image::RgbImage;
use serde::Serialize;

use crate::annotate;
use crate::error::exit;
use crate::frame::read_image;
use crate::gallery::{Dtype, Gallery, GalleryError, GalleryWriter, Match, ModelKey, Person};
use crate::model;
use crate::pipeline::{Face, Pipeline, PipelineConfig, Want};

/// How a command ended when it did not fail outright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    NoMatch,
    /// A batch finished but some inputs failed.
    Partial,
    /// `verify --require-live`: the face was judged not live.
    Spoof,
}

impl Outcome {
    pub fn code(self) -> i32 {
        match self {
            Outcome::Ok => exit::OK,
            Outcome::NoMatch => exit::NO_MATCH,
            Outcome::Partial => exit::PARTIAL,
            Outcome::Spoof => exit::SPOOF,
        }
    }
}

/// The models and settings shared by the commands.
pub struct Context {
    pub pipeline: Pipeline,
    pub fingerprint: [u8; 32],
    /// Cosine similarity at or above which a face is taken to be an enrolled identity.
    pub threshold: f32,
    /// Images analysed at once by batch commands.
    pub threads: usize,
    /// Fused live probability at or above which a face is judged live.
    pub liveness_threshold: f32,
}

impl Context {
    pub fn new(config: &PipelineConfig, threshold: Option<f32>) -> Result<Context> {
        let pipeline = Pipeline::new(config).context("loading the models")?;
        let fingerprint = model::fingerprint(&config.embedder)?;
        let threshold = match threshold.or(pipeline.embedder.model.manifest.match_threshold) {
            Some(t) if (-1.0..=1.0).contains(&t) => t,
            Some(t) => bail!("threshold {t} is outside [-1, 1]"),
            None => bail!("no threshold given and the embedder manifest has no match_threshold"),
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let liveness_threshold = crate::liveness::SHIPPED_THRESHOLD;
        Ok(Context { pipeline, fingerprint, threshold, threads, liveness_threshold })
    }

    /// What binds a gallery to this context's embedder.
    pub fn key(&self) -> ModelKey {
        ModelKey { dim: self.pipeline.embedder.dim(), fingerprint: self.fingerprint }
    }

    pub fn open_gallery(&self, path: &Path) -> Result<Gallery> {
        Ok(Gallery::open(path, self.key())?)
    }
}

#[derive(Serialize)]
struct FaceJson {
    bbox: [f32; 4],
    score: f32,
    landmarks: [[f32; 2]; 5],
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gender: Option<crate::analyze::Gender>,
    #[serde(skip_serializing_if = "Option::is_none")]
    male_prob: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    faceness: Option<f32>,
    /// Probability that the face is live, with `--liveness` or `--require-live`.
    #[serde(skip_serializing_if = "Option::is_none")]
    liveness: Option<f32>,
    /// `"spoof"`: `identify --require-live` judged the face not live and did not match it.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    best: Option<Match>,
}

fn round(v: f32, digits: i32) -> f32 {
    let k = 10f32.powi(digits);
    (v * k).round() / k
}

impl FaceJson {
    fn new(face: &Face, embeddings: bool) -> FaceJson {
        let d = &face.detection;
        let a = &face.analysis;
        FaceJson {
            bbox: [d.bbox.x0, d.bbox.y0, d.bbox.x1, d.bbox.y1].map(|v| round(v, 2)),
            score: round(d.score, 4),
            landmarks: d.landmarks.map(|p| [round(p.x, 2), round(p.y, 2)]),
            embedding: if embeddings { a.embedding.clone() } else { None },
            age: a.age.map(|v| round(v, 1)),
            gender: a.gender(),
            male_prob: a.male_prob.map(|v| round(v, 4)),
            faceness: a.faceness.map(|v| round(v, 4)),
            liveness: a.liveness.map(|v| round(v, 4)),
            refused: None,
            identity: None,
            best: None,
        }
    }
}

#[derive(Serialize)]
struct ImageJson<'a> {
    image: &'a str,
    width: u32,
    height: u32,
    faces: Vec<FaceJson>,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    image: &'a str,
    error: String,
}

fn error_line(out: &mut dyn Write, image: &str, err: &anyhow::Error) -> Result<()> {
    serde_json::to_writer(&mut *out, &ErrorJson { image, error: format!("{err:#}") })?;
    writeln!(out)?;
    Ok(())
}

/// Runs `work` over `items` on `threads` threads and hands each result to `emit` in input
/// order. Plans are `Send + Sync`, so workers share the one loaded pipeline.
pub fn in_order<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> R + Sync,
    mut emit: impl FnMut(R) -> Result<()>,
) -> Result<()> {
    if threads <= 1 || items.len() <= 1 {
        return items.iter().try_for_each(|item| emit(work(item)));
    }
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::sync_channel::<(usize, R)>(threads * 2);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(items.len()) {
            let (tx, next, work) = (tx.clone(), &next, &work);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                // A closed channel means the writer stopped (an output error): stop too.
                if i >= items.len() || tx.send((i, work(&items[i]))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut due = 0;
        for (i, result) in rx {
            pending.insert(i, result);
            while let Some(result) = pending.remove(&due) {
                emit(result)?;
                due += 1;
            }
        }
        Ok(())
    })
}

/// One image's `analyze` output (a JSON line or a text block) and whether it failed.
fn analyze_one(ctx: &Context, path: &Path, json: bool, embeddings: bool, liveness: bool) -> Result<(String, bool)> {
    let want = Want { embedding: embeddings, attributes: true, liveness };
    let shown = path.to_string_lossy();
    let result = read_image(path)
        .map_err(anyhow::Error::from)
        .and_then(|img| Ok((ctx.pipeline.analyze(&img, want)?, img.width(), img.height())));
    let mut out = Vec::new();
    let failed = result.is_err();
    match result {
        Ok((faces, width, height)) if json => {
            let faces = faces.iter().map(|f| FaceJson::new(f, embeddings)).collect();
            serde_json::to_writer(&mut out, &ImageJson { image: &shown, width, height, faces })?;
            writeln!(out)?;
        }
        Ok((faces, width, height)) => {
            writeln!(out, "{shown}: {width}x{height}, {} face(s)", faces.len())?;
            for f in faces.iter().map(|f| FaceJson::new(f, false)) {
                let gender = f.gender.map_or("?", |g| match g {
                    crate::analyze::Gender::Male => "male",
                    crate::analyze::Gender::Female => "female",
                });
                write!(
                    out,
                    "  box {:?} score {:.2}: {gender} ({:.2}), age {:.0}",
                    f.bbox.map(f32::round),
                    f.score,
                    f.male_prob.unwrap_or(f32::NAN),
                    f.age.unwrap_or(f32::NAN)
                )?;
                match f.liveness {
                    Some(p) => writeln!(out, ", {} (liveness {p:.2}, threshold {:.2})", live_word(p, ctx.liveness_threshold), ctx.liveness_threshold)?,
                    None => writeln!(out)?,
                }
            }
        }
        Err(e) if json => error_line(&mut out, &shown, &e)?,
        Err(e) => writeln!(out, "{shown}: error: {e:#}")?,
    }
    Ok((String::from_utf8(out)?, failed))
}

/// "live" or "spoof" for a liveness score at `threshold`.
pub fn live_word(liveness: f32, threshold: f32) -> &'static str {
    if crate::liveness::is_live(liveness, threshold) {
        "live"
    } else {
        "spoof"
    }
}

/// `analyze`: with `json`, one JSON object per image in input order; otherwise a line per face.
/// Unreadable images get an error line and the batch goes on. Images are analysed on
/// `ctx.threads` threads; the output order is the input order whatever the thread count.
/// With `liveness`, each face also gets its probability of being live.
pub fn analyze(
    ctx: &Context,
    images: &[PathBuf],
    json: bool,
    embeddings: bool,
    liveness: bool,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let mut failed = false;
    in_order(
        images,
        ctx.threads,
        |path| analyze_one(ctx, path, json, embeddings, liveness),
        |result| {
            let (text, bad) = result?;
            failed |= bad;
            out.write_all(text.as_bytes())?;
            Ok(out.flush()?)
        },
    )?;
    Ok(if failed { Outcome::Partial } else { Outcome::Ok })
}

/// How to pick the face to enrol or verify when an image holds several.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FacePick {
    /// Exactly one face, or refuse.
    Single,
    /// The largest face.
    Largest,
}

/// The one face of `img` to use, or an error saying why there is none.
pub fn pick_face(ctx: &Context, img: &RgbImage, pick: FacePick, want: Want) -> Result<Face> {
    let mut faces = ctx.pipeline.analyze(img, want)?;
    match (faces.len(), pick) {
        (0, _) => bail!("no face found"),
        (1, _) | (_, FacePick::Largest) => Ok(faces.swap_remove(0)),
        (n, FacePick::Single) => {
            bail!("{n} faces found; use a photo of one person, or --largest to take the largest face")
        }
    }
}

/// How `enroll` treats the gallery.
#[derive(Clone, Copy, Debug)]
pub struct EnrolOptions {
    pub pick: FacePick,
    /// Enrol even when a face looks like an identity enrolled under another name.
    pub force: bool,
    /// Template type of a gallery that enrolment creates.
    pub dtype: Dtype,
}

/// The enrolled identity, other than `name`, that one of `embeddings` matches at or above the
/// threshold: enrolling it under `name` would make one person two identities.
fn near_duplicate(ctx: &Context, g: &Gallery, name: &str, embeddings: &[Vec<f32>]) -> Result<Option<Match>> {
    let mut worst: Option<Match> = None;
    for e in embeddings {
        for hit in g.search(e, 2)? {
            let other = g.name(hit.id).unwrap_or_default();
            if other != name && hit.similarity >= ctx.threshold && worst.as_ref().is_none_or(|w| hit.similarity > w.similarity) {
                worst = Some(Match { identity: other.to_string(), similarity: hit.similarity, margin: 0.0 });
            }
        }
    }
    Ok(worst)
}

/// Adds `embeddings` to `name` (a new identity, or more templates for an enrolled one) in one
/// commit, after the near-duplicate check. Returns the identity's template count.
pub fn enrol_embeddings(
    ctx: &Context,
    writer: &mut GalleryWriter,
    name: &str,
    embeddings: Vec<Vec<f32>>,
    force: bool,
) -> Result<usize> {
    if !force {
        if let Some(m) = near_duplicate(ctx, writer.gallery(), name, &embeddings)? {
            bail!(
                "{name:?} looks like the enrolled {:?} (similarity {:.3}, threshold {:.3}); not enrolled. Use --force if they are different people",
                m.identity,
                m.similarity,
                ctx.threshold
            );
        }
        // More photos of an enrolled person must show that person: a stranger's face added to
        // a name would open the door for the stranger.
        if writer.gallery().find(name).is_some() {
            for e in &embeddings {
                let sim = writer.gallery().similarity_to(name, e)?.unwrap_or(f32::NEG_INFINITY);
                if sim < ctx.threshold {
                    let other = writer.gallery().best(e)?.filter(|m| m.identity != name && m.similarity >= ctx.threshold);
                    let resembles = other.map_or(String::from("no enrolled identity"), |m| format!("{:?} ({:.3})", m.identity, m.similarity));
                    bail!(
                        "the face does not look like the enrolled {name:?} (similarity {sim:.3}, threshold {:.3}); it resembles {resembles}; not enrolled. Use --force if it is the same person",
                        ctx.threshold
                    );
                }
            }
        }
    }
    match writer.gallery().find(name) {
        Some(_) => writer.add_templates(name, &embeddings)?,
        None => {
            writer.enrol(&[Person { name: name.to_string(), templates: embeddings }])?;
        }
    }
    let g = writer.gallery();
    Ok(g.find(name).and_then(|id| g.identity(id)).map_or(0, |i| i.templates as usize))
}

/// `enroll`: adds one template per image to `name`. All images must succeed or nothing is
/// written.
pub fn enroll(
    ctx: &Context,
    gallery_path: &Path,
    name: &str,
    images: &[PathBuf],
    options: EnrolOptions,
    out: &mut dyn Write,
) -> Result<Outcome> {
    if !crate::gallery::valid_name(name) {
        return Err(GalleryError::InvalidName(name.to_string()).into());
    }
    // Refuse a gallery of another model before spending time on the photos.
    let exists = match Gallery::open(gallery_path, ctx.key()) {
        Ok(_) => true,
        Err(GalleryError::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    let want = Want { embedding: true, attributes: false, liveness: false };
    let mut embeddings = Vec::with_capacity(images.len());
    for path in images {
        let face = read_image(path)
            .map_err(anyhow::Error::from)
            .and_then(|img| pick_face(ctx, &img, options.pick, want))
            .with_context(|| format!("{}: not enrolled (the gallery is unchanged)", path.display()))?;
        embeddings.push(face.analysis.embedding.context("no embedding")?);
    }
    let added = embeddings.len();
    if !exists {
        // Checked before the file is created, so a refused enrolment leaves no empty gallery.
        let person = Person { name: name.to_string(), templates: embeddings };
        crate::gallery::check_people(std::slice::from_ref(&person), ctx.key().dim)?;
        embeddings = person.templates;
    }
    let mut writer = GalleryWriter::open_or_create(gallery_path, ctx.key(), options.dtype)?;
    let templates = enrol_embeddings(ctx, &mut writer, name, embeddings, options.force)?;
    writeln!(
        out,
        "enrolled {name:?}: {added} new template(s), {templates} in all; the gallery holds {} identities",
        writer.gallery().len()
    )?;
    Ok(Outcome::Ok)
}

/// The decision for one face against the gallery: the match when it clears the threshold.
fn decide(best: Option<Match>, threshold: f32) -> (Option<String>, Option<Match>) {
    let identity = best.as_ref().filter(|m| m.similarity >= threshold).map(|m| m.identity.clone());
    (identity, best)
}

/// How `identify`, `verify` and `annotate` treat liveness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LiveCheck {
    /// Not computed.
    #[default]
    Off,
    /// Computed and shown.
    Show,
    /// Computed, and a face judged not live is not matched.
    Require,
}

impl LiveCheck {
    pub fn new(show: bool, require: bool) -> LiveCheck {
        match (show, require) {
            (_, true) => LiveCheck::Require,
            (true, false) => LiveCheck::Show,
            (false, false) => LiveCheck::Off,
        }
    }

    pub fn wanted(self) -> bool {
        self != LiveCheck::Off
    }

    /// Whether a face with this analysis is refused as a spoof.
    fn refuses(self, ctx: &Context, face: &Face) -> bool {
        // Fails closed: a face without a score is not live.
        self == LiveCheck::Require && !face.analysis.liveness.is_some_and(|p| crate::liveness::is_live(p, ctx.liveness_threshold))
    }
}

/// `identify`: every face of every image against the gallery. With [`LiveCheck::Require`] a
/// face judged not live is refused (`"refused": "spoof"`, no identity) without matching it.
pub fn identify(
    ctx: &Context,
    gallery_path: &Path,
    images: &[PathBuf],
    json: bool,
    live: LiveCheck,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let gallery = ctx.open_gallery(gallery_path)?;
    let want = Want { embedding: true, attributes: false, liveness: live.wanted() };
    let mut failed = false;
    for path in images {
        let shown = path.to_string_lossy();
        let faces = match read_image(path).map_err(anyhow::Error::from).and_then(|img| {
            Ok((ctx.pipeline.analyze(&img, want)?, img.width(), img.height()))
        }) {
            Ok(f) => f,
            Err(e) => {
                failed = true;
                if json {
                    error_line(out, &shown, &e)?;
                } else {
                    writeln!(out, "{shown}: error: {e:#}")?;
                }
                continue;
            }
        };
        let (faces, width, height) = faces;
        let mut rows = Vec::new();
        for face in &faces {
            let mut row = FaceJson::new(face, false);
            if live.refuses(ctx, face) {
                row.refused = Some("spoof");
                row.identity = Some(None);
            } else {
                let e = face.analysis.embedding.as_deref().context("no embedding")?;
                let (identity, best) = decide(gallery.best(e)?, ctx.threshold);
                row.identity = Some(identity);
                row.best = best;
            }
            rows.push(row);
        }
        if json {
            serde_json::to_writer(&mut *out, &ImageJson { image: &shown, width, height, faces: rows })?;
            writeln!(out)?;
        } else {
            if rows.is_empty() {
                writeln!(out, "{shown}: no face found")?;
            }
            for (i, r) in rows.iter().enumerate() {
                let who = r.identity.clone().flatten().unwrap_or_else(|| "unknown".into());
                let live = r.liveness.map_or(String::new(), |p| format!(", liveness {p:.2}"));
                match (&r.best, r.refused) {
                    (_, Some(why)) => writeln!(
                        out,
                        "{shown}: face {i} at {:?}: refused, judged a {why} (liveness {:.2}, threshold {:.2})",
                        r.bbox.map(|v| v.round()),
                        r.liveness.unwrap_or(f32::NAN),
                        ctx.liveness_threshold
                    )?,
                    (Some(m), None) => writeln!(
                        out,
                        "{shown}: face {i} at {:?}: {who} (best {:?}, similarity {:.3}, margin {:.3}{live})",
                        r.bbox.map(|v| v.round()),
                        m.identity,
                        m.similarity,
                        m.margin
                    )?,
                    (None, None) => writeln!(out, "{shown}: face {i}: unknown (empty gallery{live})")?,
                }
            }
        }
        out.flush()?;
    }
    Ok(if failed { Outcome::Partial } else { Outcome::Ok })
}

/// `verify`: is the (largest) face in `image` the enrolled `name`? With
/// [`LiveCheck::Require`], a face judged not live ends it with [`Outcome::Spoof`] (exit 6)
/// before any comparison.
pub fn verify(
    ctx: &Context,
    gallery_path: &Path,
    name: &str,
    image: &Path,
    live: LiveCheck,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let gallery = ctx.open_gallery(gallery_path)?;
    if gallery.find(name).is_none() {
        bail!("{name:?} is not enrolled in {}", gallery_path.display());
    }
    let img = read_image(image)?;
    let want = Want { embedding: true, attributes: false, liveness: live.wanted() };
    let face = pick_face(ctx, &img, FacePick::Largest, want).with_context(|| image.display().to_string())?;
    if live.refuses(ctx, &face) {
        writeln!(
            out,
            "{}: refused: the face was judged not live (liveness {:.3}, threshold {:.3}); not compared with {name:?}",
            image.display(),
            face.analysis.liveness.unwrap_or(f32::NAN),
            ctx.liveness_threshold
        )?;
        return Ok(Outcome::Spoof);
    }
    let e = face.analysis.embedding.as_deref().context("no embedding")?;
    let sim = gallery.similarity_to(name, e)?.context("identity without templates")?;
    let matched = sim >= ctx.threshold;
    let live = face.analysis.liveness.map_or(String::new(), |p| format!(", liveness {p:.3}"));
    writeln!(
        out,
        "{}: {} {name:?} (similarity {sim:.3}, threshold {:.3}{live})",
        image.display(),
        if matched { "match" } else { "no match for" },
        ctx.threshold
    )?;
    Ok(if matched { Outcome::Ok } else { Outcome::NoMatch })
}

/// One face as drawn: its label and, with a gallery, the decision behind it.
pub struct Drawn {
    pub label: String,
    pub identity: Option<String>,
    pub best: Option<Match>,
}

/// Draws every face of `img` (largest first) with its label; with a gallery, the label names
/// the person; with `liveness`, it says "live" or "SPOOF" and the score.
pub fn annotate_image(
    ctx: &Context,
    img: &RgbImage,
    gallery: Option<&Gallery>,
    liveness: bool,
) -> Result<(RgbImage, Vec<Drawn>)> {
    let want = Want { embedding: gallery.is_some(), attributes: true, liveness };
    let faces = ctx.pipeline.analyze(img, want)?;
    let mut canvas = img.clone();
    let mut labels = Vec::new();
    for face in &faces {
        let a = &face.analysis;
        let mut label = String::new();
        let mut colour = [255, 220, 0];
        let (mut identity, mut best) = (None, None);
        if let (Some(g), Some(e)) = (gallery, a.embedding.as_deref()) {
            (identity, best) = decide(g.best(e)?, ctx.threshold);
            match &identity {
                Some(name) => {
                    colour = [0, 230, 0];
                    label.push_str(&format!("{name} {:.2} ", best.as_ref().map_or(0.0, |m| m.similarity)));
                }
                None => {
                    colour = [255, 40, 40];
                    label.push_str("unknown ");
                }
            }
        }
        if let (Some(age), Some(g)) = (a.age, a.gender()) {
            let g = match g {
                crate::analyze::Gender::Male => "M",
                crate::analyze::Gender::Female => "F",
            };
            label.push_str(&format!("{g} {age:.0} "));
        }
        if let Some(p) = a.liveness {
            let live = crate::liveness::is_live(p, ctx.liveness_threshold);
            label.push_str(&format!("{} {p:.2}", if live { "live" } else { "SPOOF" }));
            if !live {
                colour = [255, 40, 40];
            }
        }
        let label = label.trim().to_string();
        annotate::draw_face(&mut canvas, &face.detection.bbox, &face.detection.landmarks, &label, colour);
        labels.push(Drawn { label, identity, best });
    }
    Ok((canvas, labels))
}

pub fn annotate(
    ctx: &Context,
    image: &Path,
    output: &Path,
    gallery_path: Option<&Path>,
    liveness: bool,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let gallery = gallery_path.map(|p| ctx.open_gallery(p)).transpose()?;
    let img = read_image(image)?;
    let (canvas, labels) = annotate_image(ctx, &img, gallery.as_ref(), liveness)?;
    canvas.save(output).with_context(|| format!("writing {}", output.display()))?;
    writeln!(out, "{}: {} face(s) drawn to {}", image.display(), labels.len(), output.display())?;
    Ok(Outcome::Ok)
}

/// Sample photos compiled into the binary for `demo`: the bundled samples scaled to 640 px
/// (`scripts/make-demo-samples`; provenance: `assets/samples/PROVENANCE.md`), 186 kB in all.
pub mod samples {
    pub const ENROL: &[(&str, &[u8])] = &[
        ("obama.jpg", include_bytes!("../assets/samples/demo/obama.jpg")),
        ("obama2.jpg", include_bytes!("../assets/samples/demo/obama2.jpg")),
    ];
    pub const KNOWN_PROBE: (&str, &[u8]) = ("obama3.jpg", include_bytes!("../assets/samples/demo/obama3.jpg"));
    pub const UNKNOWN_PROBE: (&str, &[u8]) = ("biden.jpg", include_bytes!("../assets/samples/demo/biden.jpg"));
}

/// Joins images side by side at a common height.
fn side_by_side(images: &[RgbImage], height: u32) -> RgbImage {
    let scaled: Vec<RgbImage> = images
        .iter()
        .map(|i| {
            let w = (i.width() as f32 * height as f32 / i.height() as f32).round().max(1.0) as u32;
            image::imageops::resize(i, w, height, image::imageops::FilterType::Triangle)
        })
        .collect();
    let total = scaled.iter().map(|i| i.width()).sum();
    let mut canvas = RgbImage::new(total, height);
    let mut x = 0;
    for i in &scaled {
        image::imageops::replace(&mut canvas, i, x as i64, 0);
        x += i.width();
    }
    canvas
}

/// `demo`: enrols the bundled photos of one person into a temporary gallery, identifies a new
/// photo of them and a photo of someone else, prints the results and writes an annotated image.
pub fn demo(ctx: &Context, output: &Path, out: &mut dyn Write) -> Result<Outcome> {
    use crate::frame::decode_image;
    let dir = std::env::temp_dir().join(format!("facegate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let gallery_path = dir.join("demo.fgg");
    let result = (|| -> Result<Outcome> {
        let want = Want { embedding: true, attributes: false, liveness: false };
        let mut templates = Vec::new();
        for (name, bytes) in samples::ENROL {
            let img = decode_image(bytes)?;
            let face = pick_face(ctx, &img, FacePick::Single, want).with_context(|| name.to_string())?;
            templates.push(face.analysis.embedding.context("no embedding")?);
            writeln!(out, "enrolled obama from bundled {name}")?;
        }
        let mut writer = GalleryWriter::create(&gallery_path, ctx.key(), Dtype::F32)?;
        writer.enrol(&[Person { name: "obama".into(), templates }])?;
        drop(writer);
        let gallery = ctx.open_gallery(&gallery_path)?;
        let mut drawn = Vec::new();
        let mut ok = true;
        for ((name, bytes), expected) in [(samples::KNOWN_PROBE, Some("obama")), (samples::UNKNOWN_PROBE, None)] {
            let img = decode_image(bytes)?;
            let (canvas, faces) = annotate_image(ctx, &img, Some(&gallery), ctx.pipeline.liveness.is_some())?;
            let largest = faces.first().with_context(|| format!("{name}: no face found"))?;
            let sim = largest.best.as_ref().map_or(f32::NAN, |m| m.similarity);
            let labels: Vec<&str> = faces.iter().map(|f| f.label.as_str()).collect();
            writeln!(
                out,
                "{name}: {} (similarity to obama {sim:.3}, threshold {:.3}); drawn: {}",
                largest.identity.as_deref().unwrap_or("unknown"),
                ctx.threshold,
                labels.join(", ")
            )?;
            ok &= largest.identity.as_deref() == expected;
            drawn.push(canvas);
        }
        side_by_side(&drawn, 480).save(output).with_context(|| format!("writing {}", output.display()))?;
        writeln!(out, "annotated image written to {}", output.display())?;
        if !ok {
            bail!("the demo's results are not the expected ones (known person recognised, stranger refused)");
        }
        Ok(Outcome::Ok)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
