//! Cache keys: function keys for memoized functions, and key manglers.
//!
//! # The default function key
//!
//! dogpile's layout, `"{module}:{fn}|{namespace}|{arg1} {arg2}"` (without `|{namespace}`
//! when there is none): `one(3, 4)` in module `myapp::tools` with namespace `foo` has the
//! key `myapp::tools:one|foo|3 4`.
//!
//! Two different argument tuples never share a key, whatever the arguments hold. An
//! argument is written as it renders unless its text is empty or holds one of the three
//! characters that give the layout its structure: the separator (a space), `|` and the
//! escape character `\`. Such an argument is escaped:
//!
//! - each space, `|` and `\` in it is preceded by a `\` (`Mary Ann` is written `Mary\ Ann`);
//! - an empty argument is written `\0`.
//!
//! So `greet("Mary", "Ann Smith")` has the key `...:greet|Mary Ann\ Smith` and
//! `greet("Mary Ann", "Smith")` the key `...:greet|Mary\ Ann Smith`. Every escaped argument
//! is non-empty and holds no unescaped space, so splitting the arguments at the unescaped
//! spaces gives back each one, and each one reads back to one text (`\0` is only ever an
//! empty argument: a text `\0` is written `\\0`). Arguments without those characters (the
//! common case: numbers, identifiers) keep dogpile's layout exactly, and cost no more than
//! a scan of their bytes.
//!
//! The same rule builds the keys of `#[cache_on_arguments]` and `#[cache_multi_on_arguments]`
//! functions. A region's own `function_key_generator` receives the arguments as rendered,
//! unescaped, and decides for itself.

pub(crate) mod call;

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
    /// arguments left out), as rendered: [`default_function_key`] escapes them, a custom
    /// generator decides for itself.
    pub args: &'a [String],
}

/// Builds the key of one function call from a [`FunctionKey`].
pub type FunctionKeyGenerator = Arc<dyn Fn(&FunctionKey<'_>) -> String + Send + Sync>;

/// dogpile's default function key: `"{module}:{fn}|{namespace}|{arg1} {arg2}"`, without
/// `|{namespace}` when there is none.
///
/// Two different argument tuples never share a key: an argument that is empty or holds a
/// space (the separator), `|` or `\` is escaped, each of those characters getting a `\`
/// before it and an empty argument being written `\0` (`Mary Ann` is written `Mary\ Ann`).
/// Every escaped argument is non-empty and has no unescaped space, so the arguments split
/// back apart at the unescaped spaces, and each reads back to one text. Arguments without
/// those characters keep dogpile's layout exactly.
///
/// ```
/// use dogpile_core::key::{default_function_key, FunctionKey};
///
/// let args = ["3".to_string(), "4".to_string()];
/// let key = FunctionKey { module_path: "myapp::tools", function: "one", namespace: Some("foo"), args: &args };
/// assert_eq!(default_function_key(&key), "myapp::tools:one|foo|3 4");
///
/// let args = ["Mary Ann".to_string(), String::new()];
/// let key = FunctionKey { args: &args, ..key };
/// assert_eq!(default_function_key(&key), r"myapp::tools:one|foo|Mary\ Ann \0");
/// ```
pub fn default_function_key(key: &FunctionKey<'_>) -> String {
    // One allocation of the exact size, no formatting machinery: this runs on every call
    // of a memoized function, hits included.
    let args_len: usize =
        key.args.iter().map(|arg| escaped_len(arg)).sum::<usize>() + key.args.len();
    let mut out = String::with_capacity(
        prefix_len(key.module_path, key.function, key.namespace) + args_len + 1,
    );
    push_prefix(&mut out, key.module_path, key.function, key.namespace);
    out.push('|');
    for (i, arg) in key.args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        push_arg(&mut out, arg);
    }
    out
}

/// How an empty argument is written.
const EMPTY_ARG: &str = "\\0";

/// A buffer a key is written into: a `String`, or the key of one call of a memoized
/// function (built on the stack when it fits).
pub(crate) trait KeyBuffer {
    /// The text written so far.
    fn text(&self) -> &str;
    /// Appends `text`.
    fn push_text(&mut self, text: &str);
    /// Cuts the text back to its first `len` bytes (a character boundary).
    fn truncate_to(&mut self, len: usize);
}

impl KeyBuffer for String {
    fn text(&self) -> &str {
        self
    }
    fn push_text(&mut self, text: &str) {
        self.push_str(text);
    }
    fn truncate_to(&mut self, len: usize) {
        self.truncate(len);
    }
}

/// True for the bytes that an argument escapes: the separator, `|` and `\`.
fn is_special(byte: u8) -> bool {
    matches!(byte, b' ' | b'|' | b'\\')
}

/// The length of `arg` once escaped.
fn escaped_len(arg: &str) -> usize {
    if arg.is_empty() {
        return EMPTY_ARG.len();
    }
    arg.len() + arg.bytes().filter(|&b| is_special(b)).count()
}

/// Appends `arg` to `out`, escaped if it needs to be.
pub(crate) fn push_arg(out: &mut impl KeyBuffer, arg: &str) {
    if arg.is_empty() {
        out.push_text(EMPTY_ARG);
    } else if arg.bytes().any(is_special) {
        push_escaped(out, arg);
    } else {
        out.push_text(arg);
    }
}

/// Appends `text` to `out` with a `\` before each special character.
fn push_escaped(out: &mut impl KeyBuffer, text: &str) {
    let mut rest = text;
    // Special characters are ASCII, so every split below is at a character boundary.
    while let Some(at) = rest.bytes().position(is_special) {
        out.push_text(&rest[..at]);
        out.push_text("\\");
        out.push_text(&rest[at..=at]);
        rest = &rest[at + 1..];
    }
    out.push_text(rest);
}

/// Escapes, in place, the argument written at the end of `key` from byte `start` on, as
/// [`default_function_key`] writes it. An argument that needs no escape (the common case)
/// is only scanned.
pub(crate) fn escape_from(key: &mut impl KeyBuffer, start: usize) {
    let Some(arg) = key.text().get(start..) else {
        return;
    };
    if arg.is_empty() {
        key.push_text(EMPTY_ARG);
        return;
    }
    let Some(first) = arg.bytes().position(is_special) else {
        return;
    };
    let rest = arg[first..].to_owned();
    key.truncate_to(start + first);
    push_escaped(key, &rest);
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
    out: &mut impl KeyBuffer,
    module_path: &str,
    function: &str,
    namespace: Option<&str>,
) {
    out.push_text(module_path);
    out.push_text(":");
    out.push_text(function);
    if let Some(namespace) = namespace {
        out.push_text("|");
        out.push_text(namespace);
    }
}

/// The lowercase hex SHA-1 of `key` (always 40 characters), as dogpile's `sha1_mangle_key`.
///
/// ```
/// assert_eq!(
///     dogpile_core::key::sha1_mangle_key("some_key"),
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
/// use dogpile_core::key::{length_conditional_mangler, sha1_mangle_key};
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
    use proptest::prelude::*;

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

    /// The arguments of a key built by [`default_function_key`], read back by the rule of
    /// the module docs: split at unescaped spaces, `\0` is empty, `\x` is `x`.
    fn read_args(key: &str, prefix: &str) -> Vec<String> {
        let section = key
            .strip_prefix(prefix)
            .expect("the key starts with its prefix");
        if section.is_empty() {
            return Vec::new();
        }
        let mut args = vec![String::new()];
        let mut chars = section.chars();
        while let Some(ch) = chars.next() {
            match ch {
                '\\' => match chars.next().expect("an escape is followed by a character") {
                    '0' => assert!(args.last().unwrap().is_empty(), "`\\0` stands alone"),
                    escaped @ (' ' | '|' | '\\') => args.last_mut().unwrap().push(escaped),
                    other => panic!("`\\{other}` is no escape"),
                },
                ' ' => args.push(String::new()),
                '|' => panic!("an unescaped `|` among the arguments of {key:?}"),
                ch => args.last_mut().unwrap().push(ch),
            }
        }
        args
    }

    fn key_of(args: &[String]) -> String {
        default_function_key(&FunctionKey {
            module_path: "m",
            function: "f",
            namespace: Some("ns"),
            args,
        })
    }

    #[test]
    fn special_arguments_are_escaped_and_plain_ones_kept() {
        let key = |args: &[&str]| key_of(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert_eq!(key(&["Mary", "Ann Smith"]), r"m:f|ns|Mary Ann\ Smith");
        assert_eq!(key(&["Mary Ann", "Smith"]), r"m:f|ns|Mary\ Ann Smith");
        assert_eq!(key(&["a|b", r"c\d"]), r"m:f|ns|a\|b c\\d");
        assert_eq!(key(&[""]), r"m:f|ns|\0");
        assert_eq!(key(&["", ""]), r"m:f|ns|\0 \0");
        assert_eq!(key(&[r"\0"]), r"m:f|ns|\\0");
        assert_eq!(key(&[]), "m:f|ns|");
        assert_eq!(key(&["é ü"]), r"m:f|ns|é\ ü");
        assert_eq!(key(&["3", "4", "x_y-z.w"]), "m:f|ns|3 4 x_y-z.w");
    }

    /// Arguments drawn mostly from the characters that matter: the separator, `|`, `\`, the
    /// `0` of the empty marker, and empty strings.
    fn tuples() -> impl Strategy<Value = Vec<String>> {
        let arg = proptest::string::string_regex(r"[ |\\0a]{0,4}").unwrap();
        proptest::collection::vec(arg, 0..4)
    }

    proptest! {
        #[test]
        fn keys_read_back_to_their_arguments(args in tuples()) {
            let key = key_of(&args);
            prop_assert_eq!(read_args(&key, "m:f|ns|"), args);
        }

        #[test]
        fn distinct_tuples_never_share_a_key(all in proptest::collection::vec(tuples(), 1..64)) {
            let mut seen: std::collections::HashMap<String, &Vec<String>> = Default::default();
            for args in &all {
                if let Some(earlier) = seen.insert(key_of(args), args) {
                    prop_assert_eq!(earlier, args, "two tuples share a key");
                }
            }
        }
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
