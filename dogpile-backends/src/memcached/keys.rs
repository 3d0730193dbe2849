//! The keys memcached sees: any cache key made safe for the server.

use std::borrow::Cow;

/// The prefix of every mangled key. A key that starts with it is itself mangled, so a
/// mangled key can never collide with a key passed through as it is.
pub const MANGLED_PREFIX: &str = "~sha1~";

/// memcached's longest key, in bytes.
pub const MAX_KEY_LEN: usize = 250;

/// The key under which memcached stores `key`.
///
/// A key of 1 to 250 printable ASCII characters (no space, no control character) that does
/// not start with [`MANGLED_PREFIX`] is used as it is, so other memcached clients can
/// read it. Any other key (too long, empty, with whitespace, control characters or
/// non-ASCII characters) becomes `MANGLED_PREFIX` followed by its SHA-1 in hex: a key can
/// never reach the server's protocol parser as anything but one opaque, legal token.
///
/// ```
/// use dogpile_backends::memcached::memcached_key;
///
/// assert_eq!(memcached_key("user:42"), "user:42");
/// assert_eq!(memcached_key("a b"), "~sha1~7dbde93504122a707f849f2c12bdd9de71b41929");
/// assert_eq!(memcached_key(&"x".repeat(1000)).len(), 46);
/// ```
pub fn memcached_key(key: &str) -> Cow<'_, str> {
    let legal = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic())
        && !key.starts_with(MANGLED_PREFIX);
    if legal {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!(
            "{MANGLED_PREFIX}{}",
            dogpile_core::key::sha1_mangle_key(key)
        ))
    }
}

/// A key for error messages and logs: escaped (no raw control characters reach a log
/// line) and cut to a readable length.
pub(crate) fn display_key(key: &str) -> String {
    const SHOWN: usize = 80;
    match key.char_indices().nth(SHOWN) {
        None => format!("{key:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &key[..cut], key.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_keys_pass_through() {
        for key in [
            "a",
            "user:42",
            "myapp::tools:one|foo|3",
            &"k".repeat(250),
            "~sha1",
        ] {
            assert_eq!(memcached_key(key), key);
            assert!(matches!(memcached_key(key), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn every_other_key_is_mangled_to_a_legal_one() {
        let long = "k".repeat(251);
        let prefixed = format!("{MANGLED_PREFIX}{}", "0".repeat(40));
        for key in [
            "",
            "a b",
            "tab\there",
            "x\r\nflush_all",
            "nul\0",
            "del\x7f",
            "ключ",
            "é",
            long.as_str(),
            prefixed.as_str(),
        ] {
            let mangled = memcached_key(key);
            assert_ne!(mangled, key);
            assert!(mangled.starts_with(MANGLED_PREFIX), "{mangled}");
            assert_eq!(mangled.len(), MANGLED_PREFIX.len() + 40);
            assert!(mangled.bytes().all(|b| b.is_ascii_graphic()));
            // A mangled key is legal, so mangling is not applied to it again: it is stable.
            assert_eq!(
                memcached_key(&mangled),
                format!(
                    "{MANGLED_PREFIX}{}",
                    dogpile_core::key::sha1_mangle_key(&mangled)
                )
            );
        }
    }

    #[test]
    fn a_key_that_looks_mangled_does_not_collide_with_the_mangled_key() {
        let mangled = memcached_key("a b").into_owned();
        assert_ne!(memcached_key(&mangled), mangled);
        assert_ne!(memcached_key("a b"), memcached_key("a_b"));
    }

    #[test]
    fn display_key_escapes_and_cuts() {
        assert_eq!(display_key("x\r\nflush_all"), r#""x\r\nflush_all""#);
        let shown = display_key(&"é".repeat(1000));
        assert!(shown.ends_with("... (2000 bytes)"), "{shown}");
        assert!(shown.chars().count() < 120);
    }
}
