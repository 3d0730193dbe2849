//! A byte backend whose store the test can reach into (dogpile's DictionaryBackend, shared).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dogpile::backend::CacheBackend;

/// A byte backend whose store the test can reach into: clones share the one map.
#[derive(Clone, Default)]
pub struct Shared(pub Arc<Mutex<HashMap<String, Vec<u8>>>>);

impl CacheBackend for Shared {
    fn get(&self, key: &str) -> dogpile::Result<Option<Vec<u8>>> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    fn set(&self, key: &str, value: Vec<u8>) -> dogpile::Result<()> {
        self.0.lock().unwrap().insert(key.to_owned(), value);
        Ok(())
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
}
