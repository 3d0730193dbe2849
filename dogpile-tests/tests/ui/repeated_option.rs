use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_on_arguments(region = "REGION", namespace = "a", namespace = "b")]
fn one(a: i32, b: i32) -> i32 {
    a + b
}

fn main() {
    let _: i32 = one(1, 2);
    let _: String = one_key(1, 2);
    let _: dogpile::Result<()> = invalidate_one(1, 2);
    let _: dogpile::Result<i32> = refresh_one(1, 2);
    let _: dogpile::Result<()> = set_one(&3, 1, 2);
    let _: dogpile::Result<Option<i32>> = get_one(1, 2);
    let _: i32 = one_uncached(1, 2);
    let _ = &REGION;
}
