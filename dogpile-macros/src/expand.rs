//! Code generation from a checked [`Model`]: infallible.
//!
//! Generated code names everything by absolute path (`::dogpile::...`, `::core::...`,
//! `::std::...`) and prefixes its locals with `__dogpile_`, so that nothing in the user's
//! scope can change its meaning.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Ident, Type};

use crate::attr::{ExpirationTime, Flavor};
use crate::model::{Context, Generic, Model, Part, ReceiverKind};
use crate::siblings::{signature, Keys, Names, Operation, Operations, Receiver, Siblings};

/// What the macro emits for one function.
pub(crate) struct Expansion {
    /// The cached function, in place of the function as written.
    pub(crate) function: TokenStream,
    /// The generated functions next to it, `<fn>_uncached` included: after the function
    /// for a free function or an inherent method; in an inherent impl of their own for a
    /// method of a trait impl.
    pub(crate) siblings: TokenStream,
}

impl Expansion {
    /// The function followed by its siblings.
    pub(crate) fn joined(self) -> TokenStream {
        let Expansion { function, siblings } = self;
        quote!(#function #siblings)
    }
}

/// Blocking or async: how generated code names the region's operations and calls the body.
#[derive(Clone, Copy)]
struct Mode {
    asynchronous: bool,
}

impl Mode {
    fn of(model: &Model) -> Mode {
        Mode {
            asynchronous: model.shape.is_async(),
        }
    }

    /// The operation `name` (`get_or_create`, `delete`, ...), or its `_async` twin.
    fn op(self, name: &str) -> Ident {
        if self.asynchronous {
            quote::format_ident!("{name}_async")
        } else {
            quote::format_ident!("{name}")
        }
    }

    /// `.await` after a call of an async operation or body.
    fn wait(self) -> TokenStream {
        if self.asynchronous {
            quote!(.await)
        } else {
            TokenStream::new()
        }
    }

    /// A creator returning `value` (an expression that may `.await`): a closure returning
    /// a future, an `async move` block for an async function, the value made ready for a
    /// blocking one.
    fn creator(self, value: &TokenStream) -> TokenStream {
        if self.asynchronous {
            quote!(move || async move { #value })
        } else {
            quote!(move || ::core::future::ready(#value))
        }
    }

    /// A value operation `name` of the function, called on `stored` with `args`: one method
    /// for both faces, told which by its first argument, then blocked on or awaited.
    fn value_op(self, stored: &TokenStream, name: &str, args: TokenStream) -> TokenStream {
        let name = quote::format_ident!("{name}");
        let (face, finish) = if self.asynchronous {
            (quote!(::dogpile::__private::AsyncIo), quote!(.await))
        } else {
            (quote!(::dogpile::__private::BlockingIo), quote!(.block()))
        };
        quote!(#stored.#name(#face, #args) #finish)
    }
}

/// What the single and the multi forms build differently; [`expand`] puts it together with
/// what they share.
struct Form {
    /// The check, before anything else in the cached function, that a type cached whole is
    /// not a `Result` or an `Option` (the single form's).
    probe: TokenStream,
    /// How the key (single) or keys (multi) are bound.
    keys: Keys,
    /// The cached function's value, once the region, the key(s) and the options are bound.
    cached: TokenStream,
    /// What each sibling does.
    operations: Operations,
}

/// The cached function, its siblings and the original body.
pub(crate) fn expand(model: &Model) -> Expansion {
    let names = Names::of(&model.shape);
    let form = match model.shape.flavor {
        Flavor::Single => Some(single(model, &names)),
        Flavor::Multi => multi(model, &names),
    };
    let Some(Form {
        probe,
        keys,
        cached,
        operations,
    }) = form
    else {
        // The model always has the keys argument for the multi form.
        return Expansion {
            function: TokenStream::new(),
            siblings: TokenStream::new(),
        };
    };
    let shape = &model.shape;
    let sig = &shape.item.sig;
    let vis = &shape.item.vis;
    let every = &shape.attrs.every;
    let cached_attrs = &shape.attrs.cached;
    let region = region(model);
    let assert_stored = assert_stored(model);
    let options = create_options(model);
    let (siblings_probe, marker) = siblings_check(model);
    let build = &keys.build;
    let main_sig = signature(
        sig,
        sig.ident.clone(),
        Receiver::Keep,
        None,
        sig.output.clone(),
        true,
    );
    let function = quote! {
        #(#cached_attrs)*
        #(#every)*
        #[allow(clippy::ptr_arg, clippy::needless_pass_by_value, clippy::used_underscore_binding)]
        #vis #main_sig {
            #siblings_probe
            #probe
            #assert_stored
            #region
            #build
            #options
            #cached
        }
    };
    let siblings = Siblings {
        shape,
        names: &names,
        value: &model.returns.value,
        region: &region,
        keys: &keys,
    }
    .emit(operations);
    Expansion {
        function,
        siblings: quote!(#siblings #marker),
    }
}

/// For a method or an associated function: a hidden inherent method, among the siblings,
/// that says they are in an inherent impl; and a check in the function that finds it.
///
/// An attribute on a method cannot see whether it is in a trait impl, where its siblings do
/// not belong (the compiler reports each as not a member of the trait). The check tells:
/// in a trait impl the marker is missing, so the check's call resolves to the fallback
/// trait declared next to it, whose value fails a bound with a message saying to put the
/// attribute on the impl block too. In an inherent impl (or in the inherent impl the
/// attribute on a trait impl's block emits) the marker, an inherent method, wins.
fn siblings_check(model: &Model) -> (TokenStream, TokenStream) {
    let shape = &model.shape;
    if shape.context == Context::Free {
        return (TokenStream::new(), TokenStream::new());
    }
    let name = &shape.name;
    let marker = quote::format_ident!("__dogpile_siblings_of_{}", name, span = name.span());
    let check = quote_spanned! {name.span()=>
        {
            #[allow(dead_code, non_camel_case_types)]
            trait __dogpile_no_siblings {
                fn #marker(&self) -> ::dogpile::__private::SiblingsMissing {
                    ::dogpile::__private::SiblingsMissing
                }
            }
            #[allow(dead_code)]
            impl<__DogpileT: ?::core::marker::Sized> __dogpile_no_siblings for __DogpileT {}
            let _ = |__dogpile_probe: &Self| {
                ::dogpile::__private::siblings_beside(__dogpile_probe.#marker())
            };
        }
    };
    let every = &shape.attrs.every;
    let marker = quote_spanned! {name.span()=>
        #[doc(hidden)]
        #(#every)*
        #[allow(dead_code)]
        fn #marker(&self) -> ::dogpile::__private::SiblingsBeside {
            ::dogpile::__private::SiblingsBeside
        }
    };
    (check, marker)
}

/// The single form: one key, built from every keyed argument.
fn single(model: &Model, names: &Names) -> Form {
    let shape = &model.shape;
    let fn_name = &shape.name;

    let stored = stored(model);
    let key = function_key(model, &key_args(model));
    let key_call = call_key(model, names);
    let mode = Mode::of(model);
    let wait = mode.wait();
    let call = call_body(model, names, |arg| arg.ident.to_token_stream());
    let call = quote!(#call #wait);
    let output = &shape.output;
    // The region's `get_or_create`, with a creator returning `value`.
    let get_or_create = |value: TokenStream| {
        let creator = mode.creator(&value);
        mode.value_op(
            &stored,
            "get_or_create",
            quote!(__dogpile_region, &__dogpile_key, __dogpile_options, #creator),
        )
    };
    let cached_body = match part_trait(model) {
        Some(Conversions { into, from }) => {
            let got = get_or_create(quote!(#into(#call)));
            quote!(#from(#got))
        }
        None => {
            let got = get_or_create(
                quote!(::core::result::Result::Ok::<_, ::core::convert::Infallible>(#call)),
            );
            quote!(::dogpile::__private::unwrap_infallible(#got))
        }
    };
    let probe = match model.returns.part {
        Part::Whole { probe: true } => quote_spanned! {output.span()=>
            {
                #[allow(unused_imports)]
                use ::dogpile::__private::{ProbeResult as _, ProbeWhole as _};
                ::dogpile::__private::cached_whole::<#output, _>(
                    (&::dogpile::__private::Probe::<#output>::new()).kind(),
                );
            }
        },
        _ => TokenStream::new(),
    };
    let expiration = match &model.options.expiration_time {
        None => quote!(::core::option::Option::None),
        Some(expiration) => {
            let expiration = expiration_value(model, expiration);
            quote!(::core::option::Option::Some(#expiration))
        }
    };
    let get = mode.value_op(
        &stored,
        "get",
        quote!(__dogpile_region, &__dogpile_key, #expiration),
    );
    let set = |value: TokenStream| {
        mode.value_op(
            &stored,
            "set",
            quote!(__dogpile_region, &__dogpile_key, #value),
        )
    };
    let set_value = set(quote!(&__dogpile_value));
    let delete_op = mode.op("delete");
    let refresh_body = match part_trait(model) {
        Some(Conversions { into, from }) => quote! {
            match #into(#call) {
                ::core::result::Result::Ok(__dogpile_value) => {
                    #set_value?;
                    ::core::result::Result::Ok(#from(
                        ::core::result::Result::Ok(__dogpile_value),
                    ))
                }
                ::core::result::Result::Err(__dogpile_rest) => ::core::result::Result::Ok(
                    #from(::core::result::Result::Err(__dogpile_rest)),
                ),
            }
        },
        None => quote! {
            let __dogpile_value = #call;
            #set_value?;
            ::core::result::Result::Ok(__dogpile_value)
        },
    };
    let value_arg = &names.value;

    let doc_refresh = match model.returns.part {
        Part::Ok => format!(
            "Runs the body of `{fn_name}` and caches its `Ok` value; the outer `Result` \
             is the cache's, the inner one the body's."
        ),
        Part::Some => format!(
            "Runs the body of `{fn_name}` and caches its `Some` value; the `Result` is the \
             cache's."
        ),
        Part::Whole { .. } => {
            format!("Runs the body of `{fn_name}`, caches its value and returns it.")
        }
    };
    Form {
        probe,
        keys: Keys {
            build: key,
            call: quote!(let __dogpile_key: ::std::string::String = #key_call;),
        },
        cached: cached_body,
        operations: Operations {
            key: Operation {
                doc: format!("The cache key of `{fn_name}` for these arguments."),
                body: quote!(::dogpile::__private::CallKey::into_string(__dogpile_key)),
            },
            invalidate: Operation {
                doc: format!("Removes the cached value of `{fn_name}` for these arguments."),
                body: quote!(__dogpile_region.#delete_op(&__dogpile_key) #wait),
            },
            refresh: Operation {
                doc: doc_refresh,
                body: refresh_body,
            },
            set: Operation {
                doc: format!(
                    "Caches `{value_arg}` as the value of `{fn_name}` for these arguments."
                ),
                body: set(quote!(#value_arg)),
            },
            get: Operation {
                doc: format!(
                    "The cached value of `{fn_name}` for these arguments, if a fresh one is \
                     cached; never runs the body."
                ),
                body: get,
            },
        },
    }
}

/// The multi form: one key per element of the keys argument; `None` without one (the model
/// always has it).
fn multi(model: &Model, names: &Names) -> Option<Form> {
    let shape = &model.shape;
    let fn_name = &shape.name;
    let keys_arg = model.multi.as_ref()?;
    let keys_ident = &model.args[keys_arg.index].ident;
    let keys_call = call_key(model, names);

    let stored = stored(model);
    // Other keyed arguments are rendered once, and are part of every element's key.
    let fixed: Vec<TokenStream> = model
        .args
        .iter()
        .enumerate()
        .filter(|(i, arg)| arg.keyed && *i != keys_arg.index)
        .map(|(_, arg)| {
            let ident = &arg.ident;
            render(model, quote_spanned!(arg.ty.span()=> &#ident))
        })
        .collect();
    let fixed_count = fixed.len();
    let mut parts = Vec::new();
    let mut fixed_index = 0usize;
    for (i, arg) in model.args.iter().enumerate() {
        if !arg.keyed {
            continue;
        }
        if i == keys_arg.index {
            parts.push(KeyPart::Render {
                arg: quote!(__dogpile_element),
                plain: is_plain(&keys_arg.element),
            });
        } else {
            parts.push(KeyPart::Fixed(fixed_index));
            fixed_index += 1;
        }
    }
    let key = function_key(model, &parts);
    let fixed = (fixed_count > 0).then(
        || quote!(let __dogpile_fixed: [::std::string::String; #fixed_count] = [#(#fixed),*];),
    );
    let keys = quote! {
        #fixed
        let __dogpile_keys: ::std::vec::Vec<::std::string::String> = #keys_ident
            .iter()
            .map(|__dogpile_element| {
                #key
                ::dogpile::__private::CallKey::into_string(__dogpile_key)
            })
            .collect();
    };
    let elements = if keys_arg.owned {
        quote!(&#keys_ident[..])
    } else {
        quote!(#keys_ident)
    };
    let label = label(model);

    // In the creator, which may run twice (on disjoint keys) when the cache fails: the
    // missing keys in place of the keys argument, other arguments passed again.
    let missing = if keys_arg.owned {
        quote!(__dogpile_missing)
    } else {
        quote!(&__dogpile_missing)
    };
    let mode = Mode::of(model);
    let wait = mode.wait();
    // The body as a closure of the missing elements, its value made by `wrap` from the
    // body's: for an async function, the arguments passed again are bound before the
    // `async move` block that owns them.
    let body = |wrap: &dyn Fn(TokenStream) -> TokenStream| {
        if mode.asynchronous {
            let (bindings, call_again) =
                call_body_again_async(model, names, keys_arg.index, &missing);
            let value = wrap(quote!(#call_again.await));
            quote!(|__dogpile_missing| { #bindings async move { #value } })
        } else {
            let value = wrap(call_body_again(model, names, keys_arg.index, &missing));
            quote!(|__dogpile_missing| ::core::future::ready({ #value }))
        }
    };
    let call = call_body(model, names, |arg| arg.ident.to_token_stream());
    let call = quote!(#call #wait);
    // The region's `get_or_create_multi`, with the body as `body` makes it.
    let get_or_create = |wrap: &dyn Fn(TokenStream) -> TokenStream| {
        let body = body(wrap);
        mode.value_op(
            &stored,
            "get_or_create_multi",
            quote!(__dogpile_region, #label, &__dogpile_keys, #elements, __dogpile_options, #body),
        )
    };
    let refresh = |values: TokenStream| {
        mode.value_op(
            &stored,
            "refresh_multi",
            quote!(__dogpile_region, #label, &__dogpile_keys, #values),
        )
    };
    let refresh_values = refresh(quote!(__dogpile_values));
    let (cached_body, refresh_body) = match part_trait(model) {
        Some(Conversions { into, from }) => (
            {
                let got = get_or_create(&|value| quote!(#into(#value)));
                quote!(#from(#got))
            },
            quote! {
                match #into(#call) {
                    ::core::result::Result::Ok(__dogpile_values) => ::core::result::Result::Ok(
                        #from(::core::result::Result::Ok(#refresh_values?)),
                    ),
                    ::core::result::Result::Err(__dogpile_error) => ::core::result::Result::Ok(
                        #from(::core::result::Result::Err(__dogpile_error)),
                    ),
                }
            },
        ),
        None => (
            {
                let got = get_or_create(
                    &|value| quote!(::core::result::Result::Ok::<_, ::core::convert::Infallible>(#value)),
                );
                quote!(::dogpile::__private::unwrap_infallible(#got))
            },
            refresh(call.clone()),
        ),
    };
    let delete_multi = mode.op("delete_multi");
    let values_arg = &names.value;

    Some(Form {
        probe: TokenStream::new(),
        keys: Keys {
            build: keys,
            call: quote! {
                let __dogpile_keys: ::std::vec::Vec<::std::string::String> = #keys_call;
            },
        },
        cached: cached_body,
        operations: Operations {
            key: Operation {
                doc: format!("The cache keys of `{fn_name}`, one per element of `{keys_ident}`."),
                body: quote!(__dogpile_keys),
            },
            invalidate: Operation {
                doc: format!(
                    "Removes the cached values of `{fn_name}` for the elements of `{keys_ident}`."
                ),
                body: quote!(__dogpile_region.#delete_multi(&__dogpile_keys) #wait),
            },
            refresh: Operation {
                doc: format!(
                    "Runs the body of `{fn_name}` on every element of `{keys_ident}`, caches \
                     the values and returns them."
                ),
                body: refresh_body,
            },
            set: Operation {
                doc: format!(
                    "Caches `{values_arg}[i]` as the value of `{fn_name}` for `{keys_ident}[i]`; \
                     the counts must match."
                ),
                body: mode.value_op(
                    &stored,
                    "set_multi",
                    quote!(__dogpile_region, #label, &__dogpile_keys, #values_arg),
                ),
            },
            get: Operation {
                doc: format!(
                    "The cached values of `{fn_name}` for the elements of `{keys_ident}`, in \
                     order (`None` where none is cached; judged by the region's expiration \
                     time); never runs the body."
                ),
                body: mode.value_op(
                    &stored,
                    "get_multi",
                    quote!(__dogpile_region, &__dogpile_keys),
                ),
            },
        },
    })
}

/// The value operations of the function (`Stored`, or `Unstorable` when the value type
/// cannot be cached), chosen by the type.
fn stored(model: &Model) -> TokenStream {
    let value = &model.returns.value;
    quote_spanned! {model.shape.output.span()=>
        {
            #[allow(unused_imports)]
            use ::dogpile::__private::{ProbeStored as _, ProbeUnstorable as _};
            (&::dogpile::__private::Probe::<#value>::new()).stored()
        }
    }
}

/// The check that the value type can be cached: one error per missing trait, at the
/// return type.
fn assert_stored(model: &Model) -> TokenStream {
    let value = &model.returns.value;
    quote_spanned! {model.shape.output.span()=>
        ::dogpile::__private::assert_stored::<#value>();
    }
}

/// The conversions of a function of which one part is cached:
/// `<Output as ResultOutput>::into_cached` and `::from_cached` (or `OptionOutput`'s), spanned
/// at the return type so that a type that is neither is reported there, once; `None` when
/// the whole value is cached.
fn part_trait(model: &Model) -> Option<Conversions> {
    let output = &model.shape.output;
    let part = match model.returns.part {
        Part::Whole { .. } => return None,
        Part::Ok => quote!(ResultOutput),
        Part::Some => quote!(OptionOutput),
    };
    let span = output.span();
    Some(Conversions {
        into: quote_spanned!(span=> <#output as ::dogpile::__private::#part>::into_cached),
        from: quote_spanned!(span=> <#output as ::dogpile::__private::#part>::from_cached),
    })
}

/// See [`part_trait`].
struct Conversions {
    into: TokenStream,
    from: TokenStream,
}

/// `let __dogpile_region: &CacheRegion = &REGION;`, spanned at the region's path so that a
/// wrong type is reported there.
fn region(model: &Model) -> TokenStream {
    let path = &model.options.region;
    quote_spanned! {path.span()=>
        let __dogpile_region: &::dogpile::CacheRegion = &#path;
    }
}

/// One part of a key.
enum KeyPart {
    /// An argument to render: an expression of type `&T`; `plain` when `T` reads as a
    /// primitive integer, `str` or `String` (see [`is_plain`]).
    Render { arg: TokenStream, plain: bool },
    /// An argument already rendered into `__dogpile_fixed[i]`.
    Fixed(usize),
}

/// The keyed arguments of a single function.
fn key_args(model: &Model) -> Vec<KeyPart> {
    model
        .args
        .iter()
        .filter(|arg| arg.keyed)
        .map(|arg| {
            let ident = &arg.ident;
            KeyPart::Render {
                arg: quote_spanned!(arg.ty.span()=> &#ident),
                plain: is_plain(&arg.ty),
            }
        })
        .collect()
}

/// True for a type named as a primitive integer, `str` or `String`, or a reference to one:
/// such an argument is written by `PlainKeyArg`, the same text as `Display` without the
/// formatting machinery. A type of another kind that bears one of these names fails to
/// compile with `PlainKeyArg`'s message, so a name never gives a wrong key.
fn is_plain(ty: &Type) -> bool {
    const PLAIN: &[&str] = &[
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
        "str", "String",
    ];
    match ty {
        Type::Reference(reference) => is_plain(&reference.elem),
        Type::Paren(inner) => is_plain(&inner.elem),
        Type::Group(inner) => is_plain(&inner.elem),
        Type::Path(path) if path.qself.is_none() => path
            .path
            .get_ident()
            .is_some_and(|ident| PLAIN.iter().any(|name| ident == name)),
        _ => false,
    }
}

/// An expression rendering `arg`, an expression of type `&T`, into its part of the key:
/// with the `to_str` option, or by `Display`.
fn render(model: &Model, arg: TokenStream) -> TokenStream {
    match &model.options.to_str {
        Some(to_str) => quote_spanned!(to_str.span()=> (#to_str)(#arg)),
        None => quote_spanned!(arg.span()=> ::dogpile::__private::KeyArg::key_arg(#arg)),
    }
}

/// A statement writing `part` into the key's `index`th argument slot.
fn write_part(model: &Model, part: &KeyPart, index: usize) -> TokenStream {
    match (part, &model.options.to_str) {
        (KeyPart::Render { arg, .. }, Some(to_str)) => {
            quote_spanned!(to_str.span()=> __dogpile_args.push(#index, &(#to_str)(#arg));)
        }
        (KeyPart::Render { arg, plain: true }, None) => quote_spanned! {arg.span()=>
            ::dogpile::__private::PlainKeyArg::write_key_arg(#arg, __dogpile_args, #index);
        },
        (KeyPart::Render { arg, plain: false }, None) => quote_spanned! {arg.span()=>
            ::dogpile::__private::KeyArg::write_key_arg(#arg, __dogpile_args, #index);
        },
        (KeyPart::Fixed(fixed), _) => {
            quote!(__dogpile_args.push(#index, &__dogpile_fixed[#fixed]);)
        }
    }
}

/// Statements declaring `__dogpile_key`, a `CallKey`, and building the key from `parts`
/// in it (in place: the key is not moved afterwards, which would copy its stack buffer).
fn function_key(model: &Model, parts: &[KeyPart]) -> TokenStream {
    let options = &model.options;
    let count = parts.len();
    let writes = parts
        .iter()
        .enumerate()
        .map(|(index, part)| write_part(model, part, index));
    let module = match model.shape.context {
        Context::Free => quote!(::core::module_path!()),
        Context::Associated | Context::Method(_) => quote!(::core::any::type_name::<Self>()),
    };
    let name = model.shape.name.to_string();
    let (function_binding, function) = if model.generics.is_empty() {
        (TokenStream::new(), quote!(#name))
    } else {
        let format = format!("{name}::<{}>", vec!["{}"; model.generics.len()].join(", "));
        let parts = model.generics.iter().map(|generic| match generic {
            Generic::Type(ident) => quote!(::core::any::type_name::<#ident>()),
            Generic::Const(ident) => quote!(#ident),
        });
        (
            quote! {
                let __dogpile_function = ::std::format!(#format, #(#parts),*);
            },
            quote!(&__dogpile_function),
        )
    };
    let namespace = match &options.namespace {
        Some(namespace) => quote!(::core::option::Option::Some(#namespace)),
        None => quote!(::core::option::Option::None),
    };
    // A free function that is not generic knows its whole prefix at compile time.
    let prefix = match (
        &model.shape.context,
        model.generics.is_empty(),
        &options.namespace,
    ) {
        (Context::Free, true, Some(namespace)) => quote! {
            ::core::option::Option::Some(
                ::core::concat!(::core::module_path!(), ":", #name, "|", #namespace, "|"),
            )
        },
        (Context::Free, true, None) => quote! {
            ::core::option::Option::Some(::core::concat!(::core::module_path!(), ":", #name, "|"))
        },
        _ => quote!(::core::option::Option::None),
    };
    let render = quote! {
        |__dogpile_args: &mut ::dogpile::__private::KeyArgs<'_>| { #(#writes)* }
    };
    let site = quote! {
        ::dogpile::__private::Site {
            module_path: #module,
            function: #function,
            namespace: #namespace,
            count: #count,
        }
    };
    let build = match &options.function_key_generator {
        Some(generator) => {
            let generate = quote_spanned!(generator.span()=> (#generator)(__dogpile_function_key));
            quote! {
                ::dogpile::__private::function_key(
                    &mut __dogpile_key,
                    |__dogpile_function_key| #generate,
                    #site,
                    #render,
                )
            }
        }
        None => quote! {
            ::dogpile::__private::call_key(
                &mut __dogpile_key,
                ::dogpile::__private::function_key_generator(__dogpile_region),
                #prefix,
                #site,
                #render,
            )
        },
    };
    quote! {
        let mut __dogpile_key = ::dogpile::__private::CallKey::new();
        {
            #function_binding
            #build;
        }
    }
}

/// `let __dogpile_options = CreateOptions::new()...;`, with the options' expiration time
/// and `should_cache_fn`.
fn create_options(model: &Model) -> TokenStream {
    let value = &model.returns.value;
    let mut setup = TokenStream::new();
    let mut options =
        quote_spanned!(model.shape.output.span()=> ::dogpile::CreateOptions::<#value>::new());
    if let Some(expiration) = &model.options.expiration_time {
        let expiration = expiration_value(model, expiration);
        options.extend(quote!(.expiration_time(#expiration)));
    }
    if let Some(should_cache) = &model.options.should_cache_fn {
        setup = quote_spanned! {should_cache.span()=>
            let __dogpile_should_cache =
                ::dogpile::__private::should_cache_fn::<#value, _>(#should_cache);
        };
        options.extend(quote!(.should_cache_fn(&__dogpile_should_cache)));
    }
    quote! {
        #setup
        let __dogpile_options = #options;
    }
}

/// An expression of type `Expiration`.
fn expiration_value(model: &Model, expiration: &ExpirationTime) -> TokenStream {
    match expiration {
        ExpirationTime::Seconds(seconds, span) => quote_spanned! {*span=>
            ::dogpile::Expiration::After(::core::time::Duration::from_secs(#seconds))
        },
        ExpirationTime::Never(span) => quote_spanned!(*span=> ::dogpile::Expiration::Never),
        ExpirationTime::Expr(expr) => {
            let label = label(model);
            quote_spanned!(expr.span()=> ::dogpile::__private::expiration(#expr, #label))
        }
    }
}

/// The function's path for logs: `module::name`.
fn label(model: &Model) -> TokenStream {
    let name = model.shape.name.to_string();
    quote!(::core::concat!(::core::module_path!(), "::", #name))
}

/// A call of `<fn>_uncached` with the function's receiver and arguments, each argument
/// given by `arg`.
fn call_body(
    model: &Model,
    names: &Names,
    arg: impl Fn(&crate::model::Arg) -> TokenStream,
) -> TokenStream {
    let args: Vec<TokenStream> = model.args.iter().map(arg).collect();
    call_with(model, &names.uncached, quote!(self), &args)
}

/// A call of `<fn>_key` (`<fn>_keys`) with the function's arguments, from a sibling that
/// needs them for nothing else.
fn call_key(model: &Model, names: &Names) -> TokenStream {
    let args: Vec<TokenStream> = model
        .args
        .iter()
        .map(|arg| arg.ident.to_token_stream())
        .collect();
    call_with(model, &names.key, quote!(self), &args)
}

/// A call of `<fn>_uncached` from the multi form's creator, which may run twice: the keys
/// argument replaced by `missing`; references passed again, `&mut` reborrowed, everything
/// else cloned.
fn call_body_again(
    model: &Model,
    names: &Names,
    keys_index: usize,
    missing: &TokenStream,
) -> TokenStream {
    let args: Vec<TokenStream> = model
        .args
        .iter()
        .enumerate()
        .map(|(i, arg)| {
            let ident = &arg.ident;
            if i == keys_index {
                return missing.clone();
            }
            match &arg.ty {
                Type::Reference(r) if r.mutability.is_some() => quote!(&mut *#ident),
                Type::Reference(_) => quote!(#ident),
                ty => quote_spanned!(ty.span()=> ::core::clone::Clone::clone(&#ident)),
            }
        })
        .collect();
    let receiver = match model.shape.context {
        Context::Method(ReceiverKind::Unique) => quote!(&mut *self),
        _ => quote!(self),
    };
    call_with(model, &names.uncached, receiver, &args)
}

/// As [`call_body_again`], for an async function: `let` statements binding the arguments
/// passed again (references copied, everything else cloned), and the call, which names
/// them, for the `async move` block that follows the statements. The model refuses `&mut`
/// for async multi functions.
fn call_body_again_async(
    model: &Model,
    names: &Names,
    keys_index: usize,
    missing: &TokenStream,
) -> (TokenStream, TokenStream) {
    let mut bindings = TokenStream::new();
    let args: Vec<TokenStream> = model
        .args
        .iter()
        .enumerate()
        .map(|(i, arg)| {
            if i == keys_index {
                return missing.clone();
            }
            let ident = &arg.ident;
            let bound = quote::format_ident!("__dogpile_again_{}", i);
            let value = match &arg.ty {
                Type::Reference(_) => quote!(#ident),
                ty => quote_spanned!(ty.span()=> ::core::clone::Clone::clone(&#ident)),
            };
            bindings.extend(quote!(let #bound = #value;));
            quote!(#bound)
        })
        .collect();
    (
        bindings,
        call_with(model, &names.uncached, quote!(self), &args),
    )
}

/// A call of the generated function `target` from another one.
fn call_with(
    model: &Model,
    target: &Ident,
    receiver: TokenStream,
    args: &[TokenStream],
) -> TokenStream {
    let turbofish = if model.generics.is_empty() {
        TokenStream::new()
    } else {
        let generics = model.generics.iter().map(Generic::ident);
        quote!(::<#(#generics),*>)
    };
    match model.shape.context {
        Context::Free => quote!(#target #turbofish(#(#args),*)),
        Context::Associated => quote!(Self::#target #turbofish(#(#args),*)),
        Context::Method(_) => quote!(Self::#target #turbofish(#receiver, #(#args),*)),
    }
}
