use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

#[cache_on_arguments(region = "REGION")]
async fn render(page: u32) -> String {
    format!("<h1>page {page}</h1>")
}

struct Pages;

impl Pages {
    #[cache_on_arguments(region = "REGION")]
    async fn title(&self, page: u32) -> String {
        format!("page {page}")
    }
}

fn main() {
    let _ = render(1);
    let _ = invalidate_render(1);
    let _ = Pages.title(1);
    let _ = &REGION;
}
