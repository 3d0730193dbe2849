use std::sync::LazyLock;

use dogpile::{cache_multi_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_multi_on_arguments(region = "REGION")]
fn load(ids: &[u64]) -> std::collections::HashMap<u64, u64> {
    ids.iter().map(|id| (*id, *id)).collect()
}

fn main() {
    let _ = load(&[1]);
    let _: Vec<String> = load_keys(&[1]);
    let _: dogpile::Result<()> = invalidate_load(&[1]);
    let _ = &REGION;
}
