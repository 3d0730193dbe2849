use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

struct Db;

#[cache_on_arguments(region = "REGION")]
fn one(db: &Db, a: i32) -> i32 {
    let _ = db;
    a
}

fn main() {
    let _ = (&REGION, one);
}
