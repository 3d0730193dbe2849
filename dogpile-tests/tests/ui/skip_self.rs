use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

struct Repo;

impl Repo {
    #[cache_on_arguments(region = "REGION", skip(self))]
    fn load(&self, id: u32) -> u32 {
        id
    }
}

fn main() {
    let _: u32 = Repo.load(1);
    let _: String = Repo.load_key(1);
    let _ = &REGION;
}
