//! Uses dogpile (default features, `tls` included) beside the redis crate's tokio API.

use dogpile::{CacheRegion, RegionConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The redis crate's own async API, with tokio-comp: it must have compiled.
    let client = redis::Client::open("redis://127.0.0.1:1/")?;
    let _connect = redis::Client::get_multiplexed_async_connection;
    let _ = client;

    // dogpile's regions, memory and redis over TLS (configured, never reached).
    let region = CacheRegion::named("app");
    region.configure(RegionConfig::new("memory"))?;
    let answer: u32 = region.get_or_create("answer", || 42)?;
    assert_eq!(answer, 42);
    let tls = CacheRegion::named("tls");
    tls.configure(RegionConfig::new("redis").argument("url", "rediss://127.0.0.1:1/0"))?;
    println!("dogpile beside redis/tokio-comp: ok ({answer}, {:?})", tls.backend_name());
    Ok(())
}
