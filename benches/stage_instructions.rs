//! Instructions per kiosk stage on each board's architecture, because the boards themselves are
//! not here: counted under qemu user mode by `benches/qemu/insn_marks.c` for aarch64 and armv7,
//! and by callgrind natively for x86_64. `benches/qemu/stage_instructions.py` runs it and
//! writes the table.
//!
//! Each stage is bracketed by two calls of getppid(2), the plugin's marker, and repeated
//! `reps` times; this program prints the stage names and repetitions as JSON on stdout, the
//! plugin prints the instruction count at each marker on stderr. Without the plugin it runs
//! as a plain smoke test of the same calls.

use facegate::analyze::{AttributeModel, Embedder};
use facegate::gallery::{pseudo_random_unit, Dtype, Gallery, GalleryWriter, ModelKey, Person};
use facegate::kiosk::KioskConfig;
use facegate::pipeline::{Pipeline, PipelineConfig};

/// The marker: getppid(2) for the qemu plugin; callgrind dumps its counters before this
/// function (`--dump-before=facegate_stage_mark`).
#[inline(never)]
#[no_mangle]
pub extern "C" fn facegate_stage_mark() {
    std::hint::black_box(std::os::unix::process::parent_id());
}

fn mark() {
    facegate_stage_mark();
}

fn main() {
    let kiosk = KioskConfig::default();
    let small = Pipeline::new(&kiosk.pipeline_config(PipelineConfig::default()).unwrap()).unwrap();
    let mut full_config = PipelineConfig::default();
    let manifest = facegate::model::embedded_manifest(&full_config.detector).unwrap();
    let mut d = facegate::detect::DetectorConfig::from_manifest(&manifest);
    d.sizes = vec![[480, 640]];
    full_config.detector_config = Some(d);
    let full = Pipeline::new(&full_config).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let photo = image::open(root.join("assets/samples/obama3.jpg")).unwrap().to_rgb8();
    let face = facegate::scene::face_patch(&full, &photo).unwrap();
    // A 640x480 camera frame with one face 240 px high, as JPEG (what an MJPEG camera sends).
    let frame = facegate::scene::compose(&[(&face, 320.0, 240.0, 240.0)]);
    let mut jpeg = std::io::Cursor::new(Vec::new());
    frame.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();

    let dir = tempfile::tempdir().unwrap();
    let dim = small.embedder.dim();
    let key = ModelKey { dim, fingerprint: facegate::model::fingerprint("mobilefacenet").unwrap() };
    let gallery = |n: usize| {
        let path = dir.path().join(format!("g{n}.fgg"));
        let mut w = GalleryWriter::create(&path, key, Dtype::I8).unwrap();
        let people: Vec<Person> = (0..n).map(|i| Person { name: format!("p{i}"), templates: vec![pseudo_random_unit(i as u64, dim)] }).collect();
        for chunk in people.chunks(5000) {
            w.enrol(chunk).unwrap();
        }
        Gallery::open(&path, key).unwrap()
    };
    let (g1k, g10k) = (gallery(1_000), gallery(10_000));

    let decoded = facegate::frame::decode_image(&jpeg).unwrap();
    let dets = small.detector.detect(&decoded).unwrap();
    assert_eq!(dets.len(), 1, "one face in the frame");
    let landmarks = dets[0].landmarks;
    let probe = small.embedder.embed_crop(&small.embedder.crop(&decoded, &landmarks).unwrap()).unwrap();
    // The per-face models side by side: the multi-task default (float, int8) and the teachers.
    let int8 = Embedder::new("mtl-int8").unwrap();
    let teacher = Embedder::new("mobilefacenet").unwrap();
    let attributes = AttributeModel::new("faceres").unwrap();

    let mut stages: Vec<(&str, usize)> = Vec::new();
    let mut stage = |name: &'static str, reps: usize, f: &mut dyn FnMut()| {
        // One untimed call first: plans and buffers are made on first use.
        f();
        mark();
        for _ in 0..reps {
            f();
        }
        mark();
        stages.push((name, reps));
    };
    stage("decode_jpeg_640x480", 10, &mut || {
        std::hint::black_box(facegate::frame::decode_image(&jpeg).unwrap());
    });
    stage("detect_320x256", 3, &mut || {
        std::hint::black_box(small.detector.detect(&decoded).unwrap());
    });
    stage("detect_640x480", 2, &mut || {
        std::hint::black_box(full.detector.detect(&decoded).unwrap());
    });
    stage("mtl_align_and_run", 5, &mut || {
        std::hint::black_box(small.embedder.run_crop(&small.embedder.crop(&decoded, &landmarks).unwrap()).unwrap());
    });
    stage("mtl_int8_align_and_run", 3, &mut || {
        std::hint::black_box(int8.run_crop(&int8.crop(&decoded, &landmarks).unwrap()).unwrap());
    });
    stage("teacher_align_and_embed", 5, &mut || {
        std::hint::black_box(teacher.embed_crop(&teacher.crop(&decoded, &landmarks).unwrap()).unwrap());
    });
    stage("teacher_age_gender", 3, &mut || {
        std::hint::black_box(attributes.predict(&decoded, &landmarks).unwrap());
    });
    stage("match_1k_int8", 10, &mut || {
        std::hint::black_box(g1k.best(&probe).unwrap());
    });
    stage("match_10k_int8", 5, &mut || {
        std::hint::black_box(g10k.best(&probe).unwrap());
    });
    let list: Vec<_> = stages.iter().map(|(n, r)| serde_json::json!({"stage": n, "reps": r})).collect();
    println!("{}", serde_json::json!({"arch": std::env::consts::ARCH, "stages": list}));
}
