use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_on_arguments(region = "REGION")]
fn one((a, b): (i32, i32), _: u8) -> i32 {
    a + b
}

fn main() {
    let _: i32 = one((1, 2), 0);
    let _: String = one_key((1, 2), 0);
    let _ = &REGION;
}
