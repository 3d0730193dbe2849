use std::sync::LazyLock;
use std::time::Duration;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_on_arguments(region = "REGION", expiration_time = 0)]
fn seconds(id: u32) -> u32 {
    id
}

#[cache_on_arguments(region = "REGION", expiration_time = Duration::from_millis(0))]
fn millis(id: u32) -> u32 {
    id
}

fn main() {
    let _ = seconds(1) + millis(1);
    let _ = Duration::ZERO;
}
