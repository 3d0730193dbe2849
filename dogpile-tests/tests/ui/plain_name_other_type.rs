use std::sync::LazyLock;

use dogpile::{cache_on_arguments, CacheRegion};

static REGION: LazyLock<CacheRegion> = LazyLock::new(CacheRegion::new);

/// A type that shadows `String`: the macro writes `String` arguments without `Display`'s
/// machinery, so it must refuse this one rather than render it as a `String`.
struct Name;

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("name")
    }
}

type String = Name;

#[cache_on_arguments(region = "REGION")]
fn greet(name: String) -> u32 {
    let _ = name;
    1
}

fn main() {
    let _ = (&REGION, greet);
}
