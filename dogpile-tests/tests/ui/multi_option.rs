use std::sync::LazyLock;

use dogpile::{cache_multi_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_multi_on_arguments(region = "REGION", option = true)]
fn names(ids: &[u64]) -> Vec<Option<String>> {
    ids.iter().map(|id| (*id > 0).then(|| format!("user {id}"))).collect()
}

fn main() {
    let _ = names(&[1]);
    let _ = names_keys(&[1]);
}
