use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

// A Result under a name that does not say so: caching it whole would cache its errors.
type Fallible<T> = Result<T, String>;

#[cache_on_arguments(region = "REGION")]
fn load(id: u32) -> Fallible<u32> {
    Ok(id)
}

fn main() {
    let _ = load(1);
}
