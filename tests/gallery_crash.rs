//! The gallery under crashes and concurrent readers, with real processes.
//!
//! The writer is this test binary run again as a child (`child_writer`), working through a fixed
//! schedule of enrolments, added templates, removals and compactions and saying on stdout which
//! operation it starts and which it finished. The parent kills it with SIGKILL at random moments,
//! or reads the gallery while it writes, and checks every state it sees against the schedule.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use facegate::gallery::{pseudo_random_unit, Dtype, Gallery, GalleryWriter, ModelKey, Person};

const KEY: ModelKey = ModelKey { dim: 192, fingerprint: [5; 32] };
const CHILD_ENV: &str = "FACEGATE_TEST_CHILD_GALLERY";

fn unit(seed: u64) -> Vec<f32> {
    pseudo_random_unit(seed, KEY.dim)
}

#[derive(Debug)]
enum Op {
    Enrol(String, Vec<u64>),
    Add(String, u64),
    Remove(String),
    Compact,
}

/// Operation `k` of the schedule.
fn op(k: u64) -> Op {
    if k % 50 == 49 {
        Op::Compact
    } else if k % 7 == 6 {
        Op::Remove(format!("p{}", k - 2))
    } else if k % 7 == 3 {
        Op::Add(format!("p{}", k - 1), k * 10 + 9)
    } else {
        Op::Enrol(format!("p{k}"), (0..k % 3 + 1).map(|i| k * 10 + i).collect())
    }
}

type State = BTreeMap<String, Vec<u64>>;

/// Applies `op` to `state`; false when it is a no-op (its target was never enrolled).
fn apply(state: &mut State, op: &Op) -> bool {
    match op {
        Op::Enrol(name, seeds) => state.insert(name.clone(), seeds.clone()).is_none(),
        Op::Add(name, seed) => state.get_mut(name).map(|s| s.push(*seed)).is_some(),
        Op::Remove(name) => state.remove(name).is_some(),
        Op::Compact => true,
    }
}

/// The state after operations `0..n`.
fn expected(n: u64) -> State {
    let mut s = State::new();
    (0..n).for_each(|k| {
        apply(&mut s, &op(k));
    });
    s
}

/// What the gallery holds: names and their exact templates.
fn state_of(g: &Gallery) -> BTreeMap<String, Vec<Vec<f32>>> {
    g.templates().into_iter().map(|(id, t)| (g.name(id).unwrap().to_string(), t)).collect()
}

fn as_vectors(s: &State) -> BTreeMap<String, Vec<Vec<f32>>> {
    s.iter().map(|(n, seeds)| (n.clone(), seeds.iter().map(|&x| unit(x)).collect())).collect()
}

/// Run as a child: the writer. Reads the gallery path and the first operation from the
/// environment; does nothing in a normal test run.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else { return };
    let path = Path::new(&path);
    let start: u64 = std::env::var("FACEGATE_TEST_CHILD_START").unwrap().parse().unwrap();
    let end: u64 = std::env::var("FACEGATE_TEST_CHILD_END").unwrap().parse().unwrap();
    let pause = Duration::from_micros(std::env::var("FACEGATE_TEST_CHILD_PAUSE_US").unwrap().parse().unwrap());
    let mut w = Some(GalleryWriter::open_or_create(path, KEY, Dtype::F32).unwrap());
    for k in start..end {
        println!("begin {k}");
        let writer = w.as_mut().unwrap();
        let has = |n: &str| writer.gallery().find(n).is_some();
        match op(k) {
            Op::Enrol(name, seeds) => {
                let templates = seeds.iter().map(|&s| unit(s)).collect();
                writer.enrol(&[Person { name, templates }]).unwrap();
            }
            Op::Add(name, seed) if has(&name) => writer.add_templates(&name, &[unit(seed)]).unwrap(),
            Op::Remove(name) if has(&name) => writer.remove(&name).unwrap(),
            Op::Compact => w = Some(w.take().unwrap().compact().unwrap()),
            Op::Add(..) | Op::Remove(_) => {}
        }
        println!("done {k} generation {}", w.as_ref().unwrap().gallery().generation());
        std::thread::sleep(pause);
    }
}

fn spawn_writer(path: &Path, start: u64, end: u64, pause_us: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, path)
        .env("FACEGATE_TEST_CHILD_START", start.to_string())
        .env("FACEGATE_TEST_CHILD_END", end.to_string())
        .env("FACEGATE_TEST_CHILD_PAUSE_US", pause_us.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The last operation the child reported finished, if any.
fn last_done(out: &str) -> Option<u64> {
    out.lines().filter_map(|l| l.strip_prefix("done ")).filter_map(|l| l.split(' ').next()?.parse().ok()).last()
}

#[test]
fn sigkill_at_random_moments_loses_nothing_committed_and_shows_nothing_partial() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.fgg");
    let mut next = 0u64; // operations 0..next are committed
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let (mut in_flight_committed, mut torn_tails) = (0, 0);
    let rounds = 220;
    for round in 0..rounds {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut child = spawn_writer(&path, next, u64::MAX, 0);
        std::thread::sleep(Duration::from_micros(2_000 + rng % 25_000));
        child.kill().unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        child.wait().unwrap();
        let done = last_done(&out).map_or(next, |d| d + 1);
        assert!(done >= next);
        if !path.exists() {
            assert_eq!(done, 0, "round {round}: the gallery vanished");
            continue;
        }
        let g = Gallery::open(&path, KEY).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let seen = state_of(&g);
        let info = g.info();
        if info.file_bytes > info.committed_bytes {
            torn_tails += 1; // killed after appending a segment and before committing it
        }
        // Killed between its commit and its "done" line, the operation in flight may be there.
        next = if seen == as_vectors(&expected(done)) {
            done
        } else if seen == as_vectors(&expected(done + 1)) {
            in_flight_committed += 1;
            done + 1
        } else {
            panic!("round {round}: the gallery after operation {done} is neither the state before nor after the next one: {:?}", seen.keys().collect::<Vec<_>>());
        };
    }
    assert!(next > rounds as u64, "the writer hardly ran: {next} operations in {rounds} rounds");
    assert!(torn_tails > 0, "no kill landed between an append and its commit");
    eprintln!(
        "{rounds} kills, {next} operations committed, {in_flight_committed} kills after a commit but before its report, {torn_tails} rounds ending with uncommitted bytes past the log"
    );
    // A writer cleans up after a compaction that was killed half way.
    drop(GalleryWriter::open(&path, KEY).unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("g.fgg")]);
}

#[test]
fn a_reader_sees_only_committed_states_while_a_writer_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.fgg");
    GalleryWriter::create(&path, KEY, Dtype::F32).unwrap();
    let ops = 400;
    // Generation after each effective operation: creation is generation 1, every commit adds one.
    let mut by_generation = BTreeMap::new();
    let mut state = State::new();
    let mut generation = 1u64;
    by_generation.insert(generation, state.clone());
    for k in 0..ops {
        if apply(&mut state, &op(k)) {
            generation += 1;
            by_generation.insert(generation, state.clone());
        }
    }
    let mut reader = Gallery::open(&path, KEY).unwrap();
    let mut child = spawn_writer(&path, 0, ops, 500);
    let lines = BufReader::new(child.stdout.take().unwrap());
    let watcher = std::thread::spawn(move || lines.lines().map_while(Result::ok).filter(|l| l.starts_with("done")).count());
    let mut generations_seen = std::collections::BTreeSet::new();
    let mut checks = 0;
    let started = Instant::now();
    loop {
        let running = child.try_wait().unwrap().is_none();
        reader.refresh().unwrap();
        let want = by_generation.get(&reader.generation()).unwrap_or_else(|| panic!("unknown generation {}", reader.generation()));
        let seen = state_of(&reader);
        assert_eq!(seen.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "generation {}", reader.generation());
        assert_eq!(seen, as_vectors(want), "generation {}", reader.generation());
        for (name, seeds) in want.iter().take(8) {
            let m = reader.best(&unit(seeds[0])).unwrap().unwrap();
            assert_eq!(&m.identity, name);
            assert!(m.similarity > 0.9999);
        }
        generations_seen.insert(reader.generation());
        checks += 1;
        if !running {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the writer is stuck");
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(watcher.join().unwrap(), ops as usize);
    reader.refresh().unwrap();
    assert_eq!(state_of(&reader), as_vectors(&expected(ops)));
    assert!(generations_seen.len() > 20, "the reader saw only {} generations", generations_seen.len());
    eprintln!("{checks} checked reads over {} generations", generations_seen.len());
}
