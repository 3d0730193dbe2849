//! The null backend: the parts of the conformance suite that apply to a backend that
//! stores nothing (every read misses, `get_or_create` always creates, nothing fails).

#[macro_use]
mod conformance;

use dogpile::RegionConfig;

conformance_suite!(stores = false, config = || RegionConfig::new("null"));

mod alias {
    use super::*;
    conformance_suite!(
        stores = false,
        config = || RegionConfig::new("dogpile.cache.null")
    );
}

#[test]
fn null_rejects_arguments() {
    let err = dogpile::CacheRegion::new()
        .configure(RegionConfig::new("null").argument("filename", "x"))
        .unwrap_err();
    assert!(err.to_string().contains("filename"), "{err}");
}
