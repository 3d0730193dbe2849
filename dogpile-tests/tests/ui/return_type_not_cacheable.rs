use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

/// Neither `Serialize`, `Deserialize` nor `Clone`.
pub struct Report {
    pub total: u64,
}

#[cache_on_arguments(region = "REGION")]
fn report(id: u64) -> Report {
    Report { total: id }
}

fn main() {
    let _ = report(1);
}
