//! The file backend with real processes: several processes sharing one store, the dogpile
//! lock across processes, a writer killed with SIGKILL mid-write, and crafted keys that try
//! to escape the store.
//!
//! A test without the libtest harness: `main` runs the scenarios and spawns this same
//! executable as the child processes, which know their part from `DOGPILE_TEST_CHILD`.
//! Exits non-zero, naming what failed, if any scenario fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use dogpile::clock::{Clock, ManualClock, SystemClock};
use dogpile::{CacheRegion, FileBackend, RegionConfig};
use serde::{Deserialize, Serialize};

/// The environment variable naming a child's part.
const CHILD: &str = "DOGPILE_TEST_CHILD";
/// The store's directory, for children.
const STORE: &str = "DOGPILE_TEST_STORE";
/// Extra backend arguments for children: `name=value;name=value`.
const ARGS: &str = "DOGPILE_TEST_ARGS";
/// The child's number.
const ID: &str = "DOGPILE_TEST_ID";
/// A directory for the children's files (start signal, creator log).
const WORK: &str = "DOGPILE_TEST_WORK";

/// How long a scenario waits for children before it reports them as hung.
const PATIENCE: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    if let Ok(part) = std::env::var(CHILD) {
        return child(&part);
    }
    let scenarios: [(&str, fn()); 5] = [
        (
            "processes_write_and_read_the_same_keys",
            processes_write_and_read_the_same_keys,
        ),
        (
            "dogpile_lock_across_processes",
            dogpile_lock_across_processes,
        ),
        (
            "without_file_locks_processes_create_separately",
            without_file_locks_processes_create_separately,
        ),
        (
            "sigkill_mid_write_leaves_old_or_new_values",
            sigkill_mid_write_leaves_old_or_new_values,
        ),
        (
            "crafted_keys_stay_inside_the_store",
            crafted_keys_stay_inside_the_store,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, Vec::new());
    for (name, scenario) in scenarios {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        match panic::catch_unwind(AssertUnwindSafe(scenario)) {
            Ok(()) => {
                println!("test {name} ... ok ({:.1?})", started.elapsed());
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(name);
            }
        }
    }
    println!();
    println!("file_processes: {passed} passed, {} failed", failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

// ----- shared helpers --------------------------------------------------------------------

/// A value whose parts all derive from `(writer, iteration)`, with a body whose length
/// varies: a torn, truncated or mixed value fails [`Stamp::is_consistent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stamp {
    writer: u32,
    iteration: u32,
    check: u64,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

impl Stamp {
    fn new(writer: u32, iteration: u32, body_len: usize) -> Self {
        let check = u64::from(writer) * 1_000_003 + u64::from(iteration);
        let mut body = check.to_le_bytes().repeat(body_len / 8 + 1);
        body.truncate(body_len);
        Stamp {
            writer,
            iteration,
            check,
            body,
        }
    }

    fn is_consistent(&self) -> bool {
        *self == Stamp::new(self.writer, self.iteration, self.body.len())
    }
}

fn region_on(
    store: &Path,
    args: &[(String, String)],
    clock: Arc<dyn Clock>,
    expiration: Duration,
) -> CacheRegion {
    let region = CacheRegion::builder().clock(clock).build();
    let mut config = RegionConfig::new("file")
        .argument("filename", store.display())
        .expiration_time(expiration);
    for (name, value) in args {
        config = config.argument(name, value);
    }
    region
        .configure(config)
        .unwrap_or_else(|e| panic!("cannot open the store {}: {e}", store.display()));
    region
}

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set")))
}

fn child_args() -> Vec<(String, String)> {
    std::env::var(ARGS)
        .unwrap_or_default()
        .split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// Starts this executable as child `id` playing `part`.
fn spawn(part: &str, id: u32, store: &Path, work: &Path, args: &str) -> Child {
    Command::new(std::env::current_exe().expect("the test executable"))
        .env(CHILD, part)
        .env(ID, id.to_string())
        .env(STORE, store)
        .env(WORK, work)
        .env(ARGS, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start a child process: {e}"))
}

/// Waits for `child` to end successfully and returns its standard output's lines.
fn finish(mut child: Child, what: &str) -> Vec<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            let lines = reader.join().expect("reader thread");
            assert!(
                status.success(),
                "{what} failed ({status}); it printed: {lines:#?}"
            );
            return lines;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish in {PATIENCE:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Blocks until `path` exists.
fn wait_for(path: &Path) {
    let deadline = Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        thread::sleep(Duration::from_millis(1));
    }
}

// ----- children ----------------------------------------------------------------------------

fn child(part: &str) -> ExitCode {
    let outcome = panic::catch_unwind(|| match part {
        "writer" => writer(),
        "racer" => racer(),
        "crasher" => crasher(),
        "crafted" => crafted(),
        other => panic!("unknown child part {other}"),
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE, // the panic message went to stderr
    }
}

const SHARED_KEYS: u32 = 6;
const WRITER_ITERATIONS: u32 = 80;

fn shared_key(i: u32) -> String {
    format!("shared/{i}")
}

fn own_key(writer: u32) -> String {
    format!("own/{writer}")
}

fn body_len(iteration: u32) -> usize {
    (iteration as usize * 7919) % 48_000
}

/// Writes the shared keys and its own key over and over, checking every value it reads.
fn writer() {
    let id: u32 = std::env::var(ID).unwrap().parse().unwrap();
    let region = region_on(
        &env_path(STORE),
        &child_args(),
        Arc::new(SystemClock),
        Duration::from_secs(3600),
    );
    let shared: Vec<String> = (0..SHARED_KEYS).map(shared_key).collect();
    let mut seen = vec![false; shared.len()];
    for i in 0..WRITER_ITERATIONS {
        region
            .set(
                &shared[(i % SHARED_KEYS) as usize],
                &Stamp::new(id, i, body_len(i)),
            )
            .unwrap();
        region
            .set(&own_key(id), &Stamp::new(id, i, body_len(i + 1)))
            .unwrap();
        let values = region.get_multi::<Stamp, _>(&shared).unwrap();
        for ((key, value), seen) in shared.iter().zip(values).zip(&mut seen) {
            match value {
                Some(value) => {
                    assert!(
                        value.is_consistent(),
                        "{key} holds a damaged value: {value:?}"
                    );
                    *seen = true;
                }
                // Nobody deletes: a value once there can only be replaced. A miss means a
                // reader saw a file half written (and the backend rejected it).
                None => assert!(!*seen, "{key} vanished: a half-written value was read"),
            }
        }
        let own = region.get::<Stamp>(&own_key(id)).unwrap();
        assert_eq!(
            own,
            Some(Stamp::new(id, i, body_len(i + 1))),
            "own key after write {i}"
        );
    }
    println!("done");
}

/// Waits for the start signal, then races with its threads (and the other processes) on
/// `get_or_create` of the key named by the work directory's `key` file. The creator logs
/// its call to `created` and takes a while, so that everybody piles up.
fn racer() {
    let id: u32 = std::env::var(ID).unwrap().parse().unwrap();
    let work = env_path(WORK);
    let region = region_on(
        &env_path(STORE),
        &child_args(),
        Arc::new(SystemClock),
        Duration::from_secs(60),
    );
    let key = fs::read_to_string(work.join("key")).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    wait_for(&work.join("go"));
    let results: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (region, key, work) = (&region, &key, &work);
                s.spawn(move || {
                    region
                        .get_or_create(key, || {
                            let mut log = OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(work.join("created"))
                                .unwrap();
                            // One write: lines appended by several processes at once
                            // do not interleave.
                            log.write_all(format!("process {id} thread {t}\n").as_bytes())
                                .unwrap();
                            thread::sleep(Duration::from_millis(300));
                            format!("new from process {id}")
                        })
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for result in results {
        println!("result {result}");
    }
}

const CRASH_KEYS: u32 = 8;

fn crash_key(i: u32) -> String {
    format!("crash/{i}")
}

fn crash_body_len(iteration: u32) -> usize {
    512 * 1024 + (iteration as usize * 40_009) % (1024 * 1024)
}

/// Writes large values in a loop until killed, saying after each write how far it got.
/// The values are made beforehand, so that the loop spends its time writing.
fn crasher() {
    let id: u32 = std::env::var(ID).unwrap().parse().unwrap();
    let region = region_on(
        &env_path(STORE),
        &[],
        Arc::new(SystemClock),
        Duration::from_secs(3600),
    );
    let values: Vec<Stamp> = (0..2 * CRASH_KEYS)
        .map(|n| {
            let iteration = id * 1_000_000 + n;
            Stamp::new(1, iteration, crash_body_len(iteration))
        })
        .collect();
    let mut out = std::io::stdout();
    for i in 0.. {
        let value = &values[i % values.len()];
        region
            .set(&crash_key(value.iteration % CRASH_KEYS), value)
            .unwrap();
        writeln!(out, "wrote {i}").unwrap();
        out.flush().unwrap();
    }
}

/// Keys that would escape the store if they were used as paths.
///
/// The absolute ones name bait files in the test's own directory (an `/etc/passwd` of its
/// own) rather than the machine's: a broken backend must fail this test, not damage the
/// machine it runs on (tests often run as root in containers). The relative ones climb at
/// most into that directory.
fn crafted_keys(root: &Path) -> Vec<String> {
    let bait = root.join("parent/sibling/etc/passwd");
    vec![
        "../x".into(),
        "../../x".into(),
        "../../../x".into(),
        "../../../../x".into(),
        "../sibling/file.txt".into(),
        "../../../sibling/file.txt".into(),
        bait.display().to_string(),
        format!("{}/", bait.display()),
        root.join("outside").display().to_string(),
        "etc/passwd".into(),
        "a\0b".into(),
        "\0".into(),
        "..".into(),
        ".".into(),
        "".into(),
        "k".repeat(10 * 1024),
        "../".repeat(3000),
        "ключ/../../..".into(),
        "C:\\Windows\\system32".into(),
        "data/../../x".into(),
        "tmp/../../x".into(),
        "locks".into(),
        "dogpile-file-store".into(),
        "~/.bashrc".into(),
        "x/\n/y".into(),
    ]
}

/// Writes, reads and deletes the crafted keys through a region.
fn crafted() {
    let region = region_on(
        &env_path(STORE),
        &[],
        Arc::new(SystemClock),
        Duration::from_secs(3600),
    );
    let keys = crafted_keys(&env_path(WORK));
    for (i, key) in keys.iter().enumerate() {
        region.set(key, &format!("value {i}")).unwrap();
        let made: String = region.get_or_create(key, || "not this".into()).unwrap();
        assert_eq!(made, format!("value {i}"), "key {key:?}");
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            region.get::<String>(key).unwrap(),
            Some(format!("value {i}")),
            "key {key:?}"
        );
    }
    // Delete every other key.
    for key in keys.iter().step_by(2) {
        region.delete(key).unwrap();
    }
    println!("done");
}

// ----- scenarios ---------------------------------------------------------------------------

fn processes_write_and_read_the_same_keys() {
    const WRITERS: u32 = 4;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let children: Vec<Child> = (0..WRITERS)
        .map(|id| spawn("writer", id, &store, dir.path(), ""))
        .collect();
    for (id, child) in children.into_iter().enumerate() {
        let out = finish(child, &format!("writer {id}"));
        assert_eq!(out, vec!["done"]);
    }
    let region = region_on(
        &store,
        &[],
        Arc::new(SystemClock),
        Duration::from_secs(3600),
    );
    for i in 0..SHARED_KEYS {
        let value = region.get::<Stamp>(&shared_key(i)).unwrap();
        let value = value.unwrap_or_else(|| panic!("{} is missing", shared_key(i)));
        assert!(value.is_consistent(), "{} is damaged", shared_key(i));
        assert!(
            value.writer < WRITERS && value.iteration % SHARED_KEYS == i,
            "{value:?}"
        );
    }
    for id in 0..WRITERS {
        let last = WRITER_ITERATIONS - 1;
        assert_eq!(
            region.get::<Stamp>(&own_key(id)).unwrap(),
            Some(Stamp::new(id, last, body_len(last + 1))),
            "writer {id}'s last value"
        );
    }
    assert_no_partial_files(&store);
}

/// Runs `processes` racers (4 threads each) on `key`, after the parent put `stale` there
/// (or nothing), and returns how many times the creator ran and what the callers got.
fn race(store: &Path, args: &str, key: &str, processes: u32) -> (Vec<String>, Vec<String>) {
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("key"), key).unwrap();
    let mut children: Vec<Child> = (0..processes)
        .map(|id| spawn("racer", id, store, work.path(), args))
        .collect();
    // Start them together: each says "ready" once its store is open.
    for child in &mut children {
        let stdout = child.stdout.as_mut().unwrap();
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "a racer did not start");
    }
    fs::write(work.path().join("go"), b"").unwrap();
    let mut results = Vec::new();
    for (id, child) in children.into_iter().enumerate() {
        for line in finish(child, &format!("racer {id}")) {
            if let Some(result) = line.strip_prefix("result ") {
                results.push(result.to_owned());
            }
        }
    }
    assert_eq!(
        results.len(),
        processes as usize * 4,
        "every caller returned"
    );
    let created = fs::read_to_string(work.path().join("created")).unwrap_or_default();
    (created.lines().map(str::to_owned).collect(), results)
}

/// Puts "old" under `key`, created an hour ago: stale for the racers' 60 s expiration.
fn put_stale(store: &Path, key: &str) {
    let an_hour_ago = Arc::new(ManualClock::new(SystemClock.now() - 3600.0));
    region_on(store, &[], an_hour_ago, Duration::from_secs(60))
        .set(key, &"old".to_string())
        .unwrap();
}

fn dogpile_lock_across_processes() {
    const PROCESSES: u32 = 4;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for round in 0..3 {
        // No value at all: everybody waits for the one creator, then gets its value.
        let missing = format!("missing/{round}");
        let (created, results) = race(&store, "", &missing, PROCESSES);
        assert_eq!(
            created.len(),
            1,
            "round {round}, missing key: creator calls {created:?}"
        );
        let distinct: BTreeSet<&String> = results.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "round {round}: everybody gets the one new value: {results:?}"
        );
        assert!(results[0].starts_with("new from process"));

        // A stale value: one creator; the others get the stale value or the new one.
        let expired = format!("expired/{round}");
        put_stale(&store, &expired);
        let (created, results) = race(&store, "", &expired, PROCESSES);
        assert_eq!(
            created.len(),
            1,
            "round {round}, expired key: creator calls {created:?}"
        );
        let new = created[0]
            .split(' ')
            .nth(1)
            .map(|p| format!("new from process {p}"))
            .unwrap();
        for result in &results {
            assert!(
                *result == "old" || *result == new,
                "round {round}: got {result:?}"
            );
        }
        let region = region_on(&store, &[], Arc::new(SystemClock), Duration::from_secs(60));
        assert_eq!(region.get::<String>(&expired).unwrap(), Some(new));
    }
}

fn without_file_locks_processes_create_separately() {
    // The control for the scenario above: without the file lock, the same race runs the
    // creator in several processes, so the scenario above would notice a lock that does
    // not work across processes.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    put_stale(&store, "expired");
    let (created, _) = race(&store, "dogpile_lockfile=false", "expired", 4);
    let processes: BTreeSet<&str> = created
        .iter()
        .filter_map(|line| line.split(' ').nth(1))
        .collect();
    assert!(
        processes.len() > 1,
        "the creator ran in one process only: {created:?}"
    );
    // Within one process the region's own lock still allows one creator.
    assert_eq!(processes.len(), created.len(), "{created:?}");
}

fn sigkill_mid_write_leaves_old_or_new_values() {
    const ROUNDS: u32 = 5;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    {
        let region = region_on(
            &store,
            &[],
            Arc::new(SystemClock),
            Duration::from_secs(3600),
        );
        for i in 0..CRASH_KEYS {
            region
                .set(&crash_key(i), &Stamp::new(0, 0, OLD_BODY))
                .unwrap();
        }
    }
    let mut kills_during_a_write = 0;
    for round in 1..=ROUNDS {
        let mut child = spawn("crasher", round, &store, dir.path(), "");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Let it write a while (a different amount each round), then kill it as soon as a
        // write is seen under way.
        let writes = 2 + round;
        for _ in 0..writes {
            let line = lines.next().expect("the crasher ended early").unwrap();
            assert!(line.starts_with("wrote "), "{line}");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !write_in_progress(&store) && Instant::now() < deadline {
            thread::yield_now();
        }
        if write_in_progress(&store) {
            kills_during_a_write += 1;
        }
        child.kill().expect("SIGKILL the writer"); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(!status.success(), "the writer was killed, not finished");
        // The store opens, and every key holds its old value or one of its new ones.
        let region = region_on(
            &store,
            &[],
            Arc::new(SystemClock),
            Duration::from_secs(3600),
        );
        for i in 0..CRASH_KEYS {
            let key = crash_key(i);
            let value = region.get::<Stamp>(&key).unwrap();
            let value = value.unwrap_or_else(|| panic!("round {round}: {key} lost its value"));
            assert!(
                value.is_consistent(),
                "round {round}: {key} holds a damaged value"
            );
            let old = value == Stamp::new(0, 0, OLD_BODY);
            let new = value.writer == 1 && (value.iteration % 1_000_000) % CRASH_KEYS == i;
            assert!(
                old || new,
                "round {round}: {key} holds another key's value: {value:?}"
            );
        }
        region.set("after the crash", &round).unwrap();
        assert_eq!(region.get::<u32>("after the crash").unwrap(), Some(round));
        region.delete("after the crash").unwrap();
    }
    println!("    {kills_during_a_write} of {ROUNDS} kills landed during a write");
    assert!(
        kills_during_a_write > 0,
        "no kill landed during a write, so this scenario tested nothing"
    );
    // What the killed writers left is removed once it is old enough and nobody writes it.
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    for file in partial_files(&store) {
        OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    FileBackend::open(&store).unwrap();
    assert_no_partial_files(&store);
}

fn crafted_keys_stay_inside_the_store() {
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("parent");
    let store = parent.join("store");
    fs::create_dir_all(parent.join("sibling/etc")).unwrap();
    fs::write(parent.join("sibling/file.txt"), b"untouched").unwrap();
    fs::write(
        parent.join("sibling/etc/passwd"),
        b"root:x:0:0::/root:/bin/sh\n",
    )
    .unwrap();
    let before = listing(root.path(), &store);

    let out = finish(
        spawn("crafted", 0, &store, root.path(), ""),
        "crafted-keys writer",
    );
    assert_eq!(out, vec!["done"]);

    assert_eq!(
        listing(root.path(), &store),
        before,
        "files changed outside the store"
    );
    assert_eq!(
        fs::read(parent.join("sibling/file.txt")).unwrap(),
        b"untouched"
    );
    assert_eq!(
        fs::read(parent.join("sibling/etc/passwd")).unwrap(),
        b"root:x:0:0::/root:/bin/sh\n"
    );
    assert!(!root.path().join("outside").exists());

    // Inside the store, values live only under names made of hex digits.
    for entry in walk(&store.join("data"))
        .into_iter()
        .filter(|p| p.is_file())
    {
        let relative = entry.strip_prefix(store.join("data")).unwrap();
        let parts: Vec<String> = relative
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert!(
            parts.len() == 2
                && parts[0].len() == 2
                && parts[1].len() == 40
                && parts[1].starts_with(&parts[0])
                && parts
                    .iter()
                    .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit())),
            "unexpected file in the store: {}",
            entry.display()
        );
    }

    // Another process reads the crafted keys back: the kept ones round-trip, the deleted
    // ones are gone.
    let keys = crafted_keys(root.path());
    let region = region_on(
        &store,
        &[],
        Arc::new(SystemClock),
        Duration::from_secs(3600),
    );
    for (i, key) in keys.iter().enumerate() {
        let expected = (i % 2 == 1).then(|| format!("value {i}"));
        assert_eq!(region.get::<String>(key).unwrap(), expected, "key {key:?}");
    }
}

// ----- file-system inspection --------------------------------------------------------------

/// Every file and directory under `root` except under `skip`, with sizes.
fn listing(root: &Path, skip: &Path) -> BTreeMap<PathBuf, u64> {
    walk(root)
        .into_iter()
        .filter(|p| !p.starts_with(skip))
        .map(|p| {
            let len = fs::symlink_metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out.sort();
    out
}

/// The size of the old values of the crash scenario, larger than any file a complete write
/// of the crasher leaves ([`crash_body_len`] and more).
const OLD_BODY: usize = 600 * 1024;

/// True when a write is visibly under way: a temporary file exists, or (were values written
/// in place) a value file is smaller than any complete value of the crash scenario.
fn write_in_progress(store: &Path) -> bool {
    !partial_files(store).is_empty()
        || walk(&store.join("data")).iter().any(|p| {
            p.is_file() && fs::metadata(p).is_ok_and(|m| m.len() < crash_body_len(0) as u64)
        })
}

/// Temporary files left in the store (by a writer killed mid-write).
fn partial_files(store: &Path) -> Vec<PathBuf> {
    walk(&store.join("tmp"))
}

fn assert_no_partial_files(store: &Path) {
    let partial = partial_files(store);
    assert!(partial.is_empty(), "temporary files left: {partial:?}");
}
