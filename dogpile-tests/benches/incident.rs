//! The incident benchmark (issue 18, item 9): what callers see while the origin fails and
//! then slows down, for this library with its defaults and with the incident rules, and for
//! moka's `try_get_with` and the `cached` crate on the same trace.
//!
//! `CALLERS` threads read keys drawn from a Zipf distribution over `KEYS` keys (s = 1), a
//! pause of 1 ms between calls, through a cache whose values live 2 s; a miss calls the
//! origin. The run has three phases of `PHASE` each (10 s; `INCIDENT_PHASE_SECS` changes
//! it): the origin answers in 20 ms (`normal`), then fails after 20 ms (`failing`), then
//! answers in 500 ms (`slow`). Per phase and subject it prints the calls, the errors callers
//! saw, the origin calls, and the p50/p99 latency of a call, as a Markdown table for
//! BENCHMARKS.md.
//!
//! Run with `cargo bench -p dogpile-tests --bench incident`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cached::{Cached, TtlCache};
use dogpile::runner::ThreadPoolRunner;
use dogpile::{CacheRegion, RegionConfig};

const CALLERS: usize = 16;
const KEYS: usize = 1000;
const TTL: Duration = Duration::from_secs(2);
const PAUSE: Duration = Duration::from_millis(1);
const PHASES: [Phase; 3] = [Phase::Normal, Phase::Failing, Phase::Slow];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Normal,
    Failing,
    Slow,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Normal => "normal (20 ms)",
            Phase::Failing => "failing",
            Phase::Slow => "slow (500 ms)",
        }
    }
}

/// The origin's failure, as callers see it.
#[derive(Debug)]
struct OriginError(String);

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<dogpile::Error> for OriginError {
    fn from(error: dogpile::Error) -> Self {
        OriginError(error.to_string())
    }
}

/// The origin: its current phase, and its calls per phase.
struct Origin {
    phase: AtomicUsize,
    calls: [AtomicU64; 3],
}

impl Origin {
    fn phase(&self) -> Phase {
        PHASES[self.phase.load(Relaxed)]
    }

    fn call(&self, key: usize) -> Result<String, OriginError> {
        let phase = self.phase();
        self.calls[phase as usize].fetch_add(1, Relaxed);
        match phase {
            Phase::Normal => std::thread::sleep(Duration::from_millis(20)),
            Phase::Failing => {
                std::thread::sleep(Duration::from_millis(20));
                return Err(OriginError("origin unavailable".into()));
            }
            Phase::Slow => std::thread::sleep(Duration::from_millis(500)),
        }
        Ok(format!("value of key {key}"))
    }
}

/// A cache under test: one read of `key`, through `origin` on a miss.
type Subject = Box<dyn Fn(&Arc<Origin>, usize) -> Result<String, OriginError> + Send + Sync>;

/// Makes a fresh subject for one run.
type MakeSubject = fn() -> Subject;

fn dogpile_subject(config: RegionConfig) -> Subject {
    let region = CacheRegion::builder().name("incident").build();
    region.configure(config).unwrap();
    Box::new(move |origin, key| region.try_get_or_create(&key.to_string(), || origin.call(key)))
}

/// The background form (a creator that may fail) on a runner of 4 threads, so that
/// `soft_timeout` can leave a slow regeneration running.
fn background_subject(config: RegionConfig) -> Subject {
    let region = CacheRegion::builder()
        .name("incident")
        .async_creation_runner(ThreadPoolRunner::new(4).unwrap())
        .build();
    region.configure(config).unwrap();
    Box::new(move |origin, key| {
        let origin = origin.clone();
        region.try_get_or_create_in_background(&key.to_string(), move || origin.call(key))
    })
}

fn moka_subject() -> Subject {
    let cache: moka::sync::Cache<usize, String> =
        moka::sync::Cache::builder().time_to_live(TTL).build();
    Box::new(move |origin, key| {
        cache
            .try_get_with(key, || origin.call(key))
            .map_err(|error| OriginError(error.to_string()))
    })
}

/// The `cached` crate's TTL store as its `#[cached]` macro uses it: a lookup under the
/// store's lock, and on a miss the origin called outside it.
fn cached_subject() -> Subject {
    let cache = Mutex::new(TtlCache::<usize, String>::new(TTL));
    Box::new(move |origin, key| {
        if let Some(value) = cache.lock().unwrap().cache_get(&key) {
            return Ok(value.clone());
        }
        let value = origin.call(key)?;
        cache.lock().unwrap().cache_set(key, value.clone());
        Ok(value)
    })
}

/// Zipf (s = 1) over `KEYS` keys: the cumulative weights, sampled by bisection.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new() -> Self {
        let mut total = 0.0;
        let cdf = (1..=KEYS)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect::<Vec<_>>();
        Zipf(cdf.iter().map(|c| c / total).collect())
    }

    fn sample(&self, random: u64) -> usize {
        let u = (random >> 11) as f64 / (1u64 << 53) as f64;
        self.0.partition_point(|&c| c < u).min(KEYS - 1)
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// What one phase came to for one subject.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
}

fn run(name: &str, subject: Subject, phase_length: Duration) -> Vec<String> {
    let origin = Arc::new(Origin {
        phase: AtomicUsize::new(0),
        calls: Default::default(),
    });
    let subject = Arc::new(subject);
    let zipf = Arc::new(Zipf::new());
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(CALLERS + 1));
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (origin, subject, zipf, done, start) = (
                origin.clone(),
                subject.clone(),
                zipf.clone(),
                done.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                let mut tallies: [Tally; 3] = Default::default();
                let mut random = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1);
                start.wait();
                while !done.load(Relaxed) {
                    let key = zipf.sample(xorshift(&mut random));
                    let phase = origin.phase();
                    let began = Instant::now();
                    let answer = subject(&origin, key);
                    let tally = &mut tallies[phase as usize];
                    tally.latencies.push(began.elapsed());
                    tally.errors += u64::from(answer.is_err());
                    std::thread::sleep(PAUSE);
                }
                tallies
            })
        })
        .collect();
    start.wait();
    for phase in 0..PHASES.len() {
        origin.phase.store(phase, Relaxed);
        std::thread::sleep(phase_length);
    }
    done.store(true, Relaxed);
    let mut totals: [Tally; 3] = Default::default();
    for caller in callers {
        for (total, tally) in totals.iter_mut().zip(caller.join().unwrap()) {
            total.latencies.extend(tally.latencies);
            total.errors += tally.errors;
        }
    }
    PHASES
        .iter()
        .zip(totals.iter_mut())
        .map(|(phase, tally)| {
            tally.latencies.sort();
            let percentile = |p: f64| {
                let n = tally.latencies.len();
                tally.latencies[((n as f64 * p) as usize).min(n.saturating_sub(1))]
            };
            format!(
                "| {name} | {} | {} | {} | {} | {:.2} ms | {:.1} ms |",
                phase.name(),
                tally.latencies.len(),
                tally.errors,
                origin.calls[*phase as usize].load(Relaxed),
                percentile(0.5).as_secs_f64() * 1e3,
                percentile(0.99).as_secs_f64() * 1e3,
            )
        })
        .collect()
}

fn memory() -> RegionConfig {
    RegionConfig::new("memory").expiration_time(TTL)
}

fn incident_rules(config: RegionConfig) -> RegionConfig {
    config
        .stale_if_error(Duration::from_secs(60))
        .retry_after_error(Duration::from_secs(1))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter, as criterion takes, picks subjects.
    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    let phase_length = std::env::var("INCIDENT_PHASE_SECS")
        .ok()
        .and_then(|secs| secs.parse::<f64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_secs_f64);
    let subjects: [(&str, MakeSubject); 6] = [
        ("dogpile, defaults", || dogpile_subject(memory())),
        (
            "dogpile, stale_if_error 60 s + retry_after_error 1 s",
            || dogpile_subject(incident_rules(memory())),
        ),
        ("dogpile, those + early_refresh 1", || {
            dogpile_subject(incident_rules(memory()).early_refresh(1.0))
        }),
        (
            "dogpile, background: stale_if_error + retry_after_error + soft_timeout 50 ms",
            || background_subject(incident_rules(memory()).soft_timeout(Duration::from_millis(50))),
        ),
        ("moka try_get_with", moka_subject),
        ("cached TtlCache", cached_subject),
    ];
    println!(
        "{CALLERS} callers, Zipf over {KEYS} keys, values live {TTL:?}, phases of {phase_length:?}\n"
    );
    println!("| subject | phase | calls | errors | origin calls | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|");
    for (name, make) in subjects {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        for row in run(name, make(), phase_length) {
            println!("{row}");
        }
    }
}
