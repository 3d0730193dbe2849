use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

trait Loader {
    fn load(&self, id: u64) -> String;
}

struct Repo;

// The method is marked, the impl block is not.
impl Loader for Repo {
    #[cache_on_arguments(region = "REGION")]
    fn load(&self, id: u64) -> String {
        format!("user {id}")
    }
}

fn main() {
    let _ = Repo.load(1);
    let _ = &REGION;
}
