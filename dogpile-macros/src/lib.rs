//! The attribute macros of dogpile: `#[cache_on_arguments]` and
//! `#[cache_multi_on_arguments]`.
//!
//! Use them through the `dogpile` crate (`use dogpile::cache_on_arguments;`): the code they
//! generate names `::dogpile::...`. They work on `fn` and on `async fn` (whose siblings that
//! reach the cache are `async` too, on the region's async API: the `tokio` feature).
//!
//! The crate reads as parse (`attr`), model (`model`), expand (`expand`), the three run
//! for each function by `pipeline`, with `fallback` emitting the function and stub
//! siblings next to the error when something is wrong, `siblings` naming and declaring the
//! generated functions for both (and emitting the siblings, once for the single and the
//! multi forms), and `impls` placing the siblings of a trait impl's methods in an inherent
//! impl (through `pipeline` for each method).
#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{Error, ItemFn, ItemImpl};

mod attr;
mod expand;
mod fallback;
mod impls;
mod model;
mod pipeline;
mod siblings;

use attr::Flavor;

#[doc = include_str!("../docs/cache_on_arguments.md")]
#[proc_macro_attribute]
pub fn cache_on_arguments(args: TokenStream, item: TokenStream) -> TokenStream {
    run(Flavor::Single, args.into(), item.into()).into()
}

#[doc = include_str!("../docs/cache_multi_on_arguments.md")]
#[proc_macro_attribute]
pub fn cache_multi_on_arguments(args: TokenStream, item: TokenStream) -> TokenStream {
    run(Flavor::Multi, args.into(), item.into()).into()
}

fn run(flavor: Flavor, args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    if let Ok(function) = syn::parse2::<ItemFn>(item.clone()) {
        return pipeline::expand_function(flavor, args, function).joined();
    }
    if let Ok(block) = syn::parse2::<ItemImpl>(item.clone()) {
        return impls::expand(flavor, args, block);
    }
    let error = Error::new(
        Span::call_site(),
        format!(
            "{} goes on a function with a body: `fn name(args) -> T {{ ... }}` (or on an \
             impl block, to cache the methods in it that carry it)",
            flavor.attribute()
        ),
    )
    .into_compile_error();
    quote!(#error #item)
}
