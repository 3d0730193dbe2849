//! The async twin of the memcached backend: what a region's `*_async` methods talk to.
//!
//! The same servers, ring, commands and limits as the blocking backend, on the servers'
//! async pools (the `async_pool` module): nothing runs on tokio's blocking pool and no
//! thread is taken per call. The servers' health (`dead_retry`) is one record for both
//! paths, and the distributed lock is the blocking side's lock, taken and released with
//! async calls (see the `lock` module for how a cancelled caller never strands it).

use dogpile_core::backend::{async_trait, AsyncCacheBackend, Entry};
use dogpile_core::lock::AsyncCacheMutex;
use dogpile_core::Result;

use super::command::{Delete, DeleteMany, Get, GetMany, StoreMany};
use super::keys::display_key;
use super::lock::MemcachedLock;
use super::{batch_keys, exptime, key_what, memcached_key, multi_what, MemcachedBackend};

/// The async twin of a [`MemcachedBackend`] (see the [module docs](self)).
pub(crate) struct AsyncMemcached(MemcachedBackend);

impl AsyncMemcached {
    pub(crate) fn new(backend: MemcachedBackend) -> Self {
        AsyncMemcached(backend)
    }
}

impl AsyncMemcached {
    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let server_key = memcached_key(key);
        let server = self.0.cluster.server(&server_key);
        server
            .call_async(&key_what("get", key), &Get(&server_key))
            .await
    }
}

#[async_trait]
impl AsyncCacheBackend for AsyncMemcached {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.get_bytes(key).await
    }

    /// A region's read: one boxed future, not the default's two.
    async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.get_bytes(key).await?.map(Entry::Bytes))
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let server_key = memcached_key(key);
        let len = value.len();
        let what = move || format!("set of key {} ({len} bytes)", display_key(key));
        let store = self.0.store(&server_key, &value);
        let server = self.0.cluster.server(&server_key);
        server.call_async(&what, &store).await.map(drop)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let server_key = memcached_key(key);
        let delete = Delete {
            key: &server_key,
            cas: None,
        };
        let server = self.0.cluster.server(&server_key);
        server
            .call_async(&key_what("delete", key), &delete)
            .await
            .map(drop)
    }

    /// One request per server (per 100 keys), answered in one round trip.
    async fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let server_keys: Vec<_> = keys.iter().map(|key| memcached_key(key)).collect();
        let mut values = vec![None; keys.len()];
        for (server, batch) in self.0.cluster.batches(&server_keys, |_| 0) {
            let get = GetMany(&batch_keys(&server_keys, &batch));
            let what = multi_what("get_multi", keys, &batch);
            for (at, value) in server.call_async(&what, &get).await? {
                values[batch[at]] = Some(value);
            }
        }
        Ok(values)
    }

    /// One pipelined request per server (per 100 keys or 1 MiB of values).
    async fn set_multi(&self, mut items: Vec<(&str, Vec<u8>)>) -> Result<()> {
        if let Some(i) = self.0.too_large(&items) {
            let (key, value) = items.swap_remove(i);
            return AsyncCacheBackend::set(self, key, value).await;
        }
        let server_keys: Vec<_> = items.iter().map(|(key, _)| memcached_key(key)).collect();
        let keys: Vec<&str> = items.iter().map(|(key, _)| *key).collect();
        let ttl = exptime(self.0.expire_time);
        for (server, batch) in self.0.cluster.batches(&server_keys, |i| items[i].1.len()) {
            let items = &MemcachedBackend::batch_items(&server_keys, &items, &batch);
            let what = multi_what("set_multi", &keys, &batch);
            server.call_async(&what, &StoreMany { items, ttl }).await?;
        }
        Ok(())
    }

    /// One pipelined request per server (per 100 keys).
    async fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        let server_keys: Vec<_> = keys.iter().map(|key| memcached_key(key)).collect();
        for (server, batch) in self.0.cluster.batches(&server_keys, |_| 0) {
            let delete = DeleteMany(&batch_keys(&server_keys, &batch));
            let what = multi_what("delete_multi", keys, &batch);
            server.call_async(&what, &delete).await?;
        }
        Ok(())
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn AsyncCacheMutex>> {
        let settings = self.0.lock?;
        Some(Box::new(MemcachedLock::new(
            self.0.cluster.clone(),
            key,
            settings,
        )))
    }

    fn capabilities(&self) -> dogpile_core::backend::Capabilities {
        dogpile_core::backend::CacheBackend::capabilities(&self.0)
    }
}
