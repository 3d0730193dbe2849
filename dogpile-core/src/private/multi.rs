//! The cached path of `#[cache_multi_on_arguments]` functions: one generic body for both
//! faces, and the pairing of keys and values for `set_<fn>`.

use std::collections::HashMap;
use std::future::Future;

use crate::engine::driver::Io;
use crate::error::{Error, Result};
use crate::region::ops;
use crate::region::{CacheRegion, CreateOptions};
use crate::value::Cacheable;

/// The cache could not serve a multi call at all: logged (rate-limited).
fn warn_unavailable(region: &CacheRegion, function: &str, error: &Error) {
    crate::warnings::warn_limited!(region.inner.warnings, crate::warnings::WarningKind::CacheUnavailable,
        region = %region.name(), function, %error, "cache unavailable; computing the values uncached");
}

/// `keys[i]` with `values[i]`, for a multi function's `set_<fn>`.
///
/// # Errors
/// [`Error::InvalidArgument`] when the counts differ.
pub(crate) fn paired<'k, T: Clone>(
    region: &CacheRegion,
    function: &str,
    keys: &'k [String],
    values: &[T],
) -> Result<Vec<(&'k str, T)>> {
    if keys.len() != values.len() {
        return Err(Error::invalid_argument(
            format!("region `{}`", region.name()),
            format!("values of {function}"),
            format!(
                "{} values for {} keys; give one value per key, in order",
                values.len(),
                keys.len()
            ),
        ));
    }
    Ok(keys
        .iter()
        .map(String::as_str)
        .zip(values.iter().cloned())
        .collect())
}

/// The first element of each key: repeated elements share one value, as in dogpile.
fn first_elements(keys: &[String]) -> HashMap<&str, usize> {
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        first.entry(key.as_str()).or_insert(i);
    }
    first
}

/// The cached path of a `#[cache_multi_on_arguments]` function on either face (see
/// [`get_or_create_multi`]): the body gets the elements that need a value in the caller's
/// order, without repeats; an unconfigured region computes every element once, uncached; a
/// body returning the wrong number of values is logged and its result not cached.
///
/// # Errors
/// The body's errors only.
/// The cached path of a `#[cache_multi_on_arguments]` function, failing open.
///
/// `keys[i]` is the cache key of `elements[i]`. `body` is the function's own body: it gets
/// the elements that need a value, in the caller's order and without repeats, and returns
/// their values in the same order. The region's engine fails open (backend errors are
/// misses and warnings); only an unconfigured region is left to fall back on, and then the
/// body computes every element, once.
pub(crate) async fn multi<IO, K, T, E, F, Fut>(
    region: &CacheRegion,
    function: &str,
    keys: &[String],
    elements: &[K],
    options: CreateOptions<'_, T>,
    mut body: F,
) -> std::result::Result<Vec<T>, E>
where
    IO: Io,
    K: Clone,
    T: Cacheable,
    F: FnMut(Vec<K>) -> Fut,
    Fut: Future<Output = std::result::Result<Vec<T>, E>>,
{
    if elements.is_empty() {
        return Ok(Vec::new());
    }
    let first = first_elements(keys);
    let mut body_error: Option<E> = None;
    let mut miscounted: Option<(Vec<usize>, Vec<T>)> = None;
    let (first_ref, error_slot, miscount_slot, body_ref) =
        (&first, &mut body_error, &mut miscounted, &mut body);
    let creator = move |missing: Vec<String>| {
        let plan = asked(first_ref, missing.iter().map(String::as_str)).map(|(order, given)| {
            let made = body_ref(given.iter().map(|&i| elements[i].clone()).collect());
            (order, given, made)
        });
        async move {
            // A key the region was not given: nothing, so that the region reports a
            // miscount and the fallback computes the values.
            let Some((order, given, made)) = plan else {
                return Vec::new();
            };
            match made.await {
                Err(error) => {
                    *error_slot = Some(error);
                    Vec::new()
                }
                Ok(values) if values.len() != given.len() => {
                    *miscount_slot = Some((given, values));
                    Vec::new()
                }
                Ok(values) => in_asked_order(&order, values),
            }
        }
    };
    let outcome =
        ops::get_or_create_multi::<IO, T, _, _, _>(&region.inner, keys, &options, creator, true)
            .await;
    if let Some(error) = body_error {
        return Err(error);
    }
    let error = match outcome {
        Ok(values) => return Ok(values),
        Err(error) => error,
    };
    if let Some((given, values)) = miscounted {
        return match miscount_result(function, elements.len(), &given, values) {
            Some(values) => Ok(values),
            None => body(elements.to_vec()).await,
        };
    }
    region.inner.loud_if_unconfigured(&error);
    warn_unavailable(region, function, &error);
    let needed = uncached_needed(&first);
    let made = body(needed.iter().map(|&i| elements[i].clone()).collect()).await?;
    if made.len() != needed.len() {
        return match miscount_result(function, elements.len(), &needed, made) {
            Some(values) => Ok(values),
            None => body(elements.to_vec()).await,
        };
    }
    match uncached_assembled(keys, &first, needed, made) {
        Some(assembled) => Ok(assembled),
        // Unreachable by construction; computing everything is still the right answer.
        None => body(elements.to_vec()).await,
    }
}

/// The body returned a different number of values than it was given elements (see
/// `get_or_create_multi`): logged; its values are the answer when it was given every
/// element in order, else (`None`) the caller runs it again on every element.
fn miscount_result<T>(
    function: &str,
    elements: usize,
    given: &[usize],
    values: Vec<T>,
) -> Option<Vec<T>> {
    tracing::error!(
        function,
        given = given.len(),
        returned = values.len(),
        "a #[cache_multi_on_arguments] function must return one value per key; its result is not cached"
    );
    let all_in_order = given.len() == elements && given.iter().copied().eq(0..given.len());
    all_in_order.then_some(values)
}

/// The elements the region asks values for: `(order, given)`, where `given` are their
/// indices in the caller's order and `order[j]` says which asked key `given`'s j-th is.
/// `None` when the region asks for a key it was not given.
fn asked<'k>(
    first: &HashMap<&str, usize>,
    missing: impl Iterator<Item = &'k str>,
) -> Option<(Vec<usize>, Vec<usize>)> {
    let indices = missing
        .map(|key| first.get(key).copied())
        .collect::<Option<Vec<usize>>>()?;
    // The region asks in key order; the body gets the caller's order.
    let mut order: Vec<usize> = (0..indices.len()).collect();
    order.sort_by_key(|&j| indices[j]);
    let given = order.iter().map(|&j| indices[j]).collect();
    Some((order, given))
}

/// The body's values (in the caller's order) back in the order the region asked.
fn in_asked_order<T>(order: &[usize], values: Vec<T>) -> Vec<T> {
    let mut slots: Vec<Option<T>> = (0..values.len()).map(|_| None).collect();
    for (&j, value) in order.iter().zip(values) {
        slots[j] = Some(value);
    }
    slots.into_iter().flatten().collect()
}

/// With the cache unavailable: the elements to compute, each key's first, in order.
fn uncached_needed(first: &HashMap<&str, usize>) -> Vec<usize> {
    let mut needed: Vec<usize> = first.values().copied().collect();
    needed.sort_unstable();
    needed
}

/// The computed values of `needed` in the caller's order, repeats included (`None` only
/// if a key had no value, which cannot happen by construction).
fn uncached_assembled<T: Clone>(
    keys: &[String],
    first: &HashMap<&str, usize>,
    needed: Vec<usize>,
    made: Vec<T>,
) -> Option<Vec<T>> {
    let values: HashMap<usize, T> = needed.into_iter().zip(made).collect();
    keys.iter()
        .map(|key| first.get(key.as_str()).and_then(|i| values.get(i)).cloned())
        .collect()
}
