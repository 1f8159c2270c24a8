//! The `facegate` binary: argument parsing, logging and exit codes over the library.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use facegate::commands::{self, Context, FacePick, Outcome};
use facegate::detect::DetectorConfig;
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
    #[arg(long, global = true, value_parser = parse_size)]
    detector_size: Option<[usize; 2]>,
    /// Images analysed at once by `analyze` [default: the number of CPU cores].
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or("expected WIDTHxHEIGHT")?;
    let w: usize = w.trim().parse().map_err(|_| "width is not a number")?;
    let h: usize = h.trim().parse().map_err(|_| "height is not a number")?;
    if w == 0 || h == 0 || !w.is_multiple_of(32) || !h.is_multiple_of(32) || w > 4096 || h > 4096 {
        return Err("width and height must be multiples of 32 between 32 and 4096".into());
    }
    Ok([h, w])
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
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Enrol a person from one or more photos (one face each).
    Enroll {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long)]
        name: String,
        /// Use the largest face when a photo holds several.
        #[arg(long)]
        largest: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Identify every face against the gallery.
    Identify {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Check one photo against one enrolled person: exit 0 match, 1 no match, 2 error.
    Verify {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long)]
        name: String,
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
    },
    /// Run the main job on bundled sample photos: enrol, identify, annotate.
    Demo {
        #[arg(short, long, default_value = "facegate-demo.png")]
        output: PathBuf,
    },
    /// List the models compiled into this binary with their sources.
    Models,
}

#[derive(Subcommand)]
enum GalleryAction {
    List {
        #[arg(long)]
        gallery: PathBuf,
    },
    Remove {
        #[arg(long)]
        gallery: PathBuf,
        name: String,
    },
}

fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    if let Command::Models = cli.command {
        for name in facegate::model::embedded_names() {
            let m = facegate::model::embedded_manifest(name)?;
            writeln!(out, "{name}\t{:?}\t{}\t{}", m.task, m.source, m.licence)?;
        }
        return Ok(Outcome::Ok);
    }
    let mut config = PipelineConfig::default();
    // Age and gender are only drawn or printed by these; the others skip loading the model.
    if !matches!(cli.command, Command::Analyze { .. } | Command::Annotate { .. } | Command::Demo { .. }) {
        config.attributes = None;
    }
    if let Some(size) = cli.detector_size {
        let manifest = facegate::model::embedded_manifest(&config.detector)?;
        let mut detector = DetectorConfig::from_manifest(&manifest);
        detector.sizes = vec![size];
        config.detector_config = Some(detector);
    }
    let mut ctx = Context::new(&config, cli.threshold)?;
    if let Some(n) = cli.threads {
        ctx.threads = n as usize;
    }
    match cli.command {
        Command::Analyze { json, embeddings, images } => commands::analyze(&ctx, &images, json, embeddings, out),
        Command::Enroll { gallery, name, largest, images } => {
            let pick = if largest { FacePick::Largest } else { FacePick::Single };
            commands::enroll(&ctx, &gallery, &name, &images, pick, out)
        }
        Command::Identify { gallery, json, images } => commands::identify(&ctx, &gallery, &images, json, out),
        Command::Verify { gallery, name, image } => commands::verify(&ctx, &gallery, &name, &image, out),
        Command::Gallery { action: GalleryAction::List { gallery } } => commands::gallery_list(&ctx, &gallery, out),
        Command::Gallery { action: GalleryAction::Remove { gallery, name } } => {
            commands::gallery_remove(&ctx, &gallery, &name, out)
        }
        Command::Annotate { image, output, gallery } => {
            commands::annotate(&ctx, &image, &output, gallery.as_deref(), out)
        }
        Command::Demo { output } => commands::demo(&ctx, &output, out),
        Command::Models => unreachable!("handled above"),
    }
}

fn main() {
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
            exit::ERROR
        }
    };
    let _ = out.flush();
    std::process::exit(code);
}
