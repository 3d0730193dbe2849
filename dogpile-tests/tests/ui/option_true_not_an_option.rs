use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

type Found = Result<u32, String>;

#[cache_on_arguments(region = "REGION", option = true)]
fn load(id: u32) -> Found {
    Ok(id)
}

fn main() {
    let _ = load(1);
}
