//! The value operations of a cached function, on the type its probe chose: [`Stored`] for a
//! value type that can be cached, [`Unstorable`] (never run) for one that cannot.
//!
//! Each operation is one method for both faces: its first argument says which
//! ([`BlockingIo`] or [`AsyncIo`](crate::region::io::AsyncIo)), and it returns a [`Flow`],
//! which the blocking face blocks on and the async face awaits.
#![allow(private_bounds, clippy::type_complexity)]

use std::future::{ready, Future, Ready};

use crate::__private::multi::{multi, paired};
use crate::engine::driver::{CreateError, Creator, Io, Untold};
use crate::error::Result;
use crate::region::io::BlockingIo;
use crate::region::ops::{self, Flow, NoDetach};
use crate::region::{CacheRegion, CreateOptions, Expiration};
use crate::value::Cacheable;
use crate::warnings::{warn_limited, WarningKind};

/// The value operations of a cached function whose value type is [`Cacheable`]: the
/// region's operations, failing open where the function's own call is concerned.
pub struct Stored<V>(pub(crate) std::marker::PhantomData<fn() -> V>);

impl<V: Cacheable> Stored<V> {
    /// The cached call: a fresh hit at once, else the region's `get_or_create`, failing
    /// open: an unconfigured region or a failing backend is logged and the creator's value
    /// returned.
    #[inline(always)]
    pub fn get_or_create<'a, IO: Io, E: 'a, F: Creator<V, E> + 'a>(
        self,
        io: IO,
        region: &'a CacheRegion,
        key: &'a str,
        options: CreateOptions<'a, V>,
        creator: F,
    ) -> Flow<std::result::Result<V, E>, impl Future<Output = std::result::Result<V, E>> + 'a> {
        if let Some(value) = ops::fresh_hit(&region.inner, key, options.expiration) {
            return Flow::done(Ok(value));
        }
        Flow::pending(self.get_or_create_whole(io, region, key, options, creator))
    }

    /// [`get_or_create`](Self::get_or_create) past the fresh hit.
    fn get_or_create_whole<'a, IO: Io, E: 'a, F: Creator<V, E> + 'a>(
        self,
        _: IO,
        region: &'a CacheRegion,
        key: &'a str,
        options: CreateOptions<'a, V>,
        creator: F,
    ) -> impl Future<Output = std::result::Result<V, E>> + 'a {
        let region = &region.inner;
        async move {
            // Its error (of any type) wrapped as one that is not handed to the waiters: they
            // cannot fail with it, so they create in turn.
            let creator = move || {
                let creating = creator();
                async move { creating.await.map_err(Untold) }
            };
            let mut creator = Some(creator);
            let detach = None::<NoDetach<IO, _>>;
            let outcome = ops::get_or_create::<IO, V, _, _, _>(
                region,
                key,
                &options,
                &mut creator,
                true,
                detach,
            )
            .await;
            match outcome {
                Ok(value) => Ok(value),
                Err(CreateError::Creator(Untold(error))) => Err(error),
                // Failing open, the engine turns read, lock and write failures into misses
                // and warnings: a cache error (an unconfigured region, a refused key) comes
                // before the creator ran, and the creator still gives the answer.
                Err(CreateError::Cache(error)) => match creator.take() {
                    Some(creator) => {
                        region.loud_if_unconfigured(&error);
                        warn_limited!(region.warnings, WarningKind::CacheUnavailable,
                            region = %region.name, key, %error,
                            "cache unavailable; computing the value uncached");
                        creator().await.map_err(|Untold(error)| error)
                    }
                    None => unreachable!("fail-open cache error after the creator ran: {error}"),
                },
            }
        }
    }

    /// `get_<fn>`: the fresh value, judged by the function's expiration time.
    pub fn get<'a, IO: Io>(
        self,
        _: IO,
        region: &'a CacheRegion,
        key: &'a str,
        expiration: Option<Expiration>,
    ) -> Flow<Result<Option<V>>, impl Future<Output = Result<Option<V>>> + 'a> {
        Flow::pending(async move {
            let value = ops::get::<IO, V>(&region.inner, key, expiration, false).await?;
            Ok(value.map(|value| value.payload))
        })
    }

    /// `set_<fn>` (and `refresh_<fn>`'s store).
    pub fn set<'a, IO: Io>(
        self,
        _: IO,
        region: &'a CacheRegion,
        key: &'a str,
        value: &'a V,
    ) -> Flow<Result<()>, impl Future<Output = Result<()>> + 'a> {
        Flow::pending(ops::set::<IO, V>(&region.inner, key, value))
    }

    /// The cached call of a multi function (see [`multi`]).
    #[allow(clippy::too_many_arguments)]
    pub fn get_or_create_multi<'a, IO: Io, K, E: 'a, F, Fut>(
        self,
        _: IO,
        region: &'a CacheRegion,
        function: &'a str,
        keys: &'a [String],
        elements: &'a [K],
        options: CreateOptions<'a, V>,
        body: F,
    ) -> Flow<
        std::result::Result<Vec<V>, E>,
        impl Future<Output = std::result::Result<Vec<V>, E>> + 'a,
    >
    where
        K: Clone,
        F: FnMut(Vec<K>) -> Fut + 'a,
        Fut: Future<Output = std::result::Result<Vec<V>, E>> + 'a,
    {
        Flow::pending(multi::<IO, K, V, E, F, Fut>(
            region, function, keys, elements, options, body,
        ))
    }

    /// `get_<fn>` of a multi function.
    pub fn get_multi<'a, IO: Io>(
        self,
        _: IO,
        region: &'a CacheRegion,
        keys: &'a [String],
    ) -> Flow<Result<Vec<Option<V>>>, impl Future<Output = Result<Vec<Option<V>>>> + 'a> {
        Flow::pending(ops::get_multi::<IO, V, String>(&region.inner, keys))
    }

    /// `set_<fn>` of a multi function: `values[i]` under `keys[i]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when the counts differ;
    /// the region's errors.
    pub fn set_multi<'a, IO: Io>(
        self,
        _: IO,
        region: &'a CacheRegion,
        function: &'a str,
        keys: &'a [String],
        values: &'a [V],
    ) -> Flow<Result<()>, impl Future<Output = Result<()>> + 'a> {
        Flow::pending(async move {
            let items = paired(region, function, keys, values)?;
            ops::set_multi::<IO, V, &str>(&region.inner, &items).await
        })
    }

    /// `refresh_<fn>` of a multi function: stores freshly computed values, returns them.
    pub fn refresh_multi<'a, IO: Io>(
        self,
        face: IO,
        region: &'a CacheRegion,
        function: &'a str,
        keys: &'a [String],
        values: Vec<V>,
    ) -> Flow<Result<Vec<V>>, impl Future<Output = Result<Vec<V>>> + 'a> {
        Flow::pending(async move {
            self.set_multi(face, region, function, keys, &values)
                .await?;
            Ok(values)
        })
    }
}

/// What [`ProbeUnstorable`](crate::__private::ProbeUnstorable) gives for a value type that
/// is not [`Cacheable`]: the methods of [`Stored`] without its bound, so that the calls
/// type-check and only [`assert_stored`](crate::__private::assert_stored) reports the
/// problem. Never runs: a program that picks it does not compile.
pub struct Unstorable<V>(pub(crate) std::marker::PhantomData<fn() -> V>);

/// An answer [`Unstorable`] never gives.
type Never<R> = Flow<R, Ready<R>>;

#[allow(missing_docs, clippy::missing_panics_doc, clippy::unused_self)]
#[allow(clippy::too_many_arguments)]
impl<V> Unstorable<V> {
    pub fn get_or_create<IO, E, F>(
        self,
        _: IO,
        _: &CacheRegion,
        _: &str,
        _: CreateOptions<'_, V>,
        _: F,
    ) -> Never<std::result::Result<V, E>> {
        unreachable!("assert_stored refuses this value type")
    }
    pub fn get<IO>(
        self,
        _: IO,
        _: &CacheRegion,
        _: &str,
        _: Option<Expiration>,
    ) -> Never<Result<Option<V>>> {
        unreachable!("assert_stored refuses this value type")
    }
    pub fn set<IO>(self, _: IO, _: &CacheRegion, _: &str, _: &V) -> Never<Result<()>> {
        unreachable!("assert_stored refuses this value type")
    }
    pub fn get_or_create_multi<IO, K, E, F>(
        self,
        _: IO,
        _: &CacheRegion,
        _: &str,
        _: &[String],
        _: &[K],
        _: CreateOptions<'_, V>,
        _: F,
    ) -> Never<std::result::Result<Vec<V>, E>> {
        unreachable!("assert_stored refuses this value type")
    }
    pub fn get_multi<IO>(
        self,
        _: IO,
        _: &CacheRegion,
        _: &[String],
    ) -> Never<Result<Vec<Option<V>>>> {
        unreachable!("assert_stored refuses this value type")
    }
    pub fn set_multi<IO>(
        self,
        _: IO,
        _: &CacheRegion,
        _: &str,
        _: &[String],
        _: &[V],
    ) -> Never<Result<()>> {
        unreachable!("assert_stored refuses this value type")
    }
    pub fn refresh_multi<IO>(
        self,
        _: IO,
        _: &CacheRegion,
        _: &str,
        _: &[String],
        _: Vec<V>,
    ) -> Never<Result<Vec<V>>> {
        unreachable!("assert_stored refuses this value type")
    }
}

/// As [`CacheRegion::try_get_or_create_with`], but failing open: an unconfigured region
/// or a failing backend is logged and `creator`'s value returned.
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
    Stored(std::marker::PhantomData)
        .get_or_create(BlockingIo, region, key, options, move || ready(creator()))
        .block()
}
