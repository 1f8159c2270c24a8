//! Reading evaluation inputs: pair lists (LFW `pairs.txt`, CSV), attribute label lists,
//! presentation (live/spoof) lists and folder-per-person image trees. Parsing only; no images
//! are opened here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use super::metrics::assign_folds;

/// A verification pair list.
#[derive(Clone, Debug, PartialEq)]
pub struct PairList {
    pub pairs: Vec<Pair>,
    /// Where the folds came from, for the report.
    pub folds_from: String,
    pub format: &'static str,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    pub a: PathBuf,
    pub b: PathBuf,
    pub same: bool,
    pub fold: usize,
}

/// Folds given to a list that has none (see [`assign_folds`]).
pub const DEFAULT_FOLDS: usize = 10;

/// Reads `path` as an LFW `pairs.txt` (first line `FOLDS PER_FOLD`, or a single count) or as a
/// CSV (`path_a,path_b,same` with an optional `fold` column and an optional header), telling
/// them apart by the first line. Relative image paths are taken under `root`.
pub fn read_pairs(path: &Path, root: &Path) -> Result<PairList> {
    let text = crate::frame::read_text_file(path, 1 << 30).with_context(|| format!("reading {}", path.display()))?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let list = if first.contains(',') { parse_csv_pairs(&text, root) } else { parse_lfw_pairs(&text, root) };
    let list = list.with_context(|| format!("pair list {}", path.display()))?;
    if !list.pairs.iter().any(|p| p.same) || list.pairs.iter().all(|p| p.same) {
        bail!("pair list {} needs both genuine and impostor pairs", path.display());
    }
    Ok(list)
}

fn parse_same(v: &str, line: usize) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "same" | "yes" => Ok(true),
        "0" | "false" | "different" | "no" => Ok(false),
        other => bail!("line {line}: `same` must be 1 or 0 (or true/false), not {other:?}"),
    }
}

/// The CSV pair list. Columns by header name when the first line names `path_a`, `path_b`
/// and `same` (and optionally `fold`); otherwise three columns `path_a,path_b,same`. Without
/// a `fold` column the pairs get [`DEFAULT_FOLDS`] folds from [`assign_folds`].
pub fn parse_csv_pairs(text: &str, root: &Path) -> Result<PairList> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).peekable();
    let (mut ia, mut ib, mut is, mut ifold) = (0, 1, 2, None);
    if let Some((_, head)) = lines.peek() {
        let cols: Vec<String> = head.split(',').map(|c| c.trim().to_ascii_lowercase()).collect();
        if cols.iter().any(|c| c == "path_a") {
            let col = |name: &str| cols.iter().position(|c| c == name);
            (ia, ib, is) = match (col("path_a"), col("path_b"), col("same")) {
                (Some(a), Some(b), Some(s)) => (a, b, s),
                _ => bail!("the header must name path_a, path_b and same"),
            };
            ifold = col("fold");
            lines.next();
        }
    }
    let mut pairs = Vec::new();
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let need = ia.max(ib).max(is).max(ifold.unwrap_or(0)) + 1;
        if f.len() < need {
            bail!("line {}: {} fields, expected {need}", i + 1, f.len());
        }
        let fold = match ifold {
            Some(c) => f[c].parse().with_context(|| format!("line {}: fold {:?} is not a number", i + 1, f[c]))?,
            None => 0,
        };
        pairs.push(Pair { a: root.join(f[ia]), b: root.join(f[ib]), same: parse_same(f[is], i + 1)?, fold });
    }
    let folds_from = if ifold.is_some() {
        "the list's fold column".to_string()
    } else {
        let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
        for (p, f) in pairs.iter_mut().zip(assign_folds(&same, DEFAULT_FOLDS)) {
            p.fold = f;
        }
        format!(
            "assigned: genuine and impostor pairs each cut in file order into {DEFAULT_FOLDS} contiguous blocks (the j-th of n goes to fold floor(j*{DEFAULT_FOLDS}/n))"
        )
    };
    Ok(PairList { pairs, folds_from, format: "csv" })
}

/// The LFW `pairs.txt`: a header `FOLDS PER_FOLD`, then per fold PER_FOLD matched lines
/// `name n1 n2` and PER_FOLD mismatched lines `name1 n1 name2 n2`; images at
/// `root/name/name_%04d.jpg`. A header of one number N (`pairsDevTrain.txt`) is one set of N
/// matched then N mismatched pairs, given folds like a CSV without them.
pub fn parse_lfw_pairs(text: &str, root: &Path) -> Result<PairList> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, head) = lines.next().context("empty pair list")?;
    let nums: Vec<usize> = head
        .split_whitespace()
        .map(|v| v.parse().with_context(|| format!("line 1: {head:?} is not `FOLDS PER_FOLD`")))
        .collect::<Result<_>>()?;
    let (folds, per) = match nums[..] {
        [folds, per] => (folds, per),
        [per] => (1, per),
        _ => bail!("line 1: {head:?} is not `FOLDS PER_FOLD`"),
    };
    let image = |name: &str, n: &str, line: usize| -> Result<PathBuf> {
        let n: u32 = n.parse().with_context(|| format!("line {line}: image number {n:?}"))?;
        Ok(root.join(name).join(format!("{name}_{n:04}.jpg")))
    };
    let mut pairs = Vec::with_capacity(folds * per * 2);
    for fold in 0..folds {
        for same in [true, false] {
            for _ in 0..per {
                let (i, line) = lines.next().with_context(|| {
                    format!("the list ends early: fold {fold} needs {per} matched and {per} mismatched pairs")
                })?;
                let f: Vec<&str> = line.split_whitespace().collect();
                let (a, b) = match (same, f.len()) {
                    (true, 3) => (image(f[0], f[1], i + 1)?, image(f[0], f[2], i + 1)?),
                    (false, 4) => (image(f[0], f[1], i + 1)?, image(f[2], f[3], i + 1)?),
                    (true, _) => bail!("line {}: expected a matched pair `name n1 n2`, got {line:?}", i + 1),
                    (false, _) => bail!("line {}: expected a mismatched pair `name1 n1 name2 n2`, got {line:?}", i + 1),
                };
                pairs.push(Pair { a, b, same, fold });
            }
        }
    }
    if let Some((i, _)) = lines.next() {
        bail!("line {}: more pairs than the header's {folds} x 2 x {per}", i + 1);
    }
    let folds_from = if folds > 1 {
        format!("the LFW list's {folds} folds")
    } else {
        let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
        for (p, f) in pairs.iter_mut().zip(assign_folds(&same, DEFAULT_FOLDS)) {
            p.fold = f;
        }
        format!("assigned: one LFW set cut into {DEFAULT_FOLDS} contiguous blocks per kind")
    };
    Ok(PairList { pairs, folds_from, format: "lfw" })
}

/// One labelled photo for `eval attrs`.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub path: PathBuf,
    pub age: f32,
    pub male: bool,
}

/// A label CSV `path,age,gender` (header optional; columns by name when the first line names
/// `age` and `gender`, with `path` or `file` for the image); gender `male`/`female` (or
/// `m`/`f`). Relative paths are taken under `root`.
pub fn read_labels(path: &Path, root: &Path) -> Result<Vec<Label>> {
    let text = crate::frame::read_text_file(path, 1 << 30).with_context(|| format!("reading {}", path.display()))?;
    parse_labels(&text, root).with_context(|| format!("label list {}", path.display()))
}

pub fn parse_labels(text: &str, root: &Path) -> Result<Vec<Label>> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).peekable();
    let (mut ip, mut ia, mut ig) = (0, 1, 2);
    if let Some((_, head)) = lines.peek() {
        let cols: Vec<String> = head.split(',').map(|c| c.trim().to_ascii_lowercase()).collect();
        if cols.iter().any(|c| c == "age") && cols.iter().any(|c| c == "gender") {
            let col = |name: &str| cols.iter().position(|c| c == name);
            ip = col("path").or(col("file")).context("the header must name path (or file), age and gender")?;
            ia = col("age").unwrap_or(1);
            ig = col("gender").unwrap_or(2);
            lines.next();
        }
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() <= ip.max(ia).max(ig) {
            bail!("line {}: expected path,age,gender, got {line:?}", i + 1);
        }
        let age: f32 = f[ia].parse().ok().filter(|a: &f32| a.is_finite() && *a >= 0.0 && *a < 150.0).with_context(|| {
            format!("line {}: age {:?} is not a number of years", i + 1, f[ia])
        })?;
        let male = match f[ig].to_ascii_lowercase().as_str() {
            "male" | "m" => true,
            "female" | "f" => false,
            g => bail!("line {}: gender must be male or female, not {g:?}", i + 1),
        };
        out.push(Label { path: root.join(f[ip]), age, male });
    }
    if out.is_empty() {
        bail!("no labelled photos");
    }
    Ok(out)
}

/// Image files (jpg, jpeg, png; case-insensitive) directly in `dir`, sorted.
pub fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    crate::frame::images_in(dir).with_context(|| format!("reading {}", dir.display()))
}

/// A folder per person: `dir/NAME/*.jpg`. Images directly in `dir` are not anybody's and are
/// refused unless `loose` is given, where they are returned under the name `""`.
pub fn people_in(dir: &Path, loose: bool) -> Result<BTreeMap<String, Vec<PathBuf>>> {
    let mut people = BTreeMap::new();
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let images = images_in(&p)?;
            if !images.is_empty() {
                people.insert(name, images);
            }
        }
    }
    let loose_images = images_in(dir)?;
    if !loose_images.is_empty() {
        if !loose {
            bail!("{}: images directly in the folder; expected one folder per person", dir.display());
        }
        people.insert(String::new(), loose_images);
    }
    if people.is_empty() {
        bail!("{}: no images (expected one folder of JPEG/PNG photos per person)", dir.display());
    }
    Ok(people)
}

/// Every image directly in `dir` or in its folders one level down, sorted by folder.
pub fn images_in_tree(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(people_in(dir, true)?.into_values().flatten().collect())
}

/// One presentation of `eval spoof` and `calibrate --spoof-labels`.
#[derive(Clone, Debug, PartialEq)]
pub struct SpoofLabel {
    pub path: PathBuf,
    /// `None`: a live (bona fide) presentation; `Some(species)`: an attack of that species.
    pub attack: Option<String>,
}

/// The species of an attack listed without a kind.
pub const UNSPECIFIED_SPECIES: &str = "unspecified";

/// A presentation list: CSV with a header naming `path` and `label` and optionally `kind`
/// (any order); label `live` or `spoof` (any case), kind the attack species (print, replay,
/// mask, …; lower-cased; empty for live rows; [`UNSPECIFIED_SPECIES`] for an attack without
/// one). Relative paths are taken under `root`. A path listed twice is refused, and so is a
/// list without both live and spoof rows.
pub fn read_spoof_labels(path: &Path, root: &Path) -> Result<Vec<SpoofLabel>> {
    let text = crate::frame::read_text_file(path, 1 << 30).with_context(|| format!("reading {}", path.display()))?;
    parse_spoof_labels(&text, root).with_context(|| format!("presentation list {}", path.display()))
}

pub fn parse_spoof_labels(text: &str, root: &Path) -> Result<Vec<SpoofLabel>> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (i, head) = lines.next().context("empty list (expected a header path,label[,kind])")?;
    let cols: Vec<String> = head.split(',').map(|c| c.trim().to_ascii_lowercase()).collect();
    let col = |name: &str| cols.iter().position(|c| c == name);
    let (ip, il, ik) = match (col("path"), col("label"), col("kind")) {
        (Some(p), Some(l), k) => (p, l, k),
        _ => bail!("line {}: the header must name path and label (and optionally kind), not {head:?}", i + 1),
    };
    let mut out = Vec::new();
    let mut first_line: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() <= ip.max(il) {
            bail!("line {}: expected path,label[,kind], got {line:?}", i + 1);
        }
        let kind = ik.and_then(|k| f.get(k)).map_or(String::new(), |k| k.to_lowercase());
        let attack = match f[il].to_ascii_lowercase().as_str() {
            "live" if kind.is_empty() => None,
            "live" => bail!("line {}: a live presentation has no attack kind, not {kind:?}", i + 1),
            "spoof" if kind.is_empty() => Some(UNSPECIFIED_SPECIES.to_string()),
            "spoof" => Some(kind),
            other => bail!("line {}: label must be live or spoof, not {other:?}", i + 1),
        };
        if f[ip].is_empty() {
            bail!("line {}: the path is empty", i + 1);
        }
        let path = root.join(f[ip]);
        if let Some(first) = first_line.insert(path.clone(), i + 1) {
            bail!("line {}: {} is listed again (first on line {first})", i + 1, f[ip]);
        }
        out.push(SpoofLabel { path, attack });
    }
    if !out.iter().any(|l| l.attack.is_none()) || !out.iter().any(|l| l.attack.is_some()) {
        bail!("the list needs both live and spoof presentations");
    }
    Ok(out)
}
