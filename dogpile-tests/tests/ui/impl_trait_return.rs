use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_on_arguments(region = "REGION")]
fn one(a: i32, b: i32) -> impl std::fmt::Display {
    a + b
}

fn main() {
    let _ = one(1, 2);
    let _: String = one_key(1, 2);
    let _ = &REGION;
}
