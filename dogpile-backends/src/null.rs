//! The `null` backend (alias `dogpile.cache.null`): stores nothing, every read is a miss
//! (switches caching off). It takes no arguments.

use std::sync::Arc;

use dogpile_core::{Arguments, Backend, Entry, Result};

/// Stores nothing; every get is a miss.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullBackend;

impl Backend for NullBackend {
    fn get(&self, _key: &str) -> Result<Option<Entry>> {
        Ok(None)
    }

    fn set(&self, _key: &str, _entry: Entry) -> Result<()> {
        Ok(())
    }

    fn delete(&self, _key: &str) -> Result<()> {
        Ok(())
    }

    fn nonblocking(&self) -> bool {
        true
    }

    /// Caching off: no dogpile lock, every caller creates.
    fn stores_nothing(&self) -> bool {
        true
    }
}

pub(crate) fn null(args: &Arguments) -> Result<Arc<dyn Backend>> {
    args.check_known(&[])?;
    Ok(Arc::new(NullBackend))
}
