//! [`Capabilities`]: what a backend can do, answered in one place.

/// What a backend can do, and how a region should talk to it: one value, returned by
/// [`CacheBackend::capabilities`](crate::backend::CacheBackend::capabilities) (and its async twin's),
/// read once when a region is configured.
///
/// The default (every flag off, no lock prefix) is right for a store of bytes that may
/// block, such as a network client; a backend says what differs with the setters:
///
/// ```
/// use dogpile_core::backend::Capabilities;
///
/// // An in-memory store of bytes: never blocks, so async callers call it on the task.
/// let capabilities = Capabilities::new().nonblocking(true);
/// assert!(capabilities.nonblocking && !capabilities.stores_objects);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The store takes [`Entry::Object`](crate::backend::Entry::Object) values (typed objects,
    /// never serialized) through the `*_entry` / `*_entries` methods, which it then
    /// overrides; the region never serializes for it. Off: every entry it receives is
    /// [`Entry::Bytes`](crate::backend::Entry::Bytes).
    pub stores_objects: bool,
    /// The store keeps nothing (the null backend): the region takes no dogpile lock and
    /// every caller creates its own value, as with caching switched off.
    pub stores_nothing: bool,
    /// No call ever blocks (no I/O, no waiting beyond a short in-memory lock): a region's
    /// async methods call the backend directly on the task instead of on tokio's blocking
    /// pool. Used only for a sync backend without an
    /// [`async_twin`](crate::backend::CacheBackend::async_twin), whose twin is used instead.
    pub nonblocking: bool,
    /// The prefix of the keys the backend's distributed locks
    /// ([`get_mutex`](crate::backend::CacheBackend::get_mutex)) live under (dogpile's `_lock`), if
    /// it has distributed locks: the region refuses every key that begins with it, so that
    /// no value can read, overwrite or delete a lock.
    pub lock_key_prefix: Option<String>,
    /// The longest one call of this backend should take (a network backend's
    /// `socket_timeout`, with room for connecting). A region's async methods run a sync
    /// backend that may block on tokio's blocking pool, a few calls per region at a time,
    /// and wait no longer than this for each (30 seconds when `None`); past it the caller
    /// gets an error naming the key and the backend, and the stalled call keeps its
    /// place until it returns, so one stalled region cannot take the whole pool.
    pub call_timeout: Option<std::time::Duration>,
}

impl Capabilities {
    /// Every flag off and no lock prefix: a store of bytes that may block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`stores_objects`](Self#structfield.stores_objects).
    pub fn stores_objects(mut self, stores_objects: bool) -> Self {
        self.stores_objects = stores_objects;
        self
    }

    /// Sets [`stores_nothing`](Self#structfield.stores_nothing).
    pub fn stores_nothing(mut self, stores_nothing: bool) -> Self {
        self.stores_nothing = stores_nothing;
        self
    }

    /// Sets [`nonblocking`](Self#structfield.nonblocking).
    pub fn nonblocking(mut self, nonblocking: bool) -> Self {
        self.nonblocking = nonblocking;
        self
    }

    /// Sets [`lock_key_prefix`](Self#structfield.lock_key_prefix).
    pub fn lock_key_prefix(mut self, prefix: Option<String>) -> Self {
        self.lock_key_prefix = prefix;
        self
    }

    /// Sets [`call_timeout`](Self#structfield.call_timeout).
    pub fn call_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.call_timeout = timeout;
        self
    }
}
