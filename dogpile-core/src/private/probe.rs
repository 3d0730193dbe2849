//! What generated code checks at compile time: whether a return type is a `Result` or an
//! `Option` whose part is cached, and whether a value type can be cached at all, each
//! failure one error with its own message at the function's return type.

use crate::__private::stored::{Stored, Unstorable};
use crate::value::Cacheable;

/// A return type of which only one part is cached: the `Ok` values of a `Result`. The
/// cached function caches what [`into_cached`](Self::into_cached) gives as `Ok` and
/// returns the rest uncached.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Result`, so a cached function cannot cache only its `Ok` values",
    label = "read as a `Result`: `result = true` was given, or the type is named like one",
    note = "write `result = false` to cache the whole value"
)]
pub trait ResultOutput: Sized {
    /// What is cached: `T` of `Result<T, E>`.
    type Value;
    /// What is returned uncached: `E`.
    type Rest;
    /// The value to cache, or the rest.
    fn into_cached(self) -> std::result::Result<Self::Value, Self::Rest>;
    /// Back to the function's return type.
    fn from_cached(cached: std::result::Result<Self::Value, Self::Rest>) -> Self;
}

impl<T, E> ResultOutput for std::result::Result<T, E> {
    type Value = T;
    type Rest = E;
    fn into_cached(self) -> Self {
        self
    }
    fn from_cached(cached: Self) -> Self {
        cached
    }
}

/// As [`ResultOutput`], for the `Some` values of an `Option` (`option = true`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `Option`, so a cached function cannot cache only its `Some` values",
    label = "`option = true` was given",
    note = "remove `option = true` to cache the whole value"
)]
pub trait OptionOutput: Sized {
    /// What is cached: `T` of `Option<T>`.
    type Value;
    /// The value to cache, or [`WasNone`].
    fn into_cached(self) -> std::result::Result<Self::Value, WasNone>;
    /// Back to the function's return type.
    fn from_cached(cached: std::result::Result<Self::Value, WasNone>) -> Self;
}

/// What an [`OptionOutput`] returns uncached: `None`.
#[derive(Debug)]
pub struct WasNone;

impl<T> OptionOutput for Option<T> {
    type Value = T;
    fn into_cached(self) -> std::result::Result<T, WasNone> {
        self.ok_or(WasNone)
    }
    fn from_cached(cached: std::result::Result<T, WasNone>) -> Self {
        cached.ok()
    }
}

/// Asks, at compile time, whether `T` is a `Result`: `(&Probe::<T>::new()).kind()` is a
/// [`IsResult`] when it is (by [`ProbeResult`], found first since it needs no autoref) and
/// a [`NotResult`] otherwise (by [`ProbeWhole`]). This is "autoref specialisation": it
/// works on stable Rust for every concrete type, aliases included; for a generic type
/// parameter it answers [`NotResult`].
pub struct Probe<T: ?Sized>(std::marker::PhantomData<fn() -> std::marker::PhantomData<T>>);

impl<T: ?Sized> Probe<T> {
    /// The probe of `T`.
    pub const fn new() -> Self {
        Probe(std::marker::PhantomData)
    }
}

impl<T: ?Sized> Default for Probe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The answer of a [`Probe`] for a `Result`.
pub struct IsResult;

/// The answer of a [`Probe`] for anything else.
pub struct NotResult;

/// The [`Probe`] of a `Result`.
pub trait ProbeResult {
    /// [`IsResult`].
    fn kind(&self) -> IsResult {
        IsResult
    }
}

impl<T, E> ProbeResult for Probe<std::result::Result<T, E>> {}

/// The [`Probe`] of any type.
pub trait ProbeWhole {
    /// [`NotResult`].
    fn kind(&self) -> NotResult {
        NotResult
    }
}

impl<T: ?Sized> ProbeWhole for &Probe<T> {}

/// Implemented by [`NotResult`] only: a function whose whole value is cached by default
/// must not return a `Result` under a name that does not say so.
#[diagnostic::on_unimplemented(
    message = "the return type `{O}` is a `Result`, but its name does not say so: say which part to cache",
    label = "a `Result`",
    note = "write `result = true` to cache only the `Ok` values, or `result = false` to cache every value, `Err` included"
)]
pub trait CachedWhole<O: ?Sized> {}

impl<O: ?Sized> CachedWhole<O> for NotResult {}

/// Compiles only when `kind` is the [`NotResult`] answer of the probe of `O`.
pub fn cached_whole<O: ?Sized, K: CachedWhole<O>>(kind: K) {
    let _ = kind;
}

/// The operations on a cached function's values, chosen at compile time by
/// `(&Probe::<V>::new()).stored()`: [`Stored`] when `V` is [`Cacheable`] (by
/// [`ProbeStored`], found first), [`Unstorable`] otherwise. Generated code calls the same
/// methods on either, so that a value type that cannot be stored fails one check, the
/// [`assert_stored`] spanned at the function's return type, instead of every call that
/// stores or reads the value.
pub trait ProbeStored<V> {
    /// [`Stored`].
    fn stored(&self) -> Stored<V> {
        Stored(std::marker::PhantomData)
    }
}

impl<V: Cacheable> ProbeStored<V> for Probe<V> {}

/// The fallback of [`ProbeStored`].
pub trait ProbeUnstorable<V> {
    /// [`Unstorable`].
    fn stored(&self) -> Unstorable<V> {
        Unstorable(std::marker::PhantomData)
    }
}

impl<V> ProbeUnstorable<V> for &Probe<V> {}

/// Compiles only when `V` can be cached; each missing trait is one error, naming the type
/// and the trait, at the function's return type.
pub fn assert_stored<V>()
where
    V: StoredSerialize + StoredDeserialize + StoredClone + StoredThreadSafe,
{
}

/// `Serialize`, for [`assert_stored`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it does not implement `Serialize`",
    label = "the value a cached function stores",
    note = "derive it, `#[derive(serde::Serialize, serde::Deserialize, Clone)]`, or cache a type that has it"
)]
pub trait StoredSerialize {}

#[diagnostic::do_not_recommend]
impl<T: serde::Serialize + ?Sized> StoredSerialize for T {}

/// `DeserializeOwned`, for [`assert_stored`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it does not implement `Deserialize` (for every lifetime: `DeserializeOwned`)",
    label = "the value a cached function stores",
    note = "derive it, `#[derive(serde::Serialize, serde::Deserialize, Clone)]`, or cache an owned type that has it"
)]
pub trait StoredDeserialize {}

#[diagnostic::do_not_recommend]
impl<T: serde::de::DeserializeOwned> StoredDeserialize for T {}

/// `Clone`, for [`assert_stored`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it does not implement `Clone`",
    label = "the value a cached function stores",
    note = "derive it, `#[derive(Clone)]`: a cache hit returns a clone of the stored value"
)]
pub trait StoredClone {}

#[diagnostic::do_not_recommend]
impl<T: Clone> StoredClone for T {}

/// `Send + Sync + 'static`, for [`assert_stored`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it is not `Send + Sync + 'static`",
    label = "the value a cached function stores",
    note = "a cached value is shared between threads and outlives the call: cache an owned, thread-safe type"
)]
pub trait StoredThreadSafe {}

#[diagnostic::do_not_recommend]
impl<T: Send + Sync + 'static> StoredThreadSafe for T {}

/// What the siblings marker of a cached method returns: its siblings are in an inherent
/// impl, beside it or beside its trait impl.
pub struct SiblingsBeside;

/// What the fallback of the siblings check returns: the marker is missing, so the method
/// is in a trait impl whose block does not carry the attribute.
pub struct SiblingsMissing;

/// Implemented by [`SiblingsBeside`] only: a method of a trait impl whose block lacks the
/// attribute fails this bound, with a message saying to add it.
#[diagnostic::on_unimplemented(
    message = "#[cache_on_arguments] on a method of a trait impl needs `#[cache_on_arguments]` on the impl block too",
    label = "this method is in a trait impl, where its generated functions cannot go",
    note = "write `#[cache_on_arguments]` (without options) above `impl Trait for Type`: the generated functions (`invalidate_<fn>`, `<fn>_key`, ...) then go to an inherent impl of the type (the same goes for `#[cache_multi_on_arguments]`)"
)]
pub trait SiblingsInherent {}

impl SiblingsInherent for SiblingsBeside {}

/// Compiles only when the siblings of the cached method are in an inherent impl.
pub fn siblings_beside<S: SiblingsInherent>(marker: S) {
    let _ = marker;
}
