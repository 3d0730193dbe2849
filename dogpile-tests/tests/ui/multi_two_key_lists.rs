use std::sync::LazyLock;

use dogpile::{cache_multi_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_multi_on_arguments(region = "REGION")]
fn load(ids: &[u64], more: Vec<u64>) -> Vec<u64> {
    ids.iter().chain(&more).copied().collect()
}

fn main() {
    let _: Vec<u64> = load(&[1], vec![2]);
    let _: Vec<String> = load_keys(&[1], vec![2]);
    let _ = &REGION;
}
