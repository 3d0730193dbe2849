use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_on_arguments(region = "REGION")]
fn name(id: u32) -> &'static str {
    if id == 0 { "root" } else { "user" }
}

fn main() {
    let _ = name(1);
    let _ = invalidate_name(1);
}
