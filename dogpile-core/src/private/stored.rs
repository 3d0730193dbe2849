//! The value operations of a cached function, on the type its probe chose: [`Stored`] for a
//! value type that can be cached, [`Unstorable`] (never run) for one that cannot.

use std::future::ready;
#[cfg(feature = "tokio")]
use std::future::Future;

use crate::__private::multi::{get_or_create_multi, refresh_multi, set_multi};
#[cfg(feature = "tokio")]
use crate::__private::multi::{multi, paired};
use crate::engine::block_on::block_on;
use crate::error::Result;
use crate::region::io::BlockingIo;
use crate::region::ops;
use crate::region::{CacheRegion, CreateOptions, Expiration};
use crate::value::Cacheable;

/// The value operations of a cached function whose value type is [`Cacheable`]: the
/// region's, called directly.
pub struct Stored<V>(pub(crate) std::marker::PhantomData<fn() -> V>);

impl<V: Cacheable> Stored<V> {
    /// [`get_or_create_fail_open`].
    #[inline]
    pub fn get_or_create<E, F>(
        self,
        region: &CacheRegion,
        key: &str,
        options: CreateOptions<'_, V>,
        creator: F,
    ) -> std::result::Result<V, E>
    where
        F: FnOnce() -> std::result::Result<V, E>,
    {
        get_or_create_fail_open(region, key, options, creator)
    }

    /// [`CacheRegion::get_with`], never ignoring the expiration.
    #[inline]
    pub fn get(
        self,
        region: &CacheRegion,
        key: &str,
        expiration: Option<Expiration>,
    ) -> Result<Option<V>> {
        region.get_with(key, expiration, false)
    }

    /// [`CacheRegion::set`].
    #[inline]
    pub fn set(self, region: &CacheRegion, key: &str, value: &V) -> Result<()> {
        region.set(key, value)
    }

    /// [`get_or_create_multi`].
    #[inline]
    pub fn get_or_create_multi<K, E, F>(
        self,
        region: &CacheRegion,
        function: &str,
        keys: &[String],
        elements: &[K],
        options: CreateOptions<'_, V>,
        body: F,
    ) -> std::result::Result<Vec<V>, E>
    where
        K: Clone,
        F: FnMut(Vec<K>) -> std::result::Result<Vec<V>, E>,
    {
        get_or_create_multi(region, function, keys, elements, options, body)
    }

    /// [`CacheRegion::get_multi`].
    #[inline]
    pub fn get_multi(self, region: &CacheRegion, keys: &[String]) -> Result<Vec<Option<V>>> {
        region.get_multi(keys)
    }

    /// [`set_multi`].
    #[inline]
    pub fn set_multi(
        self,
        region: &CacheRegion,
        function: &str,
        keys: &[String],
        values: &[V],
    ) -> Result<()> {
        set_multi(region, function, keys, values)
    }

    /// [`refresh_multi`].
    #[inline]
    pub fn refresh_multi(
        self,
        region: &CacheRegion,
        function: &str,
        keys: &[String],
        values: Vec<V>,
    ) -> Result<Vec<V>> {
        refresh_multi(region, function, keys, values)
    }
}

/// What [`ProbeUnstorable`](crate::__private::ProbeUnstorable) gives for a value type that is not [`Cacheable`]: the methods
/// of [`Stored`] without its bound, so that the calls type-check and only
/// [`assert_stored`](crate::__private::assert_stored) reports the problem. Never runs: a program that picks it does not
/// compile.
pub struct Unstorable<V>(pub(crate) std::marker::PhantomData<fn() -> V>);

#[allow(missing_docs, clippy::missing_panics_doc, clippy::unused_self)]
impl<V> Unstorable<V> {
    pub fn get_or_create<E, F>(
        self,
        _: &CacheRegion,
        _: &str,
        _: CreateOptions<'_, V>,
        _: F,
    ) -> std::result::Result<V, E> {
        unreachable!("assert_stored refuses this value type")
    }
    pub fn get(self, _: &CacheRegion, _: &str, _: Option<Expiration>) -> Result<Option<V>> {
        unreachable!("assert_stored refuses this value type")
    }
    pub fn set(self, _: &CacheRegion, _: &str, _: &V) -> Result<()> {
        unreachable!("assert_stored refuses this value type")
    }
    pub fn get_or_create_multi<K, E, F>(
        self,
        _: &CacheRegion,
        _: &str,
        _: &[String],
        _: &[K],
        _: CreateOptions<'_, V>,
        _: F,
    ) -> std::result::Result<Vec<V>, E> {
        unreachable!("assert_stored refuses this value type")
    }
    pub fn get_multi(self, _: &CacheRegion, _: &[String]) -> Result<Vec<Option<V>>> {
        unreachable!("assert_stored refuses this value type")
    }
    pub fn set_multi(self, _: &CacheRegion, _: &str, _: &[String], _: &[V]) -> Result<()> {
        unreachable!("assert_stored refuses this value type")
    }
    pub fn refresh_multi(
        self,
        _: &CacheRegion,
        _: &str,
        _: &[String],
        _: Vec<V>,
    ) -> Result<Vec<V>> {
        unreachable!("assert_stored refuses this value type")
    }
}

/// The async value operations of [`Stored`], for a cached `async fn`.
#[cfg(feature = "tokio")]
impl<V: Cacheable> Stored<V> {
    /// [`get_or_create_fail_open_async`].
    #[inline]
    pub async fn get_or_create_async<E, F, Fut>(
        self,
        region: &CacheRegion,
        key: &str,
        options: CreateOptions<'_, V>,
        creator: F,
    ) -> std::result::Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<V, E>>,
    {
        get_or_create_fail_open_async(region, key, options, creator).await
    }

    /// [`get_with_async`].
    #[inline]
    pub async fn get_async(
        self,
        region: &CacheRegion,
        key: &str,
        expiration: Option<Expiration>,
    ) -> Result<Option<V>> {
        get_with_async(region, key, expiration).await
    }

    /// [`CacheRegion::set_async`].
    #[inline]
    pub async fn set_async(self, region: &CacheRegion, key: &str, value: &V) -> Result<()> {
        region.set_async(key, value).await
    }

    /// [`get_or_create_multi`], for async callers.
    #[inline]
    pub async fn get_or_create_multi_async<K, E, F, Fut>(
        self,
        region: &CacheRegion,
        function: &str,
        keys: &[String],
        elements: &[K],
        options: CreateOptions<'_, V>,
        body: F,
    ) -> std::result::Result<Vec<V>, E>
    where
        K: Clone,
        F: FnMut(Vec<K>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Vec<V>, E>>,
    {
        multi::<crate::region::io::AsyncIo, K, V, E, F, Fut>(
            region, function, keys, elements, options, body,
        )
        .await
    }

    /// [`CacheRegion::get_multi_async`].
    #[inline]
    pub async fn get_multi_async(
        self,
        region: &CacheRegion,
        keys: &[String],
    ) -> Result<Vec<Option<V>>> {
        region.get_multi_async(keys).await
    }

    /// [`set_multi`], for async callers.
    #[inline]
    pub async fn set_multi_async(
        self,
        region: &CacheRegion,
        function: &str,
        keys: &[String],
        values: &[V],
    ) -> Result<()> {
        region
            .set_multi_async(&paired(region, function, keys, values)?)
            .await
    }

    /// [`refresh_multi`], for async callers.
    #[inline]
    pub async fn refresh_multi_async(
        self,
        region: &CacheRegion,
        function: &str,
        keys: &[String],
        values: Vec<V>,
    ) -> Result<Vec<V>> {
        self.set_multi_async(region, function, keys, &values)
            .await?;
        Ok(values)
    }
}

/// The async methods of [`Unstorable`]: as its blocking ones, never run.
#[cfg(feature = "tokio")]
#[allow(
    missing_docs,
    clippy::missing_panics_doc,
    clippy::unused_self,
    clippy::unused_async
)]
impl<V> Unstorable<V> {
    pub async fn get_or_create_async<E, F>(
        self,
        _: &CacheRegion,
        _: &str,
        _: CreateOptions<'_, V>,
        _: F,
    ) -> std::result::Result<V, E> {
        unreachable!("assert_stored refuses this value type")
    }
    pub async fn get_async(
        self,
        _: &CacheRegion,
        _: &str,
        _: Option<Expiration>,
    ) -> Result<Option<V>> {
        unreachable!("assert_stored refuses this value type")
    }
    pub async fn set_async(self, _: &CacheRegion, _: &str, _: &V) -> Result<()> {
        unreachable!("assert_stored refuses this value type")
    }
    pub async fn get_or_create_multi_async<K, E, F>(
        self,
        _: &CacheRegion,
        _: &str,
        _: &[String],
        _: &[K],
        _: CreateOptions<'_, V>,
        _: F,
    ) -> std::result::Result<Vec<V>, E> {
        unreachable!("assert_stored refuses this value type")
    }
    pub async fn get_multi_async(self, _: &CacheRegion, _: &[String]) -> Result<Vec<Option<V>>> {
        unreachable!("assert_stored refuses this value type")
    }
    pub async fn set_multi_async(
        self,
        _: &CacheRegion,
        _: &str,
        _: &[String],
        _: &[V],
    ) -> Result<()> {
        unreachable!("assert_stored refuses this value type")
    }
    pub async fn refresh_multi_async(
        self,
        _: &CacheRegion,
        _: &str,
        _: &[String],
        _: Vec<V>,
    ) -> Result<Vec<V>> {
        unreachable!("assert_stored refuses this value type")
    }
}

/// As [`CacheRegion::try_get_or_create_with`], but failing open: an unconfigured region
/// or a failing backend is logged and `creator`'s value returned. What
/// `#[cache_on_arguments]` functions call.
///
/// # Errors
/// The creator's only.
pub fn get_or_create_fail_open<T, E, F>(
    region: &CacheRegion,
    key: &str,
    options: CreateOptions<'_, T>,
    creator: F,
) -> std::result::Result<T, E>
where
    T: Cacheable,
    F: FnOnce() -> std::result::Result<T, E>,
{
    if let Some(value) = ops::fresh_hit(&region.inner, key, options.expiration) {
        return Ok(value);
    }
    block_on(ops::get_or_create_fail_open::<BlockingIo, T, E, _, _>(
        &region.inner,
        key,
        &options,
        move || ready(creator()),
    ))
}

/// As [`get_or_create_fail_open`], for async callers: what `#[cache_on_arguments]` on an
/// `async fn` calls.
///
/// # Errors
/// The creator's only.
#[cfg(feature = "tokio")]
pub async fn get_or_create_fail_open_async<T, E, F, Fut>(
    region: &CacheRegion,
    key: &str,
    options: CreateOptions<'_, T>,
    creator: F,
) -> std::result::Result<T, E>
where
    T: Cacheable,
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    if let Some(value) = ops::fresh_hit(&region.inner, key, options.expiration) {
        return Ok(value);
    }
    ops::get_or_create_fail_open::<crate::region::io::AsyncIo, T, E, F, Fut>(
        &region.inner,
        key,
        &options,
        creator,
    )
    .await
}

/// As [`CacheRegion::get_with`] (expiration never ignored), for async callers: what
/// `get_<fn>` of a cached `async fn` calls, so that it judges freshness by the function's
/// `expiration_time`.
///
/// # Errors
/// An unconfigured region; the backend's errors.
#[cfg(feature = "tokio")]
pub async fn get_with_async<V: Cacheable>(
    region: &CacheRegion,
    key: &str,
    expiration: Option<Expiration>,
) -> Result<Option<V>> {
    let value =
        ops::get::<crate::region::io::AsyncIo, V>(&region.inner, key, expiration, false).await?;
    Ok(value.map(|v| v.payload))
}
