//! The `null` backend (alias `dogpile.cache.null`): stores nothing, every read is a miss
//! (switches caching off). It takes no arguments.

use std::sync::Arc;

use dogpile_core::backend::{Arguments, CacheBackend, Capabilities};
use dogpile_core::Result;

/// Stores nothing; every get is a miss.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullBackend;

impl CacheBackend for NullBackend {
    fn get(&self, _key: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    fn set(&self, _key: &str, _value: Vec<u8>) -> Result<()> {
        Ok(())
    }

    fn delete(&self, _key: &str) -> Result<()> {
        Ok(())
    }

    /// Caching off: no dogpile lock, every caller creates; no call blocks.
    fn capabilities(&self) -> Capabilities {
        Capabilities::new().stores_nothing(true).nonblocking(true)
    }
}

pub(crate) fn null(args: &Arguments) -> Result<Arc<dyn CacheBackend>> {
    args.check_known(&[])?;
    Ok(Arc::new(NullBackend))
}
