//! Quickstart: a region on the memory backend, configured at run time, used directly and
//! through a memoized function. Run with `cargo run --example quickstart`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dogpile::{cache_on_arguments, make_region, CacheRegion, RegionConfig};
use once_cell::sync::Lazy;

static REGION: Lazy<CacheRegion> = Lazy::new(make_region);
static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

/// Stands for an expensive lookup (a database query, an HTTP call).
#[cache_on_arguments(region = "REGION", namespace = "users")]
fn load_user_name(id: u64) -> String {
    LOOKUPS.fetch_add(1, Ordering::SeqCst);
    format!("user-{id}")
}

fn main() -> dogpile::Result<()> {
    // Configuration comes at run time (from code here; from a config map with
    // `configure_from_config`).
    REGION.configure(RegionConfig::new("memory").expiration_time(Duration::from_secs(3600)))?;

    for _ in 0..3 {
        println!("user 5 is {}", load_user_name(5));
    }
    println!("key: {}", load_user_name_key(5));
    println!("expensive lookups: {}", LOOKUPS.load(Ordering::SeqCst));

    invalidate_load_user_name(5)?;
    println!("after invalidate: {}", load_user_name(5));
    println!("expensive lookups: {}", LOOKUPS.load(Ordering::SeqCst));

    // The region can be used directly, too.
    let greeting: String = REGION.get_or_create("greeting", || "hello".to_string())?;
    println!("{greeting}");
    Ok(())
}
