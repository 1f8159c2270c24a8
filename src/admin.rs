//! Gallery administration: `facegate gallery create|info|list|remove|rename|compact|export|import`
//! and enrolment of a folder tree `people/NAME/*.jpg`. Everything but the tree enrolment works
//! without loading a model: the gallery is bound to the embedder through [`ModelKey`], which comes
//! from the embedded manifest.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::commands::{enrol_embeddings, in_order, pick_face, Context, EnrolOptions, Outcome};
use crate::frame::read_image;
use crate::gallery::{self, check_embedding, hex, Dtype, Gallery, GalleryError, GalleryWriter, ModelKey, Person};
use crate::model;
use crate::pipeline::Want;

/// The key of the embedded embedder `name`, without loading it.
pub fn model_key(embedder: &str) -> Result<ModelKey> {
    let manifest = model::embedded_manifest(embedder)?;
    let dim = manifest.embedding_dim.with_context(|| format!("model {embedder:?} is not an embedder"))?;
    Ok(ModelKey { dim, fingerprint: model::fingerprint(embedder)? })
}

pub fn create(key: ModelKey, path: &Path, dtype: Dtype, out: &mut dyn Write) -> Result<Outcome> {
    GalleryWriter::create(path, key, dtype)?;
    writeln!(out, "created {} ({dtype:?} templates, {} dimensions)", path.display(), key.dim)?;
    Ok(Outcome::Ok)
}

/// `gallery info`. A gallery of another model is described too (with its fingerprint), so that
/// an installer can see which model made it; the exit code still says it is unusable here.
pub fn info(key: ModelKey, path: &Path, json: bool, out: &mut dyn Write) -> Result<Outcome> {
    let found = gallery::peek_key(path)?;
    let g = Gallery::open(path, found)?;
    let info = g.info();
    if json {
        serde_json::to_writer(&mut *out, &info)?;
        writeln!(out)?;
    } else {
        writeln!(out, "path: {}", info.path.display())?;
        writeln!(out, "format version: {}", info.version)?;
        writeln!(out, "templates: {} of {:?}, {} dimensions", info.templates, info.dtype, info.dim)?;
        writeln!(out, "identities: {}", info.identities)?;
        writeln!(out, "model fingerprint: {}", info.fingerprint)?;
        writeln!(out, "generation: {}, segments: {}", info.generation, info.segments)?;
        writeln!(out, "file: {} bytes, about {} reclaimable by compact", info.file_bytes, info.reclaimable_bytes)?;
    }
    if found != key {
        return Err(GalleryError::ModelMismatch {
            path: path.into(),
            expected: hex(&key.fingerprint[..8]),
            found: hex(&found.fingerprint[..8]),
        }
        .into());
    }
    Ok(Outcome::Ok)
}

pub fn list(key: ModelKey, path: &Path, json: bool, out: &mut dyn Write) -> Result<Outcome> {
    let g = Gallery::open(path, key)?;
    for id in g.identities() {
        if json {
            serde_json::to_writer(&mut *out, &id)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}\t{} template(s)", id.name, id.templates)?;
        }
    }
    Ok(Outcome::Ok)
}

pub fn remove(key: ModelKey, path: &Path, name: &str, out: &mut dyn Write) -> Result<Outcome> {
    let mut w = GalleryWriter::open(path, key)?;
    w.remove(name)?;
    writeln!(out, "removed {name:?}; {} identities remain", w.gallery().len())?;
    Ok(Outcome::Ok)
}

pub fn rename(key: ModelKey, path: &Path, from: &str, to: &str, out: &mut dyn Write) -> Result<Outcome> {
    let mut w = GalleryWriter::open(path, key)?;
    w.rename(from, to)?;
    writeln!(out, "renamed {from:?} to {to:?}")?;
    Ok(Outcome::Ok)
}

pub fn compact(key: ModelKey, path: &Path, out: &mut dyn Write) -> Result<Outcome> {
    let w = GalleryWriter::open(path, key)?;
    let before = w.gallery().info().file_bytes;
    let w = w.compact()?;
    writeln!(out, "compacted {}: {before} -> {} bytes", path.display(), w.gallery().info().file_bytes)?;
    Ok(Outcome::Ok)
}

/// First line of an export.
#[derive(Serialize, Deserialize)]
struct ExportHeader {
    facegate_gallery_export: u32,
    fingerprint: String,
    dim: usize,
}

/// One identity of an export.
#[derive(Serialize, Deserialize)]
struct ExportIdentity {
    name: String,
    templates: Vec<Vec<f32>>,
}

/// `gallery export`: JSON Lines, a header then one identity per line (int8 templates as their
/// dequantised unit vectors). Written to a temporary file and renamed, so a failed export
/// leaves no half file.
pub fn export(key: ModelKey, path: &Path, to: &Path, out: &mut dyn Write) -> Result<Outcome> {
    let g = Gallery::open(path, key)?;
    // The export is renamed over `to`: never over the gallery it reads.
    if same_file(path, to) {
        bail!("{} is the gallery itself; export to another file (the gallery is unchanged)", to.display());
    }
    let tmp = to.with_extension("partial");
    let write = || -> Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let header = ExportHeader { facegate_gallery_export: 1, fingerprint: hex(&key.fingerprint), dim: key.dim };
        serde_json::to_writer(&mut f, &header)?;
        writeln!(f)?;
        for (id, templates) in g.templates() {
            let name = g.name(id).unwrap_or_default().to_string();
            serde_json::to_writer(&mut f, &ExportIdentity { name, templates })?;
            writeln!(f)?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, to)?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("writing {}", to.display())));
    }
    writeln!(out, "exported {} identities to {}", g.len(), to.display())?;
    Ok(Outcome::Ok)
}

/// Whether two paths name the same existing file (device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Reads and checks a whole export before anything is written.
pub fn read_export(key: ModelKey, from: &Path) -> Result<Vec<Person>> {
    let f = std::fs::File::open(from).with_context(|| format!("reading {}", from.display()))?;
    let mut lines = BufReader::new(f).lines();
    let first = lines.next().transpose()?.with_context(|| format!("{} is empty", from.display()))?;
    let header: ExportHeader = serde_json::from_str(&first)
        .with_context(|| format!("{}: not a facegate gallery export", from.display()))?;
    if header.fingerprint != hex(&key.fingerprint) || header.dim != key.dim {
        bail!(
            "{} was exported from a gallery of another embedding model (fingerprint {}…, this build uses {}…); its templates cannot be matched here",
            from.display(),
            header.fingerprint.chars().take(16).collect::<String>(),
            hex(&key.fingerprint[..8])
        );
    }
    let mut people = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", from.display(), n + 2);
        let mut p: ExportIdentity = serde_json::from_str(&line).with_context(at)?;
        p.name = gallery::normalise_name(&p.name);
        if !gallery::valid_name(&p.name) {
            return Err(anyhow::Error::from(GalleryError::InvalidName(p.name)).context(at()));
        }
        for t in &p.templates {
            check_embedding(t, key.dim).with_context(|| format!("{}: identity {:?}", at(), p.name))?;
        }
        people.push(Person { name: p.name, templates: p.templates });
    }
    Ok(people)
}

/// `gallery import`: every identity of an export in one commit, or none.
pub fn import(key: ModelKey, path: &Path, from: &Path, dtype: Dtype, out: &mut dyn Write) -> Result<Outcome> {
    // Read and checked before the gallery is opened or created, so that a bad export leaves no
    // empty new gallery behind.
    let people = read_export(key, from)?;
    crate::gallery::check_people(&people, key.dim)?;
    let mut w = GalleryWriter::open_or_create(path, key, dtype)?;
    w.enrol(&people)?;
    writeln!(out, "imported {} identities; the gallery holds {}", people.len(), w.gallery().len())?;
    Ok(Outcome::Ok)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    v.sort();
    Ok(v)
}

/// `enroll --tree DIR`: every folder `DIR/NAME` is a person and its images their photos. Photos
/// without a usable face are reported and skipped; each person is one commit, so a crash or a
/// refused near-duplicate loses nothing already enrolled.
pub fn enroll_tree(ctx: &Context, path: &Path, root: &Path, options: EnrolOptions, out: &mut dyn Write) -> Result<Outcome> {
    let mut photos = Vec::new();
    let mut names = Vec::new();
    // A folder whose name is not UTF-8 names no one: shown lossily, two such folders would
    // become one person (`p\xff` and `p\xfe` both `p�`).
    let mut unnamed = Vec::new();
    for dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(gallery::normalise_name) else {
            unnamed.push(format!("{}: not enrolled: the folder name is not valid UTF-8", dir.display()));
            continue;
        };
        let before = photos.len();
        photos.extend(crate::eval::inputs::images_in(&dir)?.into_iter().map(|p| (names.len(), p)));
        if photos.len() > before {
            names.push(name);
        }
    }
    if names.is_empty() {
        unnamed.iter().try_for_each(|l| writeln!(out, "{l}"))?;
        bail!("{} has no folders of photos with a usable name (expected {}/NAME/*.jpg)", root.display(), root.display());
    }
    let mut writer = GalleryWriter::open_or_create(path, ctx.key(), options.dtype)?;
    let bar = indicatif::ProgressBar::new(photos.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} photos, {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let want = Want { embedding: true, attributes: false, liveness: false };
    let mut current: Option<usize> = None;
    let mut embeddings: Vec<Vec<f32>> = Vec::new();
    let (mut enrolled, mut skipped) = (0usize, 0usize);
    let mut failures = unnamed.len();
    let mut lines = unnamed;
    let mut finish = |person: usize, embeddings: Vec<Vec<f32>>, writer: &mut GalleryWriter, lines: &mut Vec<String>| {
        let name = &names[person];
        if embeddings.is_empty() {
            failures += 1;
            lines.push(format!("{name}: not enrolled: no photo with a usable face"));
            return;
        }
        let n = embeddings.len();
        match enrol_embeddings(ctx, writer, name, embeddings, options.force) {
            Ok(total) => {
                enrolled += 1;
                lines.push(format!("{name}: enrolled {n} template(s), {total} in all"));
            }
            Err(e) => {
                failures += 1;
                lines.push(format!("{name}: {e:#}"));
            }
        }
    };
    in_order(
        &photos,
        ctx.threads,
        |(person, p)| {
            let face = read_image(p).map_err(anyhow::Error::from).and_then(|img| pick_face(ctx, &img, options.pick, want));
            (*person, p.clone(), face.and_then(|f| f.analysis.embedding.context("no embedding")))
        },
        |(person, p, result)| {
            if current.is_some_and(|c| c != person) {
                let done = std::mem::take(&mut embeddings);
                finish(current.unwrap_or(person), done, &mut writer, &mut lines);
            }
            current = Some(person);
            match result {
                Ok(e) if embeddings.len() < gallery::MAX_TEMPLATES => embeddings.push(e),
                Ok(_) => lines.push(format!("{}: skipped: {} templates at most", p.display(), gallery::MAX_TEMPLATES)),
                Err(e) => {
                    skipped += 1;
                    lines.push(format!("{}: skipped: {e:#}", p.display()));
                }
            }
            bar.set_message(names[person].clone());
            bar.inc(1);
            Ok(())
        },
    )?;
    if let Some(c) = current {
        finish(c, std::mem::take(&mut embeddings), &mut writer, &mut lines);
    }
    bar.finish_and_clear();
    for l in &lines {
        writeln!(out, "{l}")?;
    }
    writeln!(
        out,
        "{enrolled} of {} people enrolled; the gallery holds {} identities",
        names.len(),
        writer.gallery().len()
    )?;
    Ok(if failures + skipped > 0 { Outcome::Partial } else { Outcome::Ok })
}
