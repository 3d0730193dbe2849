//! A small typed model of the function being cached: its name, where it lives, its
//! arguments and what it returns, checked against the options.
//!
//! [`Shape`] is what can be read from any function, valid for caching or not: enough to
//! declare the generated functions, so that the fallback can still emit them. [`Model`]
//! is a shape that passed every check, with the options applied.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{
    Attribute, Error, FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PathArguments,
    Result, ReturnType, Type, TypePath,
};

use crate::attr::{Flavor, Options};

/// Where the function lives: this decides how generated code calls the function's body and
/// what stands for the module in its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    /// A free function: the body is called by name; keys use `module_path!()`.
    Free,
    /// An associated function without receiver (recognized by `Self` in its signature):
    /// called as `Self::name(..)`; keys use the type's path.
    Associated,
    /// A method: called as `Self::name(self, ..)`; keys use the type's path.
    Method(ReceiverKind),
}

/// How a method takes `self`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReceiverKind {
    /// `&self`.
    Shared,
    /// `&mut self`.
    Unique,
    /// `self`, `mut self`, `self: Arc<Self>`, ...
    Other,
}

/// Which part of what the function returns is cached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Part {
    /// The whole value. With `probe`, generated code checks that the type is not a
    /// `Result` under a name that does not say so (decided by the type, at compile time).
    Whole { probe: bool },
    /// The `Ok` values of a `Result`: by default for a return type named `Result` or
    /// `...Result<..>`, or with `result = true`; checked by the type.
    Ok,
    /// The `Some` values of an `Option`, with `option = true`.
    Some,
}

/// What the function returns, as far as caching is concerned.
#[derive(Clone)]
pub(crate) struct Returns {
    /// The type cached under one key: `T` of `-> T`, `-> Result<T, E>` or (with
    /// `option = true`) `-> Option<T>`, or for the multi form `T` of `-> Vec<T>` or
    /// `-> Result<Vec<T>, E>`. For a `Result` under a name without type arguments, the
    /// projection `<Alias as ResultOutput>::Value`.
    pub(crate) value: Type,
    /// Which part is cached.
    pub(crate) part: Part,
}

/// The options that the shape depends on (what is cached, the generated names), read
/// before the function is modelled so that the fallback declares the same functions.
#[derive(Clone, Default)]
pub(crate) struct ShapeOptions {
    /// `result = true|false`.
    pub(crate) result: Option<bool>,
    /// `option = true|false`.
    pub(crate) option: Option<bool>,
    /// `siblings = "name"`.
    pub(crate) siblings: Option<Ident>,
}

impl ShapeOptions {
    pub(crate) fn of(options: Option<&Options>) -> ShapeOptions {
        ShapeOptions {
            result: options.and_then(|o| o.result.as_ref()).map(|b| b.value),
            option: options.and_then(|o| o.option.as_ref()).map(|b| b.value),
            siblings: options.and_then(|o| o.siblings.clone()),
        }
    }
}

/// The attributes of the function, sorted by where they go.
#[derive(Clone, Default)]
pub(crate) struct Attrs {
    /// `#[cfg]`, `#[cfg_attr]` and lint levels: on every generated function.
    pub(crate) every: Vec<Attribute>,
    /// Docs and everything else: on the cached function only.
    pub(crate) cached: Vec<Attribute>,
    /// `#[expect(..)]`: on the function that holds the body (`<fn>_uncached`) only.
    pub(crate) body: Vec<Attribute>,
}

/// What can be read from any function, whatever is wrong with it.
#[derive(Clone)]
pub(crate) struct Shape {
    /// Which macro.
    pub(crate) flavor: Flavor,
    /// The function as written.
    pub(crate) item: ItemFn,
    /// Its attributes, sorted.
    pub(crate) attrs: Attrs,
    /// Its name without `r#`, spanned at the written name.
    pub(crate) name: Ident,
    /// The stem of the generated functions' names: `siblings = "..."`, or the name.
    pub(crate) stem: Ident,
    /// Where it lives.
    pub(crate) context: Context,
    /// Its return type as written (`()` when it has none).
    pub(crate) output: Type,
    /// What it returns, or `None` when that cannot be cached (`impl Trait`, or for the
    /// multi form anything but a `Vec`).
    pub(crate) returns: Option<Returns>,
}

impl Shape {
    /// True for an `async fn`: the cached function and the siblings that reach the cache
    /// (all but `<fn>_key`) are `async` too.
    pub(crate) fn is_async(&self) -> bool {
        self.item.sig.asyncness.is_some()
    }

    /// Reads the shape of `item`; `parts` are the options that decide what is cached.
    pub(crate) fn of(item: ItemFn, flavor: Flavor, options: ShapeOptions) -> Shape {
        let name = item.sig.ident.unraw();
        let stem = options.siblings.clone().unwrap_or_else(|| name.clone());
        let context = match item.sig.receiver() {
            Some(receiver) => Context::Method(match (&receiver.reference, &receiver.colon_token) {
                (Some(_), None) if receiver.mutability.is_some() => ReceiverKind::Unique,
                (Some(_), None) => ReceiverKind::Shared,
                _ => ReceiverKind::Other,
            }),
            None if mentions_self(item.sig.to_token_stream()) => Context::Associated,
            None => Context::Free,
        };
        let output = match &item.sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, ty) => (**ty).clone(),
        };
        let returns = returns(&output, flavor, &options);
        let attrs = sort_attrs(&item.attrs);
        Shape {
            flavor,
            item,
            attrs,
            name,
            stem,
            context,
            output,
            returns,
        }
    }
}

/// One argument (not the receiver).
#[derive(Clone)]
pub(crate) struct Arg {
    /// Its name.
    pub(crate) ident: Ident,
    /// Its type.
    pub(crate) ty: Type,
    /// True when it is part of the key (not named in `skip(..)`).
    pub(crate) keyed: bool,
}

/// The argument of a multi function that holds the keys.
#[derive(Clone)]
pub(crate) struct MultiKeys {
    /// Its position in [`Model::args`].
    pub(crate) index: usize,
    /// True for `Vec<K>`, false for `&[K]`.
    pub(crate) owned: bool,
    /// `K`.
    pub(crate) element: Type,
}

/// A generic parameter that generated code names: in the turbofish of calls to the body,
/// and in keys, so that `parse::<u32>` and `parse::<u64>` never share one.
#[derive(Clone)]
pub(crate) enum Generic {
    /// A type parameter: rendered with `type_name`.
    Type(Ident),
    /// A const parameter: rendered with `Display`.
    Const(Ident),
}

impl Generic {
    pub(crate) fn ident(&self) -> &Ident {
        match self {
            Generic::Type(ident) | Generic::Const(ident) => ident,
        }
    }
}

/// A function that can be cached, with its options.
pub(crate) struct Model {
    /// Its shape.
    pub(crate) shape: Shape,
    /// Its options.
    pub(crate) options: Options,
    /// What it returns.
    pub(crate) returns: Returns,
    /// Its arguments, receiver left out, in order.
    pub(crate) args: Vec<Arg>,
    /// Its type and const parameters, in order.
    pub(crate) generics: Vec<Generic>,
    /// For the multi form, the argument holding the keys.
    pub(crate) multi: Option<MultiKeys>,
}

/// Collects every error found, so that the user sees them all at once.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(Error::new_spanned(tokens, message));
    }
}

impl Model {
    /// Checks `shape` against what caching needs and against `options`; reports every
    /// problem found (the options' own error first).
    pub(crate) fn build(shape: &Shape, options: Result<Options>) -> Result<Model> {
        let mut errors = Errors::default();
        let options = options.map_err(|e| errors.push(e)).ok();
        let sig = &shape.item.sig;
        let attribute = shape.flavor.attribute();

        if let Some(constness) = &sig.constness {
            errors.spanned(
                constness,
                format!("{attribute} cannot cache a `const fn`: remove `const`"),
            );
        }
        if let Some(unsafety) = &sig.unsafety {
            errors.spanned(
                unsafety,
                format!(
                    "{attribute} cannot cache an `unsafe fn`: cache a safe function that \
                     wraps it"
                ),
            );
        }
        if let Some(abi) = &sig.abi {
            errors.spanned(
                abi,
                format!("{attribute} cannot cache an `extern` function: remove the ABI"),
            );
        }
        if let Some(variadic) = &sig.variadic {
            errors.spanned(
                variadic,
                format!("{attribute} cannot cache a variadic function"),
            );
        }

        if let Some(options) = &options {
            if let (Some(result), Some(option)) = (&options.result, &options.option) {
                if result.value && option.value {
                    errors.spanned(
                        option,
                        "`result = true` and `option = true` cannot both apply: the return \
                         type is a `Result` or an `Option`; keep the one it is",
                    );
                }
            }
            if let (Some(option), Flavor::Multi) = (&options.option, shape.flavor) {
                errors.spanned(
                    option,
                    "#[cache_multi_on_arguments] caches one value per key and has no `option`; \
                     to leave `None` values out of the cache, write \
                     `should_cache_fn = |value| value.is_some()`",
                );
            }
        }

        let returns = match (&shape.returns, shape.flavor) {
            (Some(returns), _) => Some(returns.clone()),
            (None, _) if borrows(&shape.output) => {
                errors.spanned(
                    &shape.output,
                    "a cached value is stored and read back, so it cannot borrow: return an \
                     owned type (`String` for `&str`, `Vec<T>` for `&[T]`, `T` for `&T`)",
                );
                None
            }
            (None, Flavor::Single) => {
                errors.spanned(
                    &shape.output,
                    "a cached function returns a type that can be stored \
                     (`Serialize + DeserializeOwned + Clone`), not `impl Trait`",
                );
                None
            }
            (None, Flavor::Multi) => {
                errors.spanned(
                    &shape.output,
                    "a #[cache_multi_on_arguments] function returns `Vec<T>` or \
                     `Result<Vec<T>, E>` (or an alias spelled with the `Vec`, such as \
                     `AppResult<Vec<T>>`): one value per key, in the keys' order",
                );
                None
            }
        };

        let skip = options.as_ref().map_or(&[][..], |o| &o.skip[..]);
        let mut args = Vec::new();
        for input in &sig.inputs {
            let FnArg::Typed(typed) = input else { continue };
            match &*typed.pat {
                Pat::Ident(pat) if pat.subpat.is_none() => {
                    let keyed = !skip.iter().any(|s| s.unraw() == pat.ident.unraw());
                    args.push(Arg {
                        ident: pat.ident.clone(),
                        ty: (*typed.ty).clone(),
                        keyed,
                    });
                }
                Pat::Wild(_) => errors.spanned(
                    &typed.pat,
                    "an argument named `_` cannot be passed on to the function's body: \
                     give it a name, and add the name to `skip(...)` to leave it out of the key",
                ),
                other => errors.spanned(
                    other,
                    "an argument written as a pattern cannot be keyed: bind it to a name \
                     (`arg: Type`) and destructure it in the body",
                ),
            }
        }
        for name in skip {
            if !args.iter().any(|arg| arg.ident.unraw() == name.unraw()) {
                let known: Vec<String> = args.iter().map(|a| format!("`{}`", a.ident)).collect();
                let known = if known.is_empty() {
                    String::new()
                } else {
                    format!("; its arguments are {}", known.join(", "))
                };
                errors.spanned(
                    name,
                    format!(
                        "`skip({name})` names no argument of `{}`{known}",
                        shape.name
                    ),
                );
            }
        }

        let multi = match shape.flavor {
            Flavor::Single => None,
            Flavor::Multi if options.is_some() => multi_keys(shape, &args, &mut errors),
            Flavor::Multi => None,
        };

        let generics = sig
            .generics
            .params
            .iter()
            .filter_map(|param| match param {
                GenericParam::Type(t) => Some(Generic::Type(t.ident.clone())),
                GenericParam::Const(c) => Some(Generic::Const(c.ident.clone())),
                GenericParam::Lifetime(_) => None,
            })
            .collect();

        match (errors.0, options, returns) {
            (Some(error), _, _) => Err(error),
            (None, Some(options), Some(returns)) => Ok(Model {
                shape: shape.clone(),
                options,
                returns,
                args,
                generics,
                multi,
            }),
            // Every `None` above pushed an error.
            (None, _, _) => Err(Error::new_spanned(&sig.ident, "invalid function")),
        }
    }
}

/// Finds the one keyed argument of a multi function and checks its type.
fn multi_keys(shape: &Shape, args: &[Arg], errors: &mut Errors) -> Option<MultiKeys> {
    if let Context::Method(ReceiverKind::Other) = shape.context {
        if let Some(receiver) = shape.item.sig.receiver() {
            errors.spanned(
                receiver,
                "#[cache_multi_on_arguments] methods take `&self` or `&mut self`",
            );
        }
    }
    // The keys are the one keyed argument that is a slice or a `Vec`; other keyed
    // arguments are part of every element's key.
    let mut lists = args
        .iter()
        .enumerate()
        .filter(|(_, arg)| arg.keyed)
        .filter_map(|(index, arg)| list_kind(&arg.ty).map(|list| (index, arg, list)));
    let Some((index, keys, (owned, element))) = lists.next() else {
        match args.iter().filter(|arg| arg.keyed).collect::<Vec<_>>()[..] {
            [single] => errors.spanned(
                &single.ty,
                format!(
                    "#[cache_multi_on_arguments] takes the keys as a slice or a `Vec`: \
                     `{0}: &[K]` or `{0}: Vec<K>`",
                    single.ident
                ),
            ),
            _ => errors.spanned(
                &shape.item.sig,
                "#[cache_multi_on_arguments] needs an argument holding the keys, such as \
                 `ids: &[u64]` or `ids: Vec<u64>`, that is not named in `skip(...)`",
            ),
        }
        return None;
    };
    for (_, extra, _) in lists {
        errors.spanned(
            &extra.ident,
            format!(
                "#[cache_multi_on_arguments] caches each element of one argument (`{}`); \
                 leave `{}` out of the key with `skip({})`",
                keys.ident, extra.ident, extra.ident
            ),
        );
    }
    if shape.is_async() {
        refuse_unique_borrows(shape, args, errors);
    }
    Some(MultiKeys {
        index,
        owned,
        element,
    })
}

/// An async multi function's body may run twice (on disjoint keys, when the cache fails),
/// each time as a future created before the other is done with: it cannot hold a `&mut`
/// twice.
fn refuse_unique_borrows(shape: &Shape, args: &[Arg], errors: &mut Errors) {
    if let (Context::Method(ReceiverKind::Unique), Some(receiver)) =
        (shape.context, shape.item.sig.receiver())
    {
        errors.spanned(
            receiver,
            "an async #[cache_multi_on_arguments] method takes `&self`: its body's future may \
             be created twice and cannot hold `&mut self` twice; keep what changes behind a \
             `Mutex`",
        );
    }
    for arg in args {
        if let Type::Reference(reference) = &arg.ty {
            if reference.mutability.is_some() {
                errors.spanned(
                    &arg.ty,
                    format!(
                        "an async #[cache_multi_on_arguments] function cannot take `&mut`: its \
                         body's future may be created twice and cannot hold `{}` twice; pass \
                         `&` (with a `Mutex` inside) or an owned value",
                        arg.ident
                    ),
                );
            }
        }
    }
}

/// `Some((false, K))` for `&[K]`, `Some((true, K))` for `Vec<K>`, `None` for anything else.
fn list_kind(ty: &Type) -> Option<(bool, Type)> {
    match ty {
        Type::Reference(reference) if reference.mutability.is_none() => match &*reference.elem {
            Type::Slice(slice) => Some((false, (*slice.elem).clone())),
            _ => None,
        },
        ty => single_generic(ty, "Vec").map(|element| (true, element)),
    }
}

/// What a function returning `output` caches, or `None` if it cannot be cached.
fn returns(output: &Type, flavor: Flavor, parts: &ShapeOptions) -> Option<Returns> {
    if mentions_impl(output) || borrows(output) {
        return None;
    }
    let named_result = result_named(output);
    let part = match (parts.result, parts.option) {
        (Some(true), _) => Part::Ok,
        (_, Some(true)) if flavor == Flavor::Single => Part::Some,
        (Some(false), _) => Part::Whole { probe: false },
        (None, _) if named_result.is_some() => Part::Ok,
        // A multi function returns a `Vec`, never a `Result` in disguise.
        (None, _) => Part::Whole {
            probe: flavor == Flavor::Single,
        },
    };
    let value = match (part, flavor) {
        (Part::Whole { .. }, Flavor::Single) => output.clone(),
        (Part::Whole { .. }, Flavor::Multi) => single_generic(output, "Vec")?,
        (Part::Ok, Flavor::Single) => match named_result.flatten() {
            Some(ok) => ok,
            None => projection(output, quote::format_ident!("ResultOutput")),
        },
        (Part::Ok, Flavor::Multi) => single_generic(&named_result.flatten()?, "Vec")?,
        (Part::Some, _) => single_generic(output, "Option")
            .unwrap_or_else(|| projection(output, quote::format_ident!("OptionOutput"))),
    };
    Some(Returns { value, part })
}

/// `<output as ::dogpile::__private::trait>::Value`, spanned at `output` so that a type
/// that is not what `trait` converts is reported there.
fn projection(output: &Type, part: Ident) -> Type {
    let span = syn::spanned::Spanned::span(output);
    syn::parse_quote_spanned!(span=> <#output as ::dogpile::__private::#part>::Value)
}

/// For a return type named like a `Result` (`Result<T, E>`, `io::Result<T>`,
/// `fmt::Result`, `AppResult<T>`): `Some(Some(T))`, or `Some(None)` when it has no type
/// argument; `None` for other names. The name only chooses the default; generated code
/// checks that the type is a `Result`.
fn result_named(ty: &Type) -> Option<Option<Type>> {
    let Type::Path(TypePath { qself: None, path }) = ty else {
        return None;
    };
    let last = path.segments.last()?;
    let name = last.ident.to_string();
    let first = match &last.arguments {
        PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty.clone()),
            _ => None,
        }),
        _ => None,
    };
    // `Result` itself, or `SomethingResult<..>`: a type named `SearchResult` without
    // arguments is more often a struct than an alias.
    let result_like = name == "Result" || (name.ends_with("Result") && first.is_some());
    result_like.then_some(first)
}

/// `T` of `name<T>` (`Vec<T>`, `std::vec::Vec<T>`).
fn single_generic(ty: &Type, name: &str) -> Option<Type> {
    let Type::Path(TypePath { qself: None, path }) = ty else {
        return None;
    };
    let last = path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.iter().collect::<Vec<_>>()[..] {
        [GenericArgument::Type(ty)] => Some(ty.clone()),
        _ => None,
    }
}

/// True when `ty` holds a reference or a lifetime other than `'static`.
fn borrows(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        let mut tokens = tokens.into_iter().peekable();
        while let Some(token) = tokens.next() {
            match token {
                TokenTree::Punct(punct) if punct.as_char() == '&' => return true,
                TokenTree::Punct(punct) if punct.as_char() == '\'' => {
                    if let Some(TokenTree::Ident(lifetime)) = tokens.peek() {
                        if lifetime != "static" {
                            return true;
                        }
                    }
                }
                TokenTree::Group(group) if walk(group.stream()) => return true,
                _ => {}
            }
        }
        false
    }
    walk(ty.to_token_stream())
}

fn mentions_impl(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            TokenTree::Ident(ident) => ident == "impl",
            TokenTree::Group(group) => walk(group.stream()),
            _ => false,
        })
    }
    walk(ty.to_token_stream())
}

fn mentions_self(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => ident == "Self",
        TokenTree::Group(group) => mentions_self(group.stream()),
        _ => false,
    })
}

fn sort_attrs(attrs: &[Attribute]) -> Attrs {
    let mut sorted = Attrs::default();
    for attr in attrs {
        let path = attr.path();
        let is = |name: &str| path.is_ident(name);
        if is("cfg") || is("cfg_attr") || is("allow") || is("warn") || is("deny") || is("forbid") {
            sorted.every.push(attr.clone());
        } else if is("expect") {
            sorted.body.push(attr.clone());
        } else {
            sorted.cached.push(attr.clone());
        }
    }
    sorted
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn shape(item: TokenStream, flavor: Flavor) -> Shape {
        Shape::of(syn::parse2(item).unwrap(), flavor, ShapeOptions::default())
    }

    fn value(shape: &Shape) -> Option<(String, bool)> {
        shape
            .returns
            .as_ref()
            .map(|r| (r.value.to_token_stream().to_string(), r.part == Part::Ok))
    }

    #[test]
    fn context_comes_from_the_receiver_or_self() {
        let context = |item| shape(item, Flavor::Single).context;
        assert_eq!(
            context(quote!(
                fn f(a: u8) -> u8 {
                    a
                }
            )),
            Context::Free
        );
        assert_eq!(
            context(quote!(
                fn f(&self) -> u8 {
                    1
                }
            )),
            Context::Method(ReceiverKind::Shared)
        );
        assert_eq!(
            context(quote!(
                fn f(&mut self) -> u8 {
                    1
                }
            )),
            Context::Method(ReceiverKind::Unique)
        );
        assert_eq!(
            context(quote!(
                fn f(self: Arc<Self>) -> u8 {
                    1
                }
            )),
            Context::Method(ReceiverKind::Other)
        );
        assert_eq!(
            context(quote!(
                fn f(id: u8) -> Self {
                    x
                }
            )),
            Context::Associated
        );
        assert_eq!(
            context(quote!(
                fn f(id: Vec<Self>) -> u8 {
                    x
                }
            )),
            Context::Associated
        );
    }

    #[test]
    fn returns_are_recognized() {
        let single = |item| value(&shape(item, Flavor::Single));
        let multi = |item| value(&shape(item, Flavor::Multi));
        assert_eq!(
            single(quote!(
                fn f() {}
            )),
            Some(("()".into(), false))
        );
        assert_eq!(
            single(quote!(
                fn f() -> Option<u8> {
                    x
                }
            )),
            Some(("Option < u8 >".into(), false))
        );
        assert_eq!(
            single(quote!(
                fn f() -> Result<u8, E> {
                    x
                }
            )),
            Some(("u8".into(), true))
        );
        assert_eq!(
            single(quote!(
                fn f() -> std::io::Result<u8> {
                    x
                }
            )),
            Some(("u8".into(), true))
        );
        assert_eq!(
            single(quote!(
                fn f() -> AppResult<u8> {
                    x
                }
            )),
            Some(("u8".into(), true)),
            "named like a Result"
        );
        for whole in [
            quote!(Fallible<u8>),
            quote!(SearchResult),
            quote!(Cow<'static, str>),
        ] {
            let item = quote!(fn f() -> #whole { x });
            let expected = whole.to_string();
            assert_eq!(single(item), Some((expected, false)));
        }
        for borrowed in [
            quote!(&str),
            quote!(Option<&'static [u8]>),
            quote!(Cow<'a, str>),
        ] {
            assert!(single(quote!(fn f() -> #borrowed { x })).is_none());
        }
        assert_eq!(
            single(quote!(
                fn f() -> impl Display {
                    x
                }
            )),
            None
        );
        assert_eq!(
            single(quote!(
                fn f() -> Result<impl Display, E> {
                    x
                }
            )),
            None
        );
        assert_eq!(
            multi(quote!(
                fn f(ids: &[u8]) -> Vec<String> {
                    x
                }
            )),
            Some(("String".into(), false))
        );
        assert_eq!(
            multi(quote!(
                fn f(ids: &[u8]) -> Result<Vec<String>, E> {
                    x
                }
            )),
            Some(("String".into(), true))
        );
        assert_eq!(
            multi(quote!(
                fn f(ids: &[u8]) -> HashMap<u8, u8> {
                    x
                }
            )),
            None
        );
    }

    #[test]
    fn multi_finds_the_keys_argument() {
        let build = |item| {
            let shape = shape(item, Flavor::Multi);
            let options = Options::parse(quote!(region = "R"), Flavor::Multi);
            Model::build(&shape, options)
        };
        let model = build(quote!(
            fn f(tenant: u8, ids: Vec<u64>) -> Vec<u8> {
                x
            }
        ))
        .unwrap();
        let keys = model.multi.unwrap();
        assert_eq!((keys.index, keys.owned), (1, true));
        let error = build(quote!(
            fn f(a: &[u8], b: &[u8]) -> Vec<u8> {
                x
            }
        ))
        .err()
        .unwrap();
        assert!(error.to_string().contains("leave `b` out of the key"));
        let error = build(quote!(
            fn f() -> Vec<u8> {
                x
            }
        ))
        .err()
        .unwrap();
        assert!(error
            .to_string()
            .contains("needs an argument holding the keys"));
    }
}
