use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

trait Loader {
    fn load(&self, id: u64) -> String;
}

struct Repo;

// Options go on the methods; and no method here is marked.
#[cache_on_arguments(region = "REGION")]
impl Loader for Repo {
    fn load(&self, id: u64) -> String {
        format!("user {id}")
    }
}

fn main() {
    let _ = Repo.load(1);
    let _ = &REGION;
}
