//! The attribute macros of dogpile: `#[cache_on_arguments]` and
//! `#[cache_multi_on_arguments]`.
//!
//! Use them through the `dogpile` crate (`use dogpile::cache_on_arguments;`): the code they
//! generate names `::dogpile::...`.
//!
//! The crate reads as parse (`attr`), model (`model`), expand (`expand`), with `fallback`
//! emitting the function and stub siblings next to the error when something is wrong, and
//! `siblings` naming and declaring the generated functions for both.
#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{Error, ItemFn};

mod attr;
mod expand;
mod fallback;
mod model;
mod siblings;

use attr::{Flavor, Options};
use model::{Model, Shape, ShapeOptions};

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
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = Error::new(
                Span::call_site(),
                format!(
                    "{} goes on a function with a body: `fn name(args) -> T {{ ... }}`",
                    flavor.attribute()
                ),
            )
            .into_compile_error();
            return quote!(#error #item);
        }
    };
    let options = Options::parse(args, flavor);
    let shape = Shape::of(function, flavor, ShapeOptions::of(options.as_ref().ok()));
    match Model::build(&shape, options) {
        Ok(model) => expand::expand(&model),
        Err(error) => fallback::expand(&shape, error),
    }
}
