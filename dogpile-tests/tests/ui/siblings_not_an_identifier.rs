use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_on_arguments(region = "REGION", siblings = "cached user")]
fn get_user(id: u64) -> String {
    format!("user {id}")
}

fn main() {
    let _ = get_user(1);
}
