use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_on_arguments(region = "REGION", skip(c))]
const fn one((a, b): (i32, i32)) -> i32 {
    a + b
}

fn main() {
    let _ = &REGION;
}
