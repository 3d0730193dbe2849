use std::sync::LazyLock;

use dogpile::{cache_multi_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[derive(Clone, Copy)]
struct Repo;

impl Repo {
    #[cache_multi_on_arguments(region = "REGION")]
    fn load(self, ids: &[u64]) -> Vec<u64> {
        ids.to_vec()
    }
}

fn main() {
    let _: Vec<u64> = Repo.load(&[1]);
    let _ = &REGION;
}
