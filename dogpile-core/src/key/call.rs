//! The keys of memoized calls: built by the code `#[cache_on_arguments]` generates, on
//! every call (hits included), so on the stack and in one pass where they can be.

use std::cell::RefCell;
use std::fmt::{Display, Write};

use crate::key::{
    escape_from, push_arg, push_prefix, FunctionKey, FunctionKeyGenerator, KeyBuffer,
};

/// Renders one argument of a memoized function into its part of the cache key: by
/// `Display`, as dogpile renders arguments with `str()`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key: it does not implement `Display`",
    label = "this argument is part of the cache key",
    note = "leave the argument out of the key with `skip(name)`, or render it with `to_str = my_fn`, a `fn(&T) -> String`"
)]
pub trait KeyArg {
    /// The argument as it appears in the key.
    fn key_arg(&self) -> String;

    /// Writes the argument as argument `index` of the key.
    fn write_key_arg(&self, args: &mut KeyArgs<'_>, index: usize);
}

impl<T: Display + ?Sized> KeyArg for T {
    fn key_arg(&self) -> String {
        self.to_string()
    }

    fn write_key_arg(&self, args: &mut KeyArgs<'_>, index: usize) {
        args.push_display(index, self);
    }
}

/// Renders an argument whose declared type the macro reads as a primitive integer, `str` or
/// `String` (or a reference to one): the same text as `Display` writes (tested), without
/// the formatting machinery, since this runs on every call of a memoized function, hits
/// included. Implemented for those types only, so an argument of another type that happens
/// to bear one of those names is a compile error, never a wrong key.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is named like a primitive integer or `String` but is another type, so dogpile cannot render it as one",
    label = "this argument is part of the cache key",
    note = "rename the type, or render the argument with `to_str = my_fn`, a `fn(&T) -> String`"
)]
pub trait PlainKeyArg {
    /// Writes the argument as argument `index` of the key: its `Display` text, escaped
    /// where the key needs it (an integer never does).
    fn write_key_arg(&self, args: &mut KeyArgs<'_>, index: usize);
}

macro_rules! integer_key_args {
    ($($int:ty),*) => {$(
        impl PlainKeyArg for $int {
            #[inline]
            fn write_key_arg(&self, args: &mut KeyArgs<'_>, index: usize) {
                args.push_unescaped(index, itoa::Buffer::new().format(*self));
            }
        }
    )*};
}

integer_key_args!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

impl PlainKeyArg for str {
    #[inline]
    fn write_key_arg(&self, args: &mut KeyArgs<'_>, index: usize) {
        args.push(index, self);
    }
}

impl PlainKeyArg for String {
    #[inline]
    fn write_key_arg(&self, args: &mut KeyArgs<'_>, index: usize) {
        args.push(index, self);
    }
}

impl<T: PlainKeyArg + ?Sized> PlainKeyArg for &T {
    #[inline]
    fn write_key_arg(&self, args: &mut KeyArgs<'_>, index: usize) {
        (**self).write_key_arg(args, index);
    }
}

/// Keys up to this many bytes are built on the stack.
const INLINE_KEY: usize = 128;

/// The key of one call of a memoized function, which derefs to `str`: built on the stack
/// when it fits in 128 bytes (most keys do), so that building the key of a cache hit
/// allocates nothing; on the heap beyond that.
#[derive(Debug, Clone)]
pub struct CallKey(Repr);

#[derive(Debug, Clone)]
enum Repr {
    Inline(arrayvec::ArrayString<INLINE_KEY>),
    Heap(String),
}

impl Default for CallKey {
    fn default() -> Self {
        Self::new()
    }
}

impl CallKey {
    /// An empty key.
    #[inline]
    pub fn new() -> Self {
        CallKey(Repr::Inline(arrayvec::ArrayString::new()))
    }

    /// The key as an owned `String`.
    pub fn into_string(self) -> String {
        match self.0 {
            Repr::Inline(key) => key.as_str().to_owned(),
            Repr::Heap(key) => key,
        }
    }

    /// Moves the key to the heap, with room for `more` bytes.
    #[cold]
    fn spill(&mut self, more: usize) -> &mut String {
        if let Repr::Inline(key) = &self.0 {
            let mut heap = String::with_capacity(key.len() + more.max(INLINE_KEY));
            heap.push_str(key);
            self.0 = Repr::Heap(heap);
        }
        match &mut self.0 {
            Repr::Heap(heap) => heap,
            Repr::Inline(_) => unreachable!("the key was just moved to the heap"),
        }
    }
}

impl From<String> for CallKey {
    fn from(key: String) -> Self {
        CallKey(Repr::Heap(key))
    }
}

impl std::ops::Deref for CallKey {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        match &self.0 {
            Repr::Inline(key) => key,
            Repr::Heap(key) => key,
        }
    }
}

impl KeyBuffer for CallKey {
    #[inline]
    fn text(&self) -> &str {
        self
    }

    #[inline]
    fn push_text(&mut self, text: &str) {
        match &mut self.0 {
            Repr::Inline(key) => {
                if key.try_push_str(text).is_err() {
                    self.spill(text.len()).push_str(text);
                }
            }
            Repr::Heap(key) => key.push_str(text),
        }
    }

    fn truncate_to(&mut self, len: usize) {
        match &mut self.0 {
            Repr::Inline(key) => key.truncate(len),
            Repr::Heap(key) => key.truncate(len),
        }
    }
}

impl std::fmt::Write for CallKey {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.push_text(text);
        Ok(())
    }
}

/// Where generated code writes the rendered arguments of a key, by position, in order.
pub struct KeyArgs<'a>(Args<'a>);

enum Args<'a> {
    /// Written straight into the key, separated by spaces and escaped: the layout of
    /// [`default_function_key`](crate::key::default_function_key).
    Joined(&'a mut CallKey),
    /// One buffer per argument, as rendered, for a key generator that receives them apart.
    Separate(&'a mut [String]),
}

impl KeyArgs<'_> {
    /// Writes argument `index`: `text`, escaped where the key needs it.
    #[inline]
    pub fn push(&mut self, index: usize, text: &str) {
        match &mut self.0 {
            Args::Joined(key) => {
                separate(key, index);
                push_arg(*key, text);
            }
            Args::Separate(args) => args[index].push_str(text),
        }
    }

    /// Writes argument `index`: `text`, which is never empty and holds no character that
    /// the key escapes (an integer's digits), so it is not scanned.
    #[inline]
    fn push_unescaped(&mut self, index: usize, text: &str) {
        match &mut self.0 {
            Args::Joined(key) => {
                separate(key, index);
                key.push_text(text);
            }
            Args::Separate(args) => args[index].push_str(text),
        }
    }

    /// Writes argument `index` by its `Display` text, escaped where the key needs it.
    pub fn push_display(&mut self, index: usize, value: &(impl Display + ?Sized)) {
        // Writing to a key or a `String` cannot fail; a `Display` impl that reports an
        // error leaves what it wrote.
        match &mut self.0 {
            Args::Joined(key) => {
                separate(key, index);
                let start = key.len();
                let _ = write!(key, "{value}");
                escape_from(*key, start);
            }
            Args::Separate(args) => {
                let _ = write!(args[index], "{value}");
            }
        }
    }
}

/// The separator before argument `index`.
#[inline]
fn separate(key: &mut CallKey, index: usize) {
    if index > 0 {
        key.push_text(" ");
    }
}

/// Where a memoized call is: what its key's prefix is made of, and how many arguments its
/// key has.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// The function's module (`module_path!()`, or the type of a method's `Self`).
    pub module_path: &'a str,
    /// The function's name, with its generic arguments when it has any.
    pub function: &'a str,
    /// The namespace given to the macro, if any.
    pub namespace: Option<&'a str>,
    /// How many arguments the key has.
    pub count: usize,
}

/// Builds the key of one call into `key` (empty, and declared where it is used: moving it
/// would copy its stack buffer) with the region's function key generator (`None`: the default
/// one). With the default generator (the common case) the key is written in one pass, on the stack when it fits
/// (see [`CallKey`]), since this runs on every call of a memoized function, hits included;
/// arguments are escaped as [`default_function_key`](crate::key::default_function_key) escapes
/// them, which costs a scan of their bytes unless they hold a special character (an
/// integer is not scanned).
///
/// `prefix` is `"{module}:{fn}|"` or `"{module}:{fn}|{namespace}|"` when the macro could
/// build it at compile time (a free function that is not generic): the same text that
/// `site` gives.
#[inline]
pub fn call_key<R>(
    key: &mut CallKey,
    generator: Option<&FunctionKeyGenerator>,
    prefix: Option<&'static str>,
    site: Site<'_>,
    render: R,
) where
    R: FnOnce(&mut KeyArgs<'_>),
{
    if let Some(generator) = generator {
        function_key(key, |function_key| generator(function_key), site, render);
        return;
    }
    match prefix {
        Some(prefix) => key.push_text(prefix),
        None => {
            push_prefix(key, site.module_path, site.function, site.namespace);
            key.push_text("|");
        }
    }
    render(&mut KeyArgs(Args::Joined(key)));
}

thread_local! {
    /// Argument buffers reused by [`function_key`] on this thread.
    static KEY_ARGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Buffers that grew past this are dropped after use rather than kept for the thread's life.
const KEPT_CAPACITY: usize = 1024;

/// Builds the key of one call into `key`: `render` writes each key argument into its
/// (empty) buffer, then `generate` (the region's or the function's key generator) builds
/// the key from a [`FunctionKey`].
///
/// The buffers are reused across calls on a thread, so that a cache hit renders its
/// arguments without allocating; a nested call (an argument's `Display` that calls a
/// memoized function) finds them in use and gets fresh ones.
///
/// Never inlined: a region or a function with its own key generator is the uncommon case,
/// kept out of the code of every call.
#[inline(never)]
pub fn function_key<G, R>(key: &mut CallKey, generate: G, site: Site<'_>, render: R)
where
    G: FnOnce(&FunctionKey<'_>) -> String,
    R: FnOnce(&mut KeyArgs<'_>),
{
    let count = site.count;
    let build = |args: &mut [String], render: R, generate: G| {
        render(&mut KeyArgs(Args::Separate(args)));
        generate(&FunctionKey {
            module_path: site.module_path,
            function: site.function,
            namespace: site.namespace,
            args,
        })
    };
    let mut steps = Some((render, generate));
    let reused = KEY_ARGS.try_with(|cell| {
        let mut pool = cell.try_borrow_mut().ok()?;
        let (render, generate) = steps.take()?;
        if pool.len() < count {
            pool.resize_with(count, String::new);
        }
        let args = &mut pool[..count];
        args.iter_mut().for_each(String::clear);
        let key = build(args, render, generate);
        for arg in args.iter_mut().filter(|arg| arg.capacity() > KEPT_CAPACITY) {
            *arg = String::new();
        }
        Some(key)
    });
    if let Ok(Some(built)) = reused {
        *key = CallKey::from(built);
        return;
    }
    match steps.take() {
        Some((render, generate)) => {
            *key = CallKey::from(build(&mut vec![String::new(); count], render, generate));
        }
        // The closure above returns `Some` whenever it takes the steps.
        None => unreachable!("function_key's steps were taken without building a key"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::key::{default_function_key, FunctionKey};

    /// The key the one-pass path builds for `args`, each written by `Display`.
    fn joined(args: &[String]) -> String {
        joined_by(None, args, |arg, slots, i| {
            KeyArg::write_key_arg(arg, slots, i);
        })
    }

    /// The same, with the prefix the macro builds at compile time, and each argument
    /// written by [`PlainKeyArg`], as for an argument declared `String`.
    fn joined_plain(args: &[String]) -> String {
        joined_by(Some("m:f|ns|"), args, |arg, slots, i| {
            PlainKeyArg::write_key_arg(arg, slots, i);
        })
    }

    fn site<'a>(
        module_path: &'a str,
        function: &'a str,
        namespace: Option<&'a str>,
        count: usize,
    ) -> Site<'a> {
        Site {
            module_path,
            function,
            namespace,
            count,
        }
    }

    /// The key of function `m:f` in namespace `ns` for `args`, each written by `write`.
    fn joined_by(
        prefix: Option<&'static str>,
        args: &[String],
        write: fn(&String, &mut KeyArgs<'_>, usize),
    ) -> String {
        built(|key| {
            call_key(
                key,
                None,
                prefix,
                site("m", "f", Some("ns"), args.len()),
                |slots| {
                    for (i, arg) in args.iter().enumerate() {
                        write(arg, slots, i);
                    }
                },
            );
        })
    }

    /// The key that `fill` builds in a new [`CallKey`].
    fn built(fill: impl FnOnce(&mut CallKey)) -> String {
        let mut key = CallKey::new();
        fill(&mut key);
        key.into_string()
    }

    /// `PlainKeyArg`'s text of `value`, against `Display`'s.
    fn plain_is_display<T: PlainKeyArg + Display>(
        value: T,
    ) -> std::result::Result<(), TestCaseError> {
        let key = |arg: &dyn Fn(&mut KeyArgs<'_>)| {
            built(|key| {
                call_key(key, None, Some("m:f|"), site("m", "f", None, 2), |args| {
                    args.push(0, "before");
                    arg(args);
                });
            })
        };
        let expected = format!("m:f|before {value}");
        prop_assert_eq!(key(&|args| value.write_key_arg(args, 1)), expected.clone());
        prop_assert_eq!(
            key(&|args| PlainKeyArg::write_key_arg(&&value, args, 1)),
            expected
        );
        let mut separate = vec![String::new(); 2];
        value.write_key_arg(&mut KeyArgs(Args::Separate(&mut separate)), 1);
        prop_assert_eq!(&separate[1], &value.to_string());
        Ok(())
    }

    #[test]
    fn plain_integers_render_as_display_at_their_limits() {
        macro_rules! limits {
            ($($int:ty),*) => {$(
                plain_is_display(<$int>::MIN).unwrap();
                plain_is_display(<$int>::MAX).unwrap();
                plain_is_display(0 as $int).unwrap();
            )*};
        }
        limits!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);
    }

    #[test]
    fn a_key_longer_than_the_stack_buffer_moves_to_the_heap_whole() {
        for len in [0, 1, 60, 118, 119, 120, 121, 200, 1000] {
            let args = ["a b".to_string(), "x".repeat(len), "c|".repeat(len / 2 + 1)];
            let expected = default_function_key(&FunctionKey {
                module_path: "m",
                function: "f",
                namespace: Some("ns"),
                args: &args,
            });
            assert_eq!(joined(&args), expected, "arguments of {len} bytes");
            assert_eq!(joined_plain(&args), expected, "arguments of {len} bytes");
        }
    }

    proptest! {
        #[test]
        fn the_one_pass_key_is_the_default_key(
            args in proptest::collection::vec(
                proptest::string::string_regex(r"[ |\\0aé]{0,4}").unwrap(),
                0..4,
            )
        ) {
                let expected = default_function_key(&FunctionKey {
                module_path: "m",
                function: "f",
                namespace: Some("ns"),
                args: &args,
            });
            prop_assert_eq!(joined(&args), expected.clone());
            prop_assert_eq!(joined_plain(&args), expected.clone());
            // The separate-buffers path, as a custom generator gets them.
            let separate = built(|key| {
                function_key(key, default_function_key, site("m", "f", Some("ns"), args.len()), |slots| {
                    for (i, arg) in args.iter().enumerate() {
                        KeyArg::write_key_arg(arg, slots, i);
                    }
                });
            });
            prop_assert_eq!(separate, expected);
        }

        #[test]
        fn plain_integers_render_as_display(a: i64, b: u128, c: i128, d: u16, e: isize) {
            plain_is_display(a)?;
            plain_is_display(b)?;
            plain_is_display(c)?;
            plain_is_display(d)?;
            plain_is_display(e)?;
        }
    }
}
