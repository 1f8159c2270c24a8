//! The `facegate` binary: argument parsing, logging and exit codes over the library.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use facegate::commands::{self, Context, EnrolOptions, FacePick, LiveCheck, Outcome};
use facegate::gallery::{normalise_name, Dtype, GalleryError};
use facegate::admin;
use facegate::detect::DetectorConfig;
use facegate::eval;
use facegate::exit;
use facegate::PipelineConfig;

#[derive(Parser)]
#[command(name = "facegate", version, about = "Offline face recognition", long_about = None)]
struct Cli {
    /// Cosine similarity at or above which a face is an enrolled identity [default: the
    /// embedder manifest's calibrated match_threshold].
    #[arg(long, global = true)]
    threshold: Option<f32>,
    /// Run the detector at this one input size, WIDTHxHEIGHT in multiples of 32, instead of
    /// choosing per image among 256x256, 320x320, 640x480 and 512x512.
    #[arg(long, global = true, value_parser = facegate::config::parse_detector_size)]
    detector_size: Option<[usize; 2]>,
    /// Images analysed at once by `analyze` [default: the number of CPU cores].
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Configuration file (TOML; `[calibration]` as written by `calibrate --write`): its
    /// calibrated thresholds override the embedder manifest's; --threshold overrides both.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Per-face model [default: mtl; with --board, the board's variant]. Galleries are shared
    /// between all three: the multi-task models keep MobileFaceNet's embedding space.
    #[arg(long, global = true, value_enum)]
    face_model: Option<facegate::pipeline::FaceModel>,
    /// Fused live probability at or above which a face is judged live [default: `[liveness]
    /// threshold` of --config, else the shipped 0.5].
    #[arg(long, global = true, value_parser = parse_probability)]
    liveness_threshold: Option<f32>,
    #[command(subcommand)]
    command: Command,
}

/// A number in [0, 1].
fn parse_probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("must be a number in [0, 1]".into()),
    }
}

/// `WIDTHxHEIGHT` as numbers.
fn parse_frame_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = facegate::config::parse_wxh(s)?;
    if !(16..=8192).contains(&w) || !(16..=8192).contains(&h) {
        return Err("width and height must be 16..=8192".into());
    }
    Ok((w, h))
}

#[derive(Subcommand)]
enum Command {
    /// Detect and analyse every face; one JSON object per image with --json.
    Analyze {
        #[arg(long)]
        json: bool,
        /// Include the L2-normalised identity embedding of each face.
        #[arg(long)]
        embeddings: bool,
        /// Score each face's liveness: "liveness", the probability that it is a live person
        /// and not a print or a screen (two more model runs per face).
        #[arg(long)]
        liveness: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Enrol a person from one or more photos (one face each), or every person of a folder tree
    /// DIR/NAME/*.jpg with --tree. Creates the gallery if there is none.
    Enroll {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long, required_unless_present = "tree", conflicts_with = "tree")]
        name: Option<String>,
        /// Enrol each folder DIR/NAME as the person NAME from the photos in it.
        #[arg(long, value_name = "DIR")]
        tree: Option<PathBuf>,
        /// Use the largest face when a photo holds several.
        #[arg(long)]
        largest: bool,
        /// Enrol even when a face matches an identity enrolled under another name, or when a
        /// new photo for an enrolled name does not match that person's templates.
        #[arg(long)]
        force: bool,
        /// Template type of a gallery created by this enrolment: f32 or int8.
        #[arg(long, default_value = "f32")]
        dtype: Dtype,
        #[arg(required_unless_present = "tree", conflicts_with = "tree")]
        images: Vec<PathBuf>,
    },
    /// Identify every face against the gallery.
    Identify {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long)]
        json: bool,
        /// Show each face's liveness.
        #[arg(long)]
        liveness: bool,
        /// Refuse a face judged not live ("refused": "spoof", no identity); implies --liveness.
        #[arg(long)]
        require_live: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Check one photo against one enrolled person: exit 0 match, 1 no match, 2 error, 6 the
    /// face was judged not live (with --require-live).
    Verify {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long)]
        name: String,
        /// Refuse a face judged not live (a print or a screen) with exit code 6.
        #[arg(long)]
        require_live: bool,
        image: PathBuf,
    },
    /// List or remove enrolled identities.
    Gallery {
        #[command(subcommand)]
        action: GalleryAction,
    },
    /// Draw boxes, landmarks, name, age and gender onto a picture.
    Annotate {
        image: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Name the faces found in this gallery.
        #[arg(long)]
        gallery: Option<PathBuf>,
        /// Label each face live or SPOOF with its liveness.
        #[arg(long)]
        liveness: bool,
    },
    /// Run the main job on bundled sample photos: enrol, identify, annotate.
    Demo {
        #[arg(short, long, default_value = "facegate-demo.png")]
        output: PathBuf,
    },
    /// Measure accuracy on labelled photos: 1:1 verification, identification, age and gender.
    Eval {
        #[command(subcommand)]
        action: EvalAction,
    },
    /// Choose the match threshold for a target false-accept rate from impostor comparisons
    /// (1:1), and the 1:N rule for a gallery size; or, with --spoof-labels, the liveness
    /// threshold for a target APCER. --write puts it into a configuration file.
    Calibrate {
        /// Target false-accept rate of one comparison (1:1).
        #[arg(long, default_value_t = 1e-3)]
        far: f64,
        /// Target false-positive identification rate for 1:N (an unknown face named as
        /// someone) [default: --far].
        #[arg(long)]
        fpir: Option<f64>,
        /// Pair list (LFW pairs.txt or CSV path_a,path_b,same): its impostor pairs.
        #[arg(long, value_name = "FILE", conflicts_with = "people_dir")]
        pairs: Option<PathBuf>,
        /// Folder per person (DIR/NAME/*.jpg): every pair of photos of different people.
        #[arg(long, value_name = "DIR")]
        people_dir: Option<PathBuf>,
        /// Live and attack photos (CSV path,label[,kind] as for `eval spoof`): calibrate the
        /// liveness threshold instead of the match threshold.
        #[arg(long, value_name = "CSV", requires = "apcer", conflicts_with_all = ["pairs", "people_dir", "gallery", "unknown_dir", "fpir", "far"])]
        spoof_labels: Option<PathBuf>,
        /// Target APCER of the worst attack species (with --spoof-labels).
        #[arg(long, requires = "spoof_labels")]
        apcer: Option<f64>,
        /// Folder that relative paths of --pairs or --spoof-labels are under [default: .].
        #[arg(long, value_name = "DIR", default_value = ".")]
        images_root: PathBuf,
        /// Installed gallery to calibrate 1:N for (with --unknown-dir).
        #[arg(long, requires = "unknown_dir")]
        gallery: Option<PathBuf>,
        /// Photos of people not in --gallery (in DIR or DIR/*/).
        #[arg(long, value_name = "DIR", requires = "gallery")]
        unknown_dir: Option<PathBuf>,
        /// Write the calibration into this configuration file (created or updated).
        #[arg(long, value_name = "FILE")]
        write: Option<PathBuf>,
        /// Write the JSON report here.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Write PNG plots as PREFIX-far.png (with --spoof-labels: PREFIX-hist.png).
        #[arg(long, value_name = "PREFIX")]
        plots: Option<PathBuf>,
    },
    /// Stand at the door: read frames, recognise, decide, and write events (JSON Lines) until
    /// the source ends or SIGTERM; SIGHUP re-reads the gallery and the configuration.
    /// Settings: the board profile's, with `[kiosk]` of --config over them.
    Run {
        /// A board profile: bundled (rpi4, rpi5, rpi-armv7, jetson-nano, jetson-orin, x86_64) or
        /// FILE.toml. It gives the camera, tract's CPU kind, threads and the [kiosk] defaults.
        #[arg(long)]
        board: Option<String>,
        /// /dev/videoN (build with --features camera), an image, a directory of images, a
        /// FILE.mjpeg stream or a raw FILE.yuyv (with --size) [default: the board's camera].
        #[arg(long)]
        source: Option<PathBuf>,
        #[arg(long)]
        gallery: PathBuf,
        /// Frame size of a camera or a raw YUYV file, WIDTHxHEIGHT [default: the board's camera's].
        #[arg(long, value_parser = parse_frame_size)]
        size: Option<(u32, u32)>,
        /// Replay files at this many frames per second (0: as fast as possible); a camera's rate
        /// [default: the board's camera's; files: 0].
        #[arg(long)]
        fps: Option<f64>,
        /// Write events to this file (rotated at --events-max-bytes) instead of stdout.
        #[arg(long)]
        events: Option<PathBuf>,
        #[arg(long, default_value_t = 16 << 20)]
        events_max_bytes: u64,
        /// Decide on wall-clock time even for files (default: frame number / fps for files).
        #[arg(long)]
        wall_clock: bool,
        /// Log relay pulses instead of switching the GPIO line of [kiosk.relay].
        #[arg(long)]
        dry_run: bool,
    },
    /// List the models compiled into this binary with their sources.
    Models,
}

#[derive(Subcommand)]
enum EvalAction {
    /// 1:1 verification on a pair list: k-fold accuracy, TAR at FAR, EER, ROC/DET plots.
    Verify {
        /// LFW pairs.txt (10 folds) or CSV `path_a,path_b,same` (optional `fold` column).
        #[arg(long, value_name = "FILE")]
        pairs: PathBuf,
        /// Folder that the list's relative paths are under (LFW: the folder of NAME/ folders).
        #[arg(long, value_name = "DIR", default_value = ".")]
        images_root: PathBuf,
        /// Write the JSON report here.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Write PNG plots as PREFIX-roc.png, PREFIX-det.png, PREFIX-hist.png.
        #[arg(long, value_name = "PREFIX")]
        plots: Option<PathBuf>,
    },
    /// Identification: rank-1/5 and open-set DIR at FPIR, from folders per person.
    Ident {
        /// Enrolment photos, DIR/NAME/*.jpg.
        #[arg(long, value_name = "DIR")]
        gallery_dir: PathBuf,
        /// Probe photos, DIR/NAME/*.jpg (a NAME not in the gallery is an unknown person).
        #[arg(long, value_name = "DIR")]
        probe_dir: PathBuf,
        /// Photos of people not enrolled, in DIR or DIR/*/.
        #[arg(long, value_name = "DIR")]
        distractor_dir: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Write PNG plots as PREFIX-cmc.png and PREFIX-dir-fpir.png.
        #[arg(long, value_name = "PREFIX")]
        plots: Option<PathBuf>,
    },
    /// Age MAE (overall and per age band) and gender accuracy on labelled photos.
    Attrs {
        /// CSV path,age,gender (male/female); repeat for several sets.
        #[arg(long, value_name = "CSV", required = true)]
        labels: Vec<PathBuf>,
        #[arg(long, value_name = "DIR", default_value = ".")]
        images_root: PathBuf,
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Write PNG plots as PREFIX-age-mae.png and PREFIX-gender.png.
        #[arg(long, value_name = "PREFIX")]
        plots: Option<PathBuf>,
    },
    /// Presentation-attack detection after ISO/IEC 30107-3: APCER per attack species and
    /// APCER_max, BPCER, BPCER at APCER 1/5/10 %, EER; images without a face counted apart.
    Spoof {
        /// CSV with a header path,label[,kind]: label live or spoof, kind the attack species
        /// (print, replay, mask, ...; empty for live rows).
        #[arg(long, value_name = "CSV")]
        labels: PathBuf,
        #[arg(long, value_name = "DIR", default_value = ".")]
        images_root: PathBuf,
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Write PNG plots as PREFIX-det.png (BPCER vs APCER) and PREFIX-hist.png.
        #[arg(long, value_name = "PREFIX")]
        plots: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum GalleryAction {
    /// Create an empty gallery for the built-in embedder.
    Create {
        #[arg(long)]
        gallery: PathBuf,
        /// Template type: f32, or int8 (a quarter of the size, faster search).
        #[arg(long, default_value = "f32")]
        dtype: Dtype,
    },
    /// Format, model fingerprint, counts and sizes.
    Info {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Enrolled identities with their template counts.
    List {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long)]
        json: bool,
    },
    Remove {
        #[arg(long)]
        gallery: PathBuf,
        name: String,
    },
    Rename {
        #[arg(long)]
        gallery: PathBuf,
        from: String,
        to: String,
    },
    /// Rewrite the gallery without removed identities.
    Compact {
        #[arg(long)]
        gallery: PathBuf,
    },
    /// Write every identity and its templates as JSON Lines.
    Export {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Add every identity of an export (same model) in one commit.
    Import {
        #[arg(long)]
        gallery: PathBuf,
        /// Template type of a gallery created by the import.
        #[arg(long, default_value = "f32")]
        dtype: Dtype,
        input: PathBuf,
    },
}

/// Gallery administration needs only the embedder's key, not the models.
fn run_gallery(action: GalleryAction, embedder: &str, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let key = admin::model_key(embedder)?;
    match action {
        GalleryAction::Create { gallery, dtype } => admin::create(key, &gallery, dtype, out),
        GalleryAction::Info { gallery, json } => admin::info(key, &gallery, json, out),
        GalleryAction::List { gallery, json } => admin::list(key, &gallery, json, out),
        GalleryAction::Remove { gallery, name } => admin::remove(key, &gallery, &normalise_name(&name), out),
        GalleryAction::Rename { gallery, from, to } => {
            admin::rename(key, &gallery, &normalise_name(&from), &normalise_name(&to), out)
        }
        GalleryAction::Compact { gallery } => admin::compact(key, &gallery, out),
        GalleryAction::Export { gallery, output } => admin::export(key, &gallery, &output, out),
        GalleryAction::Import { gallery, dtype, input } => admin::import(key, &gallery, &input, dtype, out),
    }
}

fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    if let Command::Models = cli.command {
        for name in facegate::model::embedded_names() {
            let m = facegate::model::embedded_manifest(name)?;
            writeln!(out, "{name}\t{:?}\t{}\t{}", m.task, m.source, m.licence)?;
        }
        return Ok(Outcome::Ok);
    }
    let board = match &cli.command {
        Command::Run { board: Some(name), .. } => Some(facegate::board::Board::load(name)?),
        _ => None,
    };
    let face_model = cli.face_model.unwrap_or(match board.as_ref().map(|b| b.model) {
        Some(facegate::board::ModelVariant::Int8) => facegate::pipeline::FaceModel::MtlInt8,
        Some(facegate::board::ModelVariant::Float) => facegate::pipeline::FaceModel::Mtl,
        None => facegate::pipeline::FaceModel::default_embedded(),
    });
    let mut config = PipelineConfig::with_face_model(face_model);
    config.liveness = match &cli.command {
        Command::Analyze { liveness, .. } | Command::Annotate { liveness, .. } => *liveness,
        Command::Identify { liveness, require_live, .. } => *liveness || *require_live,
        Command::Verify { require_live, .. } => *require_live,
        Command::Demo { .. } => true,
        Command::Eval { action: EvalAction::Spoof { .. } } | Command::Calibrate { spoof_labels: Some(_), .. } => true,
        _ => false,
    };
    if let Command::Gallery { action } = cli.command {
        return run_gallery(action, &config.embedder, out);
    }
    // Age and gender are only drawn or printed by these; the others skip loading the model.
    if !matches!(
        cli.command,
        Command::Analyze { .. }
            | Command::Annotate { .. }
            | Command::Demo { .. }
            | Command::Run { .. }
            | Command::Eval { action: EvalAction::Attrs { .. } }
    ) {
        config.attributes = None;
    }
    // Validated before the models load.
    let file_config = cli.config.as_deref().map(facegate::config::Config::load).transpose()?;
    if let Some(b) = &board {
        b.check_runs_here()?;
        // Before any model is loaded: tract picks its kernels once.
        b.apply_tract_cpu();
    }
    let settings = facegate::kiosk::Settings { board: board.clone(), file: cli.config.clone(), liveness_threshold: cli.liveness_threshold };
    let kiosk = match cli.command {
        // The file is already read: check its [kiosk] over the board's without reading it again.
        Command::Run { .. } => Some(file_config.clone().unwrap_or_default().kiosk_config(board.as_ref())?),
        _ => None,
    };
    config.liveness |= kiosk.as_ref().is_some_and(|k| k.liveness);
    if let Some(size) = cli.detector_size {
        let manifest = facegate::model::embedded_manifest(&config.detector)?;
        let mut detector = DetectorConfig::from_manifest(&manifest);
        detector.sizes = vec![size];
        config.detector_config = Some(detector);
    } else if let Some(kiosk) = &kiosk {
        config = kiosk.pipeline_config(config)?;
    }
    let file_threshold = file_config.as_ref().and_then(|c| c.calibration.as_ref()).map(|c| c.threshold);
    let mut ctx = Context::new(&config, cli.threshold.or(file_threshold))?;
    if let Some(n) = cli.threads.map(|n| n as usize).or(board.as_ref().map(|b| b.threads)) {
        ctx.threads = n;
    }
    let file_liveness = file_config.as_ref().and_then(|c| c.liveness.as_ref()).map(|l| l.threshold);
    if let Some(t) = cli.liveness_threshold.or(file_liveness) {
        ctx.liveness_threshold = t;
    }
    let calibration = facegate::eval::calibration_in_force(&ctx, file_config.as_ref());
    // 1:N: without --threshold, identification uses the calibrated rule for the gallery's size.
    let serving = match &cli.command {
        Command::Identify { gallery, .. } | Command::Run { gallery, .. } => Some(gallery),
        _ => None,
    };
    if let (Some(gallery), None, Some(cal)) = (serving, cli.threshold, &calibration) {
        let n = ctx.open_gallery(gallery)?.len();
        let (t, past) = cal.threshold_for_gallery(n);
        if past {
            log::warn!("the gallery's {n} identities are past the 1:N calibration data; using threshold {t:.4}");
        }
        log::info!("1:N threshold for {n} identities: {t:.4}");
        ctx.threshold = t;
    }
    // Arguments need not be UTF-8 (paths): shown lossily, never `args()`, which panics on them.
    let command_line = std::iter::once("facegate".to_string())
        .chain(std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    match cli.command {
        Command::Analyze { json, embeddings, liveness, images } => {
            commands::analyze(&ctx, &images, json, embeddings, liveness, out)
        }
        Command::Enroll { gallery, name, tree, largest, force, dtype, images } => {
            let pick = if largest { FacePick::Largest } else { FacePick::Single };
            let options = EnrolOptions { pick, force, dtype };
            match (tree, name) {
                (Some(tree), _) => admin::enroll_tree(&ctx, &gallery, &tree, options, out),
                (None, Some(name)) => commands::enroll(&ctx, &gallery, &normalise_name(&name), &images, options, out),
                (None, None) => unreachable!("clap requires --name or --tree"),
            }
        }
        Command::Identify { gallery, json, liveness, require_live, images } => {
            let live = LiveCheck::new(liveness, require_live);
            commands::identify(&ctx, &gallery, &images, json, live, out)
        }
        Command::Verify { gallery, name, require_live, image } => {
            commands::verify(&ctx, &gallery, &normalise_name(&name), &image, LiveCheck::new(false, require_live), out)
        }
        Command::Annotate { image, output, gallery, liveness } => {
            commands::annotate(&ctx, &image, &output, gallery.as_deref(), liveness, out)
        }
        Command::Demo { output } => commands::demo(&ctx, &output, out),
        Command::Run { board: _, source, gallery, size, fps, events, events_max_bytes, wall_clock, dry_run } => {
            let camera = board.as_ref().map(|b| &b.camera);
            let Some(source) = source.or(camera.map(|c| PathBuf::from(&c.device))) else {
                anyhow::bail!("--source is needed (or --board, whose camera is the default)");
            };
            let is_camera = source.to_str().is_some_and(facegate::source::is_camera);
            let from_board = is_camera.then_some(board.as_ref()).flatten();
            let args = facegate::kiosk::RunArgs {
                source,
                gallery,
                size: size.or(from_board.map(|b| b.camera_size)),
                fps: fps.or(from_board.map(|b| b.camera.fps)).unwrap_or(0.0),
                format: from_board.map(|b| b.camera.format).unwrap_or_default(),
                events,
                events_max_bytes,
                config: kiosk.unwrap_or_default(),
                settings,
                frame_clock: !wall_clock && !is_camera,
                dry_run,
            };
            facegate::kiosk::run_command(&ctx, args)
        }
        Command::Eval { action: EvalAction::Verify { pairs, images_root, report, plots } } => {
            let args = eval::VerifyArgs { pairs, images_root, report, plots, command: command_line };
            eval::verify(&ctx, &args, out)
        }
        Command::Eval { action: EvalAction::Ident { gallery_dir, probe_dir, distractor_dir, report, plots } } => {
            let args = eval::IdentArgs { gallery_dir, probe_dir, distractor_dir, report, plots, command: command_line };
            eval::ident(&ctx, &args, calibration.as_ref(), out)
        }
        Command::Eval { action: EvalAction::Attrs { labels, images_root, report, plots } } => {
            let args = eval::AttrsArgs { labels, images_root, report, plots, command: command_line };
            eval::attrs(&ctx, &args, out)
        }
        Command::Eval { action: EvalAction::Spoof { labels, images_root, report, plots } } => {
            let args = eval::SpoofArgs { labels, images_root, report, plots, command: command_line };
            eval::spoof(&ctx, &args, out)
        }
        Command::Calibrate { spoof_labels: Some(labels), apcer, images_root, write, report, plots, .. } => {
            let apcer = apcer.ok_or_else(|| anyhow::anyhow!("--spoof-labels needs --apcer"))?;
            let args = eval::SpoofCalibrateArgs { labels, images_root, apcer, write, report, plots, command: command_line };
            eval::calibrate_spoof(&ctx, &args, out)
        }
        Command::Calibrate { far, fpir, pairs, people_dir, spoof_labels: None, apcer, images_root, gallery, unknown_dir, write, report, plots } => {
            // clap waives `requires` when the required argument conflicts with one given.
            if apcer.is_some() {
                anyhow::bail!("--apcer goes with --spoof-labels (the liveness threshold); the match threshold takes --far");
            }
            let args = eval::CalibrateArgs {
                far,
                fpir,
                pairs,
                people_dir,
                images_root,
                gallery,
                unknown_dir,
                write,
                report,
                plots,
                command: command_line,
            };
            eval::calibrate(&ctx, &args, out)
        }
        Command::Models | Command::Gallery { .. } => unreachable!("handled above"),
    }
}

/// The documented exit code for an error: gallery problems are told apart from the rest.
fn exit_code(e: &anyhow::Error) -> i32 {
    match e.chain().find_map(|c| c.downcast_ref::<GalleryError>()) {
        Some(GalleryError::Locked { .. }) => exit::BUSY,
        Some(g) if g.is_unusable_file() => exit::GALLERY,
        _ => exit::ERROR,
    }
}

fn main() {
    facegate::model::keep_freed_memory();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { exit::ERROR } else { exit::OK });
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let code = match run(cli, &mut out) {
        Ok(outcome) => outcome.code(),
        Err(e) => {
            let _ = out.flush();
            eprintln!("facegate: error: {e:#}");
            exit_code(&e)
        }
    };
    let _ = out.flush();
    std::process::exit(code);
}
