//! Cache keys: function keys for memoized functions, and key manglers.

use std::fmt::Write;
use std::sync::Arc;

use sha1::{Digest, Sha1};

/// A function applied to every key before the backend sees it.
pub type KeyMangler = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// What a function key is built from: where the function lives and its rendered arguments.
#[derive(Debug, Clone, Copy)]
pub struct FunctionKey<'a> {
    /// The function's module, as `module_path!()` gives it (`myapp::tools`).
    pub module_path: &'a str,
    /// The function's name (`one`).
    pub function: &'a str,
    /// The namespace given to `#[cache_on_arguments]`, if any.
    pub namespace: Option<&'a str>,
    /// The key arguments, each already rendered to a string (receiver and skipped
    /// arguments left out).
    pub args: &'a [String],
}

/// Builds the key of one function call from a [`FunctionKey`].
pub type FunctionKeyGenerator = Arc<dyn Fn(&FunctionKey<'_>) -> String + Send + Sync>;

/// dogpile's default function key: `"{module}:{fn}|{namespace}|{arg1} {arg2}"`, without
/// `|{namespace}` when there is none.
///
/// ```
/// use dogpile_core::{default_function_key, FunctionKey};
///
/// let args = ["3".to_string(), "4".to_string()];
/// let key = FunctionKey { module_path: "myapp::tools", function: "one", namespace: Some("foo"), args: &args };
/// assert_eq!(default_function_key(&key), "myapp::tools:one|foo|3 4");
/// ```
pub fn default_function_key(key: &FunctionKey<'_>) -> String {
    // One allocation of the exact size, no formatting machinery: this runs on every call
    // of a memoized function, hits included.
    let args_len: usize = key.args.iter().map(String::len).sum::<usize>() + key.args.len();
    let mut out = String::with_capacity(
        prefix_len(key.module_path, key.function, key.namespace) + args_len + 1,
    );
    push_prefix(&mut out, key.module_path, key.function, key.namespace);
    out.push('|');
    for (i, arg) in key.args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(arg);
    }
    out
}

/// The part of a function key before the arguments: `"{module}:{fn}"` or
/// `"{module}:{fn}|{namespace}"`.
pub fn function_key_prefix(module_path: &str, function: &str, namespace: Option<&str>) -> String {
    let mut out = String::with_capacity(prefix_len(module_path, function, namespace));
    push_prefix(&mut out, module_path, function, namespace);
    out
}

pub(crate) fn prefix_len(module_path: &str, function: &str, namespace: Option<&str>) -> usize {
    module_path.len() + 1 + function.len() + namespace.map_or(0, |n| n.len() + 1)
}

pub(crate) fn push_prefix(
    out: &mut String,
    module_path: &str,
    function: &str,
    namespace: Option<&str>,
) {
    out.push_str(module_path);
    out.push(':');
    out.push_str(function);
    if let Some(namespace) = namespace {
        out.push('|');
        out.push_str(namespace);
    }
}

/// The lowercase hex SHA-1 of `key` (always 40 characters), as dogpile's `sha1_mangle_key`.
///
/// ```
/// assert_eq!(
///     dogpile_core::sha1_mangle_key("some_key"),
///     "53def077a4264bd3183d4eb21b1f56f883e1b572"
/// );
/// ```
pub fn sha1_mangle_key(key: &str) -> String {
    let digest = Sha1::digest(key.as_bytes());
    let mut out = String::with_capacity(40);
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A mangler that applies `mangler` only to keys of `limit` bytes or more, as dogpile's
/// `length_conditional_mangler`.
///
/// ```
/// use dogpile_core::{length_conditional_mangler, sha1_mangle_key};
///
/// let mangle = length_conditional_mangler(10, sha1_mangle_key);
/// assert_eq!(mangle("short"), "short");
/// assert_eq!(mangle("a rather long key").len(), 40);
/// ```
pub fn length_conditional_mangler<F>(
    limit: usize,
    mangler: F,
) -> impl Fn(&str) -> String + Send + Sync + 'static
where
    F: Fn(&str) -> String + Send + Sync + 'static,
{
    move |key: &str| {
        if key.len() >= limit {
            mangler(key)
        } else {
            key.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keys_follow_dogpile_layout() {
        let args = ["3".to_string(), "4".to_string()];
        let mut key = FunctionKey {
            module_path: "myapp::tools",
            function: "one",
            namespace: None,
            args: &args,
        };
        assert_eq!(default_function_key(&key), "myapp::tools:one|3 4");
        key.namespace = Some("foo");
        assert_eq!(default_function_key(&key), "myapp::tools:one|foo|3 4");
        key.args = &[];
        assert_eq!(default_function_key(&key), "myapp::tools:one|foo|");
    }

    #[test]
    fn sha1_matches_dogpile() {
        assert_eq!(
            sha1_mangle_key("tests.cache.test_decorator:one|1 2"),
            "aead490a8ace2d69a00160f1fd8fd8a16552c24f"
        );
    }

    #[test]
    fn length_conditional_applies_at_the_limit() {
        let mangle = length_conditional_mangler(5, |k: &str| format!("m:{k}"));
        assert_eq!(mangle("abcd"), "abcd");
        assert_eq!(mangle("abcde"), "m:abcde");
    }
}
