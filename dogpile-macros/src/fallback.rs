//! What to emit when the macro cannot expand: the error, the function as written, and its
//! siblings with stub bodies, so that calls elsewhere still resolve and the user sees one
//! error (the macro's) instead of one per call site.

use quote::quote;
use syn::{Error, Signature};

use crate::expand::Expansion;
use crate::model::Shape;
use crate::siblings::{signature, KeySignatures, Names, Receiver, ValueSignatures};

/// The error and the function unchanged, and stub siblings.
pub(crate) fn expand(shape: &Shape, error: Error) -> Expansion {
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

    let keys = KeySignatures::of(shape, &names);
    let mut stubs = vec![stub(keys.key), stub(keys.invalidate)];
    // Without a cacheable return type, the value's type is unknown: the functions that
    // name it are left out.
    if let Some(returns) = &shape.returns {
        let values = ValueSignatures::of(shape, &names, &returns.value);
        stubs.push(stub(values.refresh));
        stubs.push(stub(values.set));
        stubs.push(stub(values.get));
        stubs.push(stub(signature(
            sig,
            names.uncached.clone(),
            Receiver::Keep,
            None,
            sig.output.clone(),
            true,
        )));
    }

    let error = error.into_compile_error();
    Expansion {
        function: quote! {
            #error
            #item
        },
        siblings: quote!(#(#stubs)*),
    }
}
