//! A process whose main thread holds, at exit, the last handle of a dropped region's store.
//!
//! A fresh hit keeps the configuration in the calling thread's view
//! (`dogpile-core/src/region/view.rs`). When the region is dropped, that view may hold the
//! last handle of its store until the thread reads again or ends. Dropping the store in the
//! thread's teardown ran papaya's reclamation after its thread-locals were gone, which
//! panicked in a thread-local destructor and aborted the process at exit. This runs on the
//! main thread (no test harness), which is where it aborted.

use dogpile::{CacheRegion, RegionConfig};

fn main() {
    for config in [
        RegionConfig::new("memory"),
        RegionConfig::new("memory").argument("max_entries", 10_000),
    ] {
        let region = CacheRegion::new();
        region.configure(config).unwrap();
        // A million writes over twice the bound's keys (as the benchmark that found it):
        // the maps are left in a state whose drop hands entries to papaya's reclamation.
        // Without the fix this aborts at exit, every run.
        for i in 0..1_100_000 {
            region.set(&format!("w{}", i % 20_000), &0u8).unwrap();
        }
        region.set("k", &1u8).unwrap();
        assert_eq!(region.get_or_create("k", || 0u8).unwrap(), 1);
        // This thread's view now holds the last handle of the store.
        drop(region);
    }
    println!("view_at_exit: the main thread ends holding the last handles of two stores");
}
