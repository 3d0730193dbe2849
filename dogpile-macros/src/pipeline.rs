//! The macro on one function: parse, model, expand (or the fallback). Both the macros on
//! a function and the macros on an impl block ([`crate::impls`], for each marked method)
//! go through it.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;

use crate::attr::{Flavor, Options};
use crate::expand::{self, Expansion};
use crate::fallback;
use crate::model::{Model, Shape, ShapeOptions};

/// The expansion of one function: parse, model, expand (or the fallback).
pub(crate) fn expand_function(flavor: Flavor, args: TokenStream, function: ItemFn) -> Expansion {
    let options = Options::parse(args, flavor);
    let shape = Shape::of(function, flavor, ShapeOptions::of(options.as_ref().ok()));
    match Model::build(&shape, options) {
        Ok(model) if shape.is_async() => needs_tokio(&shape, expand::expand(&model)),
        Ok(model) => expand::expand(&model),
        Err(error) => fallback::expand(&shape, error),
    }
}

/// The expansion of an `async fn`, which calls the region's async API: with dogpile's
/// `tokio` feature as it is; without it, the fallback (the function as written, stub
/// siblings) with one error saying to enable the feature, instead of an error for each
/// async operation that is missing.
fn needs_tokio(shape: &Shape, expansion: Expansion) -> Expansion {
    let asyncness = shape.item.sig.asyncness;
    let error = syn::Error::new_spanned(
        asyncness,
        format!(
            "{} on an `async fn` needs dogpile's `tokio` feature (the async API): enable \
             `tokio`, `dogpile = {{ ..., features = [\"tokio\"] }}` (it is on by default)",
            shape.flavor.attribute()
        ),
    );
    let fallback = fallback::expand(shape, error);
    let (function, siblings) = (expansion.function, expansion.siblings);
    let (without, stubs) = (fallback.function, fallback.siblings);
    Expansion {
        function: quote! {
            ::dogpile::__private::with_tokio! { { #function } { #without } }
        },
        siblings: quote! {
            ::dogpile::__private::with_tokio! { { #siblings } { #stubs } }
        },
    }
}
