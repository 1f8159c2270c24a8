use std::collections::BTreeMap;
use std::fs;

use proptest::prelude::*;

use super::*;

const KEY: ModelKey = ModelKey { dim: 64, fingerprint: [7; 32] };

fn unit(seed: u64) -> Vec<f32> {
    pseudo_random_unit(seed, KEY.dim)
}

fn person(name: &str, seeds: &[u64]) -> Person {
    Person { name: name.into(), templates: seeds.iter().map(|&s| unit(s)).collect() }
}

fn names(g: &Gallery) -> Vec<String> {
    g.identities().map(|i| i.name.to_string()).collect()
}

#[test]
fn enrols_searches_and_reopens() {
    for dtype in [Dtype::F32, Dtype::I8] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.fgg");
        let mut w = GalleryWriter::create(&path, KEY, dtype).unwrap();
        w.enrol(&[person("ada", &[1]), person("bob", &[2])]).unwrap();
        w.add_templates("ada", &[unit(3)]).unwrap();
        drop(w);
        let g = Gallery::open(&path, KEY).unwrap();
        assert_eq!(names(&g), ["ada", "bob"]);
        assert_eq!(g.identities().map(|i| i.templates).collect::<Vec<_>>(), [2, 1]);
        let m = g.best(&unit(3)).unwrap().unwrap();
        assert_eq!(m.identity, "ada");
        assert!((m.similarity - 1.0).abs() < 2e-3, "{dtype:?} {}", m.similarity);
        let other = dots(&unit(3), &unit(2));
        assert!((m.margin - (1.0 - other)).abs() < 0.02, "{dtype:?} margin {} vs {}", m.margin, 1.0 - other);
        assert!((g.similarity_to("bob", &unit(3)).unwrap().unwrap() - other).abs() < 0.02);
        assert_eq!(g.similarity_to("eve", &unit(3)).unwrap(), None);
    }
}

fn dots(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn int8_ranks_like_f32() {
    let dir = tempfile::tempdir().unwrap();
    let people: Vec<Person> = (0..300).map(|i| person(&format!("p{i}"), &[i, i + 1000])).collect();
    let mut galleries = Vec::new();
    for dtype in [Dtype::F32, Dtype::I8] {
        let path = dir.path().join(format!("{dtype:?}.fgg"));
        GalleryWriter::create(&path, KEY, dtype).unwrap().enrol(&people).unwrap();
        galleries.push(Gallery::open(&path, KEY).unwrap());
    }
    for q in 0..300 {
        // A noisy view of person q's second template.
        let mut probe: Vec<f32> = unit(q + 1000).iter().zip(unit(q + 5000)).map(|(a, b)| a + 0.6 * b).collect();
        let n = probe.iter().map(|x| x * x).sum::<f32>().sqrt();
        probe.iter_mut().for_each(|x| *x /= n);
        let f = galleries[0].search(&probe, 5).unwrap();
        let i = galleries[1].search(&probe, 5).unwrap();
        assert_eq!(f[0].id, q);
        assert_eq!(i[0].id, f[0].id);
        for (a, b) in f.iter().zip(&i) {
            assert!((a.similarity - b.similarity).abs() < 0.02, "{} vs {}", a.similarity, b.similarity);
        }
    }
}

#[test]
fn removes_renames_compacts_and_readers_follow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.fgg");
    let mut w = GalleryWriter::create(&path, KEY, Dtype::I8).unwrap();
    let mut reader = Gallery::open(&path, KEY).unwrap();
    w.enrol(&[person("ada", &[1, 2]), person("bob", &[3]), person("cy", &[4])]).unwrap();
    w.remove("bob").unwrap();
    w.rename("cy", "cyd").unwrap();
    assert!(matches!(w.rename("ada", "cyd"), Err(GalleryError::NameTaken(_))));
    assert!(matches!(w.remove("bob"), Err(GalleryError::UnknownName(_))));
    assert!(reader.refresh().unwrap());
    assert!(!reader.refresh().unwrap());
    assert_eq!(names(&reader), ["ada", "cyd"]);
    assert_eq!(reader.best(&unit(3)).unwrap().unwrap().identity != "bob", true);
    let before = reader.info();
    let scores: Vec<_> = (1..5).map(|s| reader.search(&unit(s), 3).unwrap()).collect();
    let w = w.compact().unwrap();
    let after = w.gallery().info();
    assert!(after.file_bytes < before.file_bytes, "{} !< {}", after.file_bytes, before.file_bytes);
    assert_eq!((after.identities, after.templates, after.segments), (2, 3, 1));
    assert!(after.generation > before.generation);
    assert!(reader.refresh().unwrap(), "the reader must notice the new file");
    assert_eq!(names(&reader), ["ada", "cyd"]);
    let again: Vec<_> = (1..5).map(|s| reader.search(&unit(s), 3).unwrap()).collect();
    assert_eq!(scores, again);
    // Ids survive compaction, so new enrolments do not reuse removed ones.
    let mut w = w;
    let ids = w.enrol(&[person("dee", &[9])]).unwrap();
    assert_eq!(ids, [3]);
}

#[test]
fn a_torn_header_falls_back_to_the_previous_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.fgg");
    let mut w = GalleryWriter::create(&path, KEY, Dtype::F32).unwrap();
    w.enrol(&[person("ada", &[1])]).unwrap();
    w.enrol(&[person("bob", &[2])]).unwrap();
    let generation = w.gallery().generation();
    drop(w);
    let mut bytes = fs::read(&path).unwrap();
    let slot = (generation % 2) as usize * format::SLOT_LEN;
    bytes[slot + 60..slot + 70].fill(0xAB);
    fs::write(&path, &bytes).unwrap();
    let g = Gallery::open(&path, KEY).unwrap();
    assert_eq!(g.generation(), generation - 1);
    assert_eq!(names(&g), ["ada"]);
    // The next commit goes into the damaged slot and the appended bob is overwritten.
    let mut w = GalleryWriter::open(&path, KEY).unwrap();
    w.enrol(&[person("cy", &[3])]).unwrap();
    drop(w);
    assert_eq!(names(&Gallery::open(&path, KEY).unwrap()), ["ada", "cy"]);
}

#[test]
fn damage_is_reported_never_panics_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.fgg");
    let mut w = GalleryWriter::create(&path, KEY, Dtype::I8).unwrap();
    w.enrol(&[person("ada", &[1, 2]), person("bob", &[3])]).unwrap();
    w.remove("bob").unwrap();
    drop(w);
    let good = fs::read(&path).unwrap();
    let check = |bytes: &[u8], what: &str| {
        fs::write(&path, bytes).unwrap();
        let r = Gallery::open(&path, KEY);
        let w = GalleryWriter::open(&path, KEY);
        assert_eq!(fs::read(&path).unwrap(), bytes, "{what}: the file changed");
        (r.err(), w.err())
    };
    for cut in (0..good.len()).step_by(7).chain([good.len() - 1]) {
        let (r, w) = check(&good[..cut], "truncated");
        let r = r.unwrap_or_else(|| panic!("cut at {cut} opened"));
        assert!(matches!(r, GalleryError::Corrupt { .. }), "cut {cut}: {r}");
        assert!(w.is_some_and(|e| e.is_unusable_file()));
    }
    for at in format::LOG_START..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        let (r, _) = check(&bad, "flipped");
        // Padding bytes are outside every checksum; everything else must be caught.
        if let Some(e) = r {
            assert!(matches!(e, GalleryError::Corrupt { .. }), "{e}");
        }
    }
    let mut seg = good.clone();
    seg[format::LOG_START + 70] ^= 0x40;
    assert!(matches!(check(&seg, "payload").0, Some(GalleryError::Corrupt { .. })));
    let mut v3 = good.clone();
    for slot in [0, format::SLOT_LEN] {
        v3[slot + 8] = 3;
    }
    assert!(matches!(check(&v3, "version").0, Some(GalleryError::Version { found: 3, .. })));
    let mut magic = good.clone();
    magic[0..8].copy_from_slice(b"NOTAGALL");
    magic[format::SLOT_LEN..format::SLOT_LEN + 8].copy_from_slice(b"NOTAGALL");
    assert!(matches!(check(&magic, "magic").0, Some(GalleryError::Corrupt { .. })));
    fs::write(&path, &good).unwrap();
    let other = ModelKey { fingerprint: [8; 32], ..KEY };
    assert!(matches!(Gallery::open(&path, other), Err(GalleryError::ModelMismatch { .. })));
    assert!(matches!(GalleryWriter::open(&path, other), Err(GalleryError::ModelMismatch { .. })));
    assert_eq!(fs::read(&path).unwrap(), good);
}

#[test]
fn bad_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.fgg");
    let mut w = GalleryWriter::create(&path, KEY, Dtype::F32).unwrap();
    w.enrol(&[person("ada", &[1])]).unwrap();
    let before = fs::read(&path).unwrap();
    let mut nan = unit(2);
    nan[5] = f32::NAN;
    let short = unit(2)[..10].to_vec();
    let bad = [
        w.enrol(&[Person { name: "bob".into(), templates: vec![nan.clone()] }]),
        w.enrol(&[Person { name: "bob".into(), templates: vec![short] }]),
        w.enrol(&[Person { name: "bob".into(), templates: vec![unit(2).iter().map(|x| x * 2.0).collect()] }]),
        w.enrol(&[Person { name: "bob".into(), templates: vec![] }]),
        w.enrol(&[person("ada", &[2])]),
        w.enrol(&[person("bob", &[2]), person("bob", &[3])]),
        w.enrol(&[person("", &[2])]),
        w.enrol(&[person("a\nb", &[2])]),
        w.add_templates("ada", &vec![unit(4); MAX_TEMPLATES]).map(|_| vec![]),
    ];
    for r in bad {
        assert!(r.is_err());
    }
    assert!(matches!(w.gallery().search(&nan, 1), Err(GalleryError::InvalidEmbedding)));
    assert!(matches!(w.gallery().search(&[1.0], 1), Err(GalleryError::Dimension { .. })));
    assert_eq!(fs::read(&path).unwrap(), before);
    assert!(matches!(GalleryWriter::create(&path, KEY, Dtype::F32), Err(GalleryError::Exists { .. })));
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.fgg");
    let w = GalleryWriter::create(&path, KEY, Dtype::F32).unwrap();
    let second = GalleryWriter::open_waiting(&path, KEY, std::time::Duration::from_millis(50));
    assert!(matches!(second, Err(GalleryError::Locked { .. })));
    drop(w);
    assert!(GalleryWriter::open_waiting(&path, KEY, std::time::Duration::from_millis(50)).is_ok());
}

#[derive(Clone, Debug)]
enum Op {
    Enrol(u8, u8),
    Add(u8),
    Remove(u8),
    Rename(u8, u8),
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, 1u8..4).prop_map(|(n, t)| Op::Enrol(n, t)),
        2 => (0u8..12).prop_map(Op::Add),
        2 => (0u8..12).prop_map(Op::Remove),
        1 => (0u8..12, 0u8..12).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => Just(Op::Compact),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any sequence of operations leaves the file describing exactly what a simple map says,
    /// for a reader that follows along and for one that opens afresh.
    #[test]
    fn agrees_with_a_model(ops in prop::collection::vec(op(), 1..40), int8 in any::<bool>()) {
        let dtype = if int8 { Dtype::I8 } else { Dtype::F32 };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.fgg");
        let mut w = Some(GalleryWriter::create(&path, KEY, dtype).unwrap());
        let mut reader = Gallery::open(&path, KEY).unwrap();
        let mut model: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut seed = 0u64;
        for op in ops {
            let writer = w.as_mut().unwrap();
            match op {
                Op::Enrol(n, t) => {
                    let name = format!("p{n}");
                    seed += 10;
                    let seeds: Vec<u64> = (0..t as u64).map(|i| seed + i).collect();
                    let r = writer.enrol(&[person(&name, &seeds)]);
                    prop_assert_eq!(r.is_ok(), !model.contains_key(&name));
                    model.entry(name).or_insert(seeds);
                }
                Op::Add(n) => {
                    let name = format!("p{n}");
                    seed += 10;
                    let r = writer.add_templates(&name, &[unit(seed)]);
                    prop_assert_eq!(r.is_ok(), model.contains_key(&name));
                    if let Some(s) = model.get_mut(&name) { s.push(seed) }
                }
                Op::Remove(n) => {
                    let name = format!("p{n}");
                    prop_assert_eq!(writer.remove(&name).is_ok(), model.remove(&name).is_some());
                }
                Op::Rename(a, b) => {
                    let (a, b) = (format!("p{a}"), format!("p{b}"));
                    let ok = model.contains_key(&a) && !model.contains_key(&b);
                    prop_assert_eq!(writer.rename(&a, &b).is_ok(), ok);
                    if ok { let s = model.remove(&a).unwrap(); model.insert(b, s); }
                }
                Op::Compact => w = Some(w.take().unwrap().compact().unwrap()),
            }
            reader.refresh().unwrap();
            let fresh = Gallery::open(&path, KEY).unwrap();
            for g in [&reader, &fresh] {
                let mut got: Vec<(String, u32)> = g.identities().map(|i| (i.name.to_string(), i.templates)).collect();
                got.sort();
                let want: Vec<(String, u32)> = model.iter().map(|(n, s)| (n.clone(), s.len() as u32)).collect();
                prop_assert_eq!(got, want);
                for (name, seeds) in &model {
                    for &s in seeds {
                        let m = g.best(&unit(s)).unwrap().unwrap();
                        prop_assert_eq!(&m.identity, name);
                    }
                }
                let mut exported: Vec<(String, usize)> = g.templates().into_iter().map(|(id, t)| (g.name(id).unwrap().to_string(), t.len())).collect();
                exported.sort();
                prop_assert_eq!(exported, model.iter().map(|(n, s)| (n.clone(), s.len())).collect::<Vec<_>>());
            }
        }
    }
}

#[test]
fn names_are_nfc_text_without_control_or_format_characters() {
    use super::{confusable, normalise_name, valid_name};
    for ok in ["obama", "José", "Łukasz", "Barack Obama", "李小龍", "O'Brien"] {
        assert!(valid_name(ok), "{ok:?}");
    }
    for bad in ["", "a\u{202e}b", "a\u{200b}b", "a\u{2066}b", "a\u{feff}", "a\nb", "a\u{2029}", "Jose\u{301}"] {
        assert!(!valid_name(bad), "{bad:?}");
    }
    assert_eq!(normalise_name("Jose\u{301}"), "Jos\u{e9}");
    assert!(valid_name(&normalise_name("Jose\u{301}")));
    assert!(confusable("obama", "\u{43e}bama") && confusable("rnary", "mary"));
    assert!(!confusable("obama", "obama") && !confusable("José", "Jose") && !confusable("ada", "bob"));
}
