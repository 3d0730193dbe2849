use std::sync::LazyLock;

use dogpile::{cache_multi_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_multi_on_arguments(region = "REGION")]
fn load(ids: &std::collections::BTreeSet<u64>) -> Vec<u64> {
    ids.iter().copied().collect()
}

fn main() {
    let _ = (&REGION, load);
}
