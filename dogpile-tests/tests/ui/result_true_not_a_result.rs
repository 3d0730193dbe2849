use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_on_arguments(region = "REGION", result = true)]
fn load(id: u32) -> u32 {
    id
}

fn main() {
    let _ = load(1);
}
