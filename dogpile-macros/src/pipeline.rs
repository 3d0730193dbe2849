//! The macro on one function: parse, model, expand (or the fallback). Both the macros on
//! a function and the macros on an impl block ([`crate::impls`], for each marked method)
//! go through it.

use proc_macro2::TokenStream;
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
        Ok(model) => expand::expand(&model),
        Err(error) => fallback::expand(&shape, error),
    }
}
