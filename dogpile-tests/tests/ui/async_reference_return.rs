use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_on_arguments(region = "REGION")]
async fn name(id: u32) -> &'static str {
    if id == 0 { "root" } else { "user" }
}

async fn caller() {
    let _: &str = name(1).await;
    let _: dogpile::Result<()> = invalidate_name(1).await;
    let _: String = name_key(1);
}

fn main() {
    let _ = caller();
    let _ = &REGION;
}
