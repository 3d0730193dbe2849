use dogpile::{make_region, RegionConfig};

/// Neither `Serialize`, `Deserialize` nor `Clone`.
struct Report {
    total: u64,
}

fn main() {
    let region = make_region();
    region.configure(RegionConfig::new("memory")).unwrap();
    let report = region.get_or_create("report", || Report { total: 1 }).unwrap();
    let _ = report.total;
}
