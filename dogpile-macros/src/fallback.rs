//! What to emit when the macro cannot expand: the error, the function as written, and its
//! siblings with stub bodies, so that calls elsewhere still resolve and the user sees one
//! error (the macro's) instead of one per call site.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Error, Signature};

use crate::attr::Flavor;
use crate::model::Shape;
use crate::siblings::{returning, signature, Names, Receiver};

/// The error, the function unchanged, and stub siblings.
pub(crate) fn expand(shape: &Shape, error: Error) -> TokenStream {
    let names = Names::of(shape);
    let item = &shape.item;
    let sig = &item.sig;
    let vis = &item.vis;
    let every = &shape.attrs.every;
    let stub = |sig: Signature| {
        quote! {
            #(#every)*
            #[allow(dead_code, unused_variables, unused_mut, clippy::all)]
            #vis #sig {
                ::core::unreachable!()
            }
        }
    };

    let keys_type: syn::Type = match shape.flavor {
        Flavor::Single => syn::parse_quote!(::std::string::String),
        Flavor::Multi => syn::parse_quote!(::std::vec::Vec<::std::string::String>),
    };
    let mut stubs = vec![
        stub(signature(
            sig,
            names.key.clone(),
            Receiver::Shared,
            None,
            returning(keys_type),
        )),
        stub(signature(
            sig,
            names.invalidate.clone(),
            Receiver::Shared,
            None,
            returning(syn::parse_quote!(::dogpile::Result<()>)),
        )),
    ];
    // Without a cacheable return type, the value's type is unknown: the functions that
    // name it are left out.
    if let Some(returns) = &shape.returns {
        let value = &returns.value;
        let output = &shape.output;
        let value_arg = &names.value;
        let (set_arg, got): (syn::FnArg, syn::Type) = match shape.flavor {
            Flavor::Single => (
                syn::parse_quote!(#value_arg: &#value),
                syn::parse_quote!(::core::option::Option<#value>),
            ),
            Flavor::Multi => (
                syn::parse_quote!(#value_arg: &[#value]),
                syn::parse_quote!(::std::vec::Vec<::core::option::Option<#value>>),
            ),
        };
        stubs.push(stub(signature(
            sig,
            names.refresh.clone(),
            Receiver::Keep,
            None,
            returning(syn::parse_quote!(::dogpile::Result<#output>)),
        )));
        stubs.push(stub(signature(
            sig,
            names.set.clone(),
            Receiver::Shared,
            Some(set_arg),
            returning(syn::parse_quote!(::dogpile::Result<()>)),
        )));
        stubs.push(stub(signature(
            sig,
            names.get.clone(),
            Receiver::Shared,
            None,
            returning(syn::parse_quote!(::dogpile::Result<#got>)),
        )));
        stubs.push(stub(signature(
            sig,
            names.uncached.clone(),
            Receiver::Keep,
            None,
            sig.output.clone(),
        )));
    }

    let error = error.into_compile_error();
    quote! {
        #error
        #item
        #(#stubs)*
    }
}
