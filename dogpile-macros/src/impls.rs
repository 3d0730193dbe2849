//! The macros on an impl block: `#[cache_on_arguments] impl Trait for Type { .. }`.
//!
//! A method of a trait impl cannot have its siblings next to it: a trait impl holds only the
//! trait's members. On the impl block, the macro sees the whole impl: each method in it
//! that carries `#[cache_on_arguments(..)]` or `#[cache_multi_on_arguments(..)]` is cached
//! in place, and its siblings go to an inherent impl of the same type, next to the block.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{Attribute, Error, ImplItem, ItemFn, ItemImpl, Meta};

use crate::attr::Flavor;
use crate::pipeline;

/// The impl with its marked methods cached, and an inherent impl holding their siblings.
pub(crate) fn expand(flavor: Flavor, args: TokenStream, mut block: ItemImpl) -> TokenStream {
    let mut errors = TokenStream::new();
    if !args.is_empty() {
        errors.extend(
            Error::new_spanned(
                &args,
                format!(
                    "on an impl block, {} takes no options: give them on each method to \
                     cache, `#[cache_on_arguments(region = \"REGION\")] fn load(..)`",
                    flavor.attribute()
                ),
            )
            .into_compile_error(),
        );
    }
    let mut siblings = Vec::new();
    for item in &mut block.items {
        let ImplItem::Fn(method) = item else { continue };
        let Some((index, flavor)) = method
            .attrs
            .iter()
            .enumerate()
            .find_map(|(i, attr)| flavor_of(attr).map(|flavor| (i, flavor)))
        else {
            continue;
        };
        let attr = method.attrs.remove(index);
        let args = match attr.meta {
            Meta::List(list) => list.tokens,
            _ => TokenStream::new(),
        };
        let function = ItemFn {
            attrs: method.attrs.clone(),
            vis: method.vis.clone(),
            sig: method.sig.clone(),
            block: Box::new(method.block.clone()),
        };
        let expansion = pipeline::expand_function(flavor, args, function);
        *item = ImplItem::Verbatim(expansion.function);
        siblings.push(expansion.siblings);
    }
    if siblings.is_empty() {
        errors.extend(
            Error::new(
                Span::call_site(),
                format!(
                    "{} on an impl block caches the methods in it that carry \
                     `#[cache_on_arguments(region = \"REGION\")]` (or \
                     `#[cache_multi_on_arguments(..)]`), and none does",
                    flavor.attribute()
                ),
            )
            .into_compile_error(),
        );
    }
    let self_ty = &block.self_ty;
    let (impl_generics, _, where_clause) = block.generics.split_for_impl();
    quote! {
        #errors
        #block
        impl #impl_generics #self_ty #where_clause {
            #(#siblings)*
        }
    }
}

/// Which macro `attr` is, if it is one of ours.
fn flavor_of(attr: &Attribute) -> Option<Flavor> {
    let last = attr.path().segments.last()?;
    if last.ident == "cache_on_arguments" {
        Some(Flavor::Single)
    } else if last.ident == "cache_multi_on_arguments" {
        Some(Flavor::Multi)
    } else {
        None
    }
}
