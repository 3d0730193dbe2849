//! The generated functions: their names and signatures, shared by the expansion and the
//! fallback (which declares the same functions with stub bodies), and the siblings
//! themselves, emitted once for the single and the multi forms ([`Siblings`]): each form
//! says how it binds its keys and what each sibling does.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::punctuated::Punctuated;
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Signature, Type};

use crate::attr::Flavor;
use crate::model::Shape;

/// The names of the generated functions, built from the shape's stem: the function's name,
/// or `siblings = "..."` (written `<fn>` below).
pub(crate) struct Names {
    /// `<fn>_key` (`<fn>_keys` for the multi form).
    pub(crate) key: Ident,
    /// `invalidate_<fn>`.
    pub(crate) invalidate: Ident,
    /// `refresh_<fn>`.
    pub(crate) refresh: Ident,
    /// `set_<fn>`.
    pub(crate) set: Ident,
    /// `get_<fn>`.
    pub(crate) get: Ident,
    /// `<fn>_uncached`.
    pub(crate) uncached: Ident,
    /// The name of `set_<fn>`'s value argument: `value` (`values`), unless the function
    /// has an argument of that name.
    pub(crate) value: Ident,
}

impl Names {
    pub(crate) fn of(shape: &Shape) -> Names {
        let name = &shape.stem;
        let span = shape.stem.span();
        let (key, value) = match shape.flavor {
            Flavor::Single => ("key", "value"),
            Flavor::Multi => ("keys", "values"),
        };
        let taken = shape.item.sig.inputs.iter().any(|input| match input {
            FnArg::Typed(typed) => matches!(&*typed.pat, Pat::Ident(p) if p.ident == value),
            FnArg::Receiver(_) => false,
        });
        let value = if taken {
            format_ident!("__dogpile_{}", value)
        } else {
            Ident::new(value, Span::call_site())
        };
        Names {
            key: format_ident!("{}_{}", name, key, span = span),
            invalidate: format_ident!("invalidate_{}", name, span = span),
            refresh: format_ident!("refresh_{}", name, span = span),
            set: format_ident!("set_{}", name, span = span),
            get: format_ident!("get_{}", name, span = span),
            uncached: format_ident!("{}_uncached", name, span = span),
            value,
        }
    }
}

/// What a generated function does with the receiver of a method.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    /// The method's own receiver (`mut` dropped).
    Keep,
    /// `&self`: functions that only build keys need no more.
    Shared,
}

/// The signature of a generated function: `sig` renamed to `ident`, with the receiver as
/// chosen, `leading` before the arguments, arguments bound to plain names (so that an
/// unused `mut` does not warn), and returning `output`. `async` is kept when `asynchronous`
/// (a sibling that reaches the cache, of an `async fn`); other qualifiers (`const`,
/// `unsafe`, ...) are dropped: they only appear on functions the model refused, whose
/// stubs are plain.
pub(crate) fn signature(
    sig: &Signature,
    ident: Ident,
    receiver: Receiver,
    leading: Option<FnArg>,
    output: ReturnType,
    asynchronous: bool,
) -> Signature {
    let mut inputs = Punctuated::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(own) => {
                let replaced = match receiver {
                    Receiver::Keep => {
                        let mut own = own.clone();
                        if own.reference.is_none() {
                            own.mutability = None;
                        }
                        FnArg::Receiver(own)
                    }
                    Receiver::Shared => syn::parse_quote!(&self),
                };
                inputs.push(replaced);
            }
            FnArg::Typed(typed) => {
                let mut typed = typed.clone();
                if let Pat::Ident(pat) = &mut *typed.pat {
                    pat.by_ref = None;
                    pat.mutability = None;
                }
                inputs.push(FnArg::Typed(typed));
            }
        }
    }
    if let Some(leading) = leading {
        let at = usize::from(sig.receiver().is_some());
        inputs.insert(at, leading);
    }
    Signature {
        constness: None,
        asyncness: if asynchronous { sig.asyncness } else { None },
        unsafety: None,
        abi: None,
        ident,
        inputs,
        variadic: None,
        output,
        ..sig.clone()
    }
}

/// `-> ty`.
fn returning(ty: Type) -> ReturnType {
    ReturnType::Type(Default::default(), Box::new(ty))
}

/// The signatures of the siblings that build keys: `<fn>_key` (`<fn>_keys`) and
/// `invalidate_<fn>`.
pub(crate) struct KeySignatures {
    pub(crate) key: Signature,
    pub(crate) invalidate: Signature,
}

/// The signatures of the siblings that name the cached value's type.
pub(crate) struct ValueSignatures {
    pub(crate) refresh: Signature,
    pub(crate) set: Signature,
    pub(crate) get: Signature,
}

impl KeySignatures {
    pub(crate) fn of(shape: &Shape, names: &Names) -> KeySignatures {
        let sig = &shape.item.sig;
        let keys_type: Type = match shape.flavor {
            Flavor::Single => syn::parse_quote!(::std::string::String),
            Flavor::Multi => syn::parse_quote!(::std::vec::Vec<::std::string::String>),
        };
        KeySignatures {
            key: signature(
                sig,
                names.key.clone(),
                Receiver::Shared,
                None,
                returning(keys_type),
                false,
            ),
            invalidate: signature(
                sig,
                names.invalidate.clone(),
                Receiver::Shared,
                None,
                returning(syn::parse_quote!(::dogpile::Result<()>)),
                true,
            ),
        }
    }
}

impl ValueSignatures {
    /// For a function whose cached value is `value`.
    pub(crate) fn of(shape: &Shape, names: &Names, value: &Type) -> ValueSignatures {
        let sig = &shape.item.sig;
        let output = &shape.output;
        let value_arg = &names.value;
        // Spanned at the return type, so that a value type that cannot be what the
        // options say is reported there, once.
        let span = syn::spanned::Spanned::span(output);
        let (set_arg, got): (FnArg, Type) = match shape.flavor {
            Flavor::Single => (
                syn::parse_quote_spanned!(span=> #value_arg: &#value),
                syn::parse_quote_spanned!(span=> ::core::option::Option<#value>),
            ),
            Flavor::Multi => (
                syn::parse_quote_spanned!(span=> #value_arg: &[#value]),
                syn::parse_quote_spanned!(span=> ::std::vec::Vec<::core::option::Option<#value>>),
            ),
        };
        let result =
            |ty: Type| -> Type { syn::parse_quote_spanned!(span=> ::dogpile::Result<#ty>) };
        ValueSignatures {
            refresh: signature(
                sig,
                names.refresh.clone(),
                Receiver::Keep,
                None,
                returning(result(output.clone())),
                true,
            ),
            set: signature(
                sig,
                names.set.clone(),
                Receiver::Shared,
                Some(set_arg),
                returning(result(syn::parse_quote!(()))),
                true,
            ),
            get: signature(
                sig,
                names.get.clone(),
                Receiver::Shared,
                None,
                returning(result(got)),
                true,
            ),
        }
    }
}

/// How the siblings bind the key (the single form) or the keys (the multi form).
pub(crate) struct Keys {
    /// Statements building them from the arguments: `__dogpile_key`, a `CallKey`, or
    /// `__dogpile_keys`, a `Vec<String>`. The cached function starts so too.
    pub(crate) build: TokenStream,
    /// A statement binding them, as a `String` or a `Vec<String>`, by a call of
    /// `<fn>_key` (`<fn>_keys`): for the siblings that need the arguments for nothing else.
    pub(crate) call: TokenStream,
}

/// What one sibling does: its doc, and its body once the region and its key(s) are bound.
pub(crate) struct Operation {
    /// The sibling's doc comment.
    pub(crate) doc: String,
    /// Its last statements and value.
    pub(crate) body: TokenStream,
}

/// What each sibling does, by the form of the macro.
pub(crate) struct Operations {
    /// `<fn>_key` (`<fn>_keys`): the key(s) built, as strings.
    pub(crate) key: Operation,
    /// `invalidate_<fn>`.
    pub(crate) invalidate: Operation,
    /// `refresh_<fn>`.
    pub(crate) refresh: Operation,
    /// `set_<fn>`.
    pub(crate) set: Operation,
    /// `get_<fn>`.
    pub(crate) get: Operation,
}

/// The siblings of a cached function: what the single and the multi forms share.
pub(crate) struct Siblings<'a> {
    /// The function as written.
    pub(crate) shape: &'a Shape,
    /// The siblings' names.
    pub(crate) names: &'a Names,
    /// The type of the cached value.
    pub(crate) value: &'a Type,
    /// `let __dogpile_region = ..;`.
    pub(crate) region: &'a TokenStream,
    /// How the key(s) are bound.
    pub(crate) keys: &'a Keys,
}

impl Siblings<'_> {
    /// The siblings doing `operations`, then `<fn>_uncached`.
    pub(crate) fn emit(&self, operations: Operations) -> TokenStream {
        let keys = KeySignatures::of(self.shape, self.names);
        let values = ValueSignatures::of(self.shape, self.names, self.value);
        let from_arguments = &self.keys.build;
        let from_key = &self.keys.call;
        // `refresh_<fn>` passes every argument to the body: no argument goes unused.
        let functions = [
            self.function(keys.key, operations.key, from_arguments, true),
            self.function(keys.invalidate, operations.invalidate, from_key, true),
            self.function(values.refresh, operations.refresh, from_arguments, false),
            self.function(values.set, operations.set, from_key, true),
            self.function(values.get, operations.get, from_key, true),
        ];
        let uncached = self.uncached();
        quote! {
            #(#functions)*
            #uncached
        }
    }

    /// One sibling: `sig`, binding the region and the key(s) by `keys`, then doing
    /// `operation`; `unused` when some arguments may go unused.
    fn function(
        &self,
        sig: Signature,
        operation: Operation,
        keys: &TokenStream,
        unused: bool,
    ) -> TokenStream {
        let Operation { doc, body } = operation;
        let every = &self.shape.attrs.every;
        let vis = &self.shape.item.vis;
        let region = self.region;
        let unused = unused.then(|| quote!(unused_variables,));
        quote! {
            #[doc = #doc]
            #(#every)*
            #[allow(dead_code, #unused clippy::ptr_arg, clippy::needless_pass_by_value, clippy::used_underscore_binding)]
            #vis #sig {
                #region
                #keys
                #body
            }
        }
    }

    /// `<fn>_uncached`: the function as written, renamed.
    fn uncached(&self) -> TokenStream {
        let shape = self.shape;
        let mut item: ItemFn = shape.item.clone();
        item.sig.ident = self.names.uncached.clone();
        let doc = format!(
            "`{}` without the cache: its own body, run on every call.",
            shape.name
        );
        item.attrs = Vec::new();
        let every = &shape.attrs.every;
        let body = &shape.attrs.body;
        quote! {
            #[doc = #doc]
            #(#every)*
            #[allow(dead_code)]
            #(#body)*
            #item
        }
    }
}
