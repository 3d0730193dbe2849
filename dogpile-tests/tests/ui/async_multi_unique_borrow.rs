use std::sync::LazyLock;

use dogpile::{cache_multi_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

struct Repo;

impl Repo {
    #[cache_multi_on_arguments(region = "REGION")]
    async fn load(&mut self, ids: &[u64]) -> Vec<u64> {
        ids.to_vec()
    }
}

#[cache_multi_on_arguments(region = "REGION", skip(audit))]
async fn scaled(audit: &mut Vec<u64>, ids: &[u64]) -> Vec<u64> {
    audit.extend(ids);
    ids.to_vec()
}

async fn caller() {
    let _: Vec<u64> = Repo.load(&[1]).await;
    let _: Vec<u64> = scaled(&mut Vec::new(), &[1]).await;
    let _: dogpile::Result<()> = invalidate_scaled(&mut Vec::new(), &[1]).await;
}

fn main() {
    let _ = caller();
    let _ = &REGION;
}
