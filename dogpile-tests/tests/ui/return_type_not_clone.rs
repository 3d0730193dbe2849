use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};
use serde::{Deserialize, Serialize};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[derive(Serialize, Deserialize)]
pub struct Report {
    pub total: u64,
}

#[cache_on_arguments(region = "REGION")]
fn report(id: u64) -> Result<Report, String> {
    Ok(Report { total: id })
}

fn main() {
    let _ = report(1);
    let _ = get_report(1);
}
