//! Quickstart: a region on the memory backend, configured at run time, and a memoized
//! function. Run with `cargo run --example quickstart`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dogpile::{make_region, CacheRegion, RegionConfig};
use once_cell::sync::Lazy;

static REGION: Lazy<CacheRegion> = Lazy::new(make_region);
static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

/// Stands for an expensive lookup (a database query, an HTTP call).
fn load_user_name(id: u64) -> String {
    LOOKUPS.fetch_add(1, Ordering::SeqCst);
    format!("user-{id}")
}

fn main() -> dogpile::Result<()> {
    REGION.configure(RegionConfig::new("memory").expiration_time(Duration::from_secs(3600)))?;

    for _ in 0..3 {
        let name: String = REGION.get_or_create("user:5", || load_user_name(5))?;
        println!("user 5 is {name}");
    }
    println!("expensive lookups: {}", LOOKUPS.load(Ordering::SeqCst));

    REGION.delete("user:5")?;
    let name: String = REGION.get_or_create("user:5", || load_user_name(5))?;
    println!(
        "after delete: {name}, expensive lookups: {}",
        LOOKUPS.load(Ordering::SeqCst)
    );
    Ok(())
}
