use dogpile::{make_region, RegionConfig};

#[test]
fn builtin_backends_are_registered_by_name() {
    let region = make_region();
    region
        .configure(RegionConfig::new("dogpile.cache.memory"))
        .unwrap();
    region.set("k", &5u32).unwrap();
    assert_eq!(region.get::<u32>("k").unwrap(), Some(5));
}
