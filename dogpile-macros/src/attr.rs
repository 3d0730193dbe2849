//! Parsing the macro's options: `region = "...", namespace = "...", skip(a, b), ...`.
//!
//! Every option is set at most once; every error points at the offending token and says
//! what to write instead.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Error, Expr, ExprCall, ExprLit, ExprPath, ExprUnary, Ident, Lit, LitBool, LitStr, Path, Result,
    Token, UnOp,
};

/// Which of the two macros is being expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `#[cache_on_arguments]`: one value per call.
    Single,
    /// `#[cache_multi_on_arguments]`: one value per element of a slice of keys.
    Multi,
}

impl Flavor {
    /// The attribute as the user writes it, for messages.
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            Flavor::Single => "#[cache_on_arguments]",
            Flavor::Multi => "#[cache_multi_on_arguments]",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Flavor::Single => "#[cache_on_arguments(region = \"REGION\")]",
            Flavor::Multi => "#[cache_multi_on_arguments(region = \"REGION\")]",
        }
    }
}

/// The `expiration_time` option.
#[derive(Clone)]
pub(crate) enum ExpirationTime {
    /// `expiration_time = 60`: whole seconds.
    Seconds(u64, Span),
    /// `expiration_time = -1`: never expires, as in dogpile.
    Never(Span),
    /// `expiration_time = Duration::from_millis(1500)`: anything that converts into an
    /// `Expiration`, evaluated on every call.
    Expr(Box<Expr>),
}

/// The options of one macro use, validated one by one (not yet against the function).
#[derive(Clone)]
pub(crate) struct Options {
    /// `region`: the path of a static that derefs to a `CacheRegion`.
    pub(crate) region: Path,
    /// `namespace`.
    pub(crate) namespace: Option<LitStr>,
    /// `expiration_time`.
    pub(crate) expiration_time: Option<ExpirationTime>,
    /// `should_cache_fn`: `Fn(&T) -> bool`.
    pub(crate) should_cache_fn: Option<Expr>,
    /// `to_str`: called as `to_str(&arg)` for each key argument.
    pub(crate) to_str: Option<Expr>,
    /// `function_key_generator`: `Fn(&FunctionKey) -> String`.
    pub(crate) function_key_generator: Option<Expr>,
    /// `skip(a, b)`: argument names left out of the key.
    pub(crate) skip: Vec<Ident>,
    /// `result = true|false`: cache only the `Ok` values of a `Result`, or the whole value.
    pub(crate) result: Option<LitBool>,
    /// `option = true|false`: cache only the `Some` values of an `Option`, or the whole value.
    pub(crate) option: Option<LitBool>,
    /// `siblings = "name"`: the stem of the generated functions' names.
    pub(crate) siblings: Option<Ident>,
}

const OPTIONS: &str = "`region`, `namespace`, `expiration_time`, `should_cache_fn`, `to_str`, \
                       `function_key_generator`, `skip`, `result`, `option` and `siblings`";

/// An option that may be given once.
struct Slot<T> {
    name: &'static str,
    value: Option<T>,
}

impl<T> Slot<T> {
    const fn new(name: &'static str) -> Self {
        Slot { name, value: None }
    }

    fn set(&mut self, path: &Path, value: T) -> Result<()> {
        if self.value.is_some() {
            return Err(Error::new_spanned(
                path,
                format!("`{}` is given twice; give it once", self.name),
            ));
        }
        self.value = Some(value);
        Ok(())
    }
}

impl Options {
    /// Parses the attribute's arguments.
    pub(crate) fn parse(args: TokenStream, flavor: Flavor) -> Result<Options> {
        if let Some(TokenTree::Literal(literal)) = args.clone().into_iter().next() {
            return Err(Error::new_spanned(
                literal,
                format!("options are written `name = value`: {}", flavor.example()),
            ));
        }
        let mut region = Slot::new("region");
        let mut namespace = Slot::new("namespace");
        let mut expiration_time = Slot::new("expiration_time");
        let mut should_cache_fn = Slot::new("should_cache_fn");
        let mut to_str = Slot::new("to_str");
        let mut function_key_generator = Slot::new("function_key_generator");
        let mut skip = Slot::new("skip");
        let mut result = Slot::new("result");
        let mut option = Slot::new("option");
        let mut siblings = Slot::new("siblings");

        let parser = syn::meta::parser(|meta| {
            let path = meta.path.clone();
            let Some(name) = path.get_ident().map(|ident| ident.to_string()) else {
                return Err(unknown_option(&path, flavor));
            };
            match name.as_str() {
                "region" => region.set(&path, parse_region(&meta)?),
                "namespace" => namespace.set(&path, parse_namespace(&meta)?),
                "expiration_time" => expiration_time.set(&path, parse_expiration(&meta)?),
                "should_cache_fn" => should_cache_fn.set(
                    &path,
                    parse_function(&meta, "should_cache_fn", "fn(&T) -> bool")?,
                ),
                "to_str" => to_str.set(&path, parse_function(&meta, "to_str", "fn(&T) -> String")?),
                "function_key_generator" => function_key_generator.set(
                    &path,
                    parse_function(
                        &meta,
                        "function_key_generator",
                        "fn(&dogpile::key::FunctionKey) -> String",
                    )?,
                ),
                "skip" => skip.set(&path, parse_skip(&meta)?),
                "result" => result.set(&path, parse_bool(&meta, "result", "Ok")?),
                "option" => option.set(&path, parse_bool(&meta, "option", "Some")?),
                "siblings" => siblings.set(&path, parse_siblings(&meta)?),
                _ => Err(unknown_option(&path, flavor)),
            }
        });
        parser.parse2(args)?;

        let Some(region) = region.value else {
            return Err(Error::new(
                Span::call_site(),
                format!(
                    "missing `region`: write {}, naming a static `CacheRegion` \
                     (or a `Lazy`/`LazyLock` of one)",
                    flavor.example()
                ),
            ));
        };
        Ok(Options {
            region,
            namespace: namespace.value,
            expiration_time: expiration_time.value,
            should_cache_fn: should_cache_fn.value,
            to_str: to_str.value,
            function_key_generator: function_key_generator.value,
            skip: skip.value.unwrap_or_default(),
            result: result.value,
            option: option.value,
            siblings: siblings.value,
        })
    }
}

fn unknown_option(path: &Path, flavor: Flavor) -> Error {
    let written = path.to_token_stream().to_string().replace(' ', "");
    Error::new_spanned(
        path,
        format!(
            "unknown option `{written}` of {}; the options are {OPTIONS}",
            flavor.attribute()
        ),
    )
}

/// The value after `name =`, as an expression; an error naming `usage` when there is none.
fn value(meta: &ParseNestedMeta<'_>, usage: &str) -> Result<Expr> {
    if !meta.input.peek(Token![=]) {
        return Err(Error::new_spanned(&meta.path, format!("expected {usage}")));
    }
    meta.value()?.parse()
}

fn parse_region(meta: &ParseNestedMeta<'_>) -> Result<Path> {
    const USAGE: &str = "`region = \"REGION\"`, the path of a static `CacheRegion` \
                         (or of a `Lazy`/`LazyLock` of one)";
    match value(meta, USAGE)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(literal),
            ..
        }) => literal.parse_with(Path::parse_mod_style).map_err(|_| {
            Error::new_spanned(
                &literal,
                format!("`{}` is not a path; write {USAGE}", literal.value()),
            )
        }),
        Expr::Path(path) if path.qself.is_none() => Ok(path.path),
        other => Err(Error::new_spanned(other, format!("expected {USAGE}"))),
    }
}

fn parse_namespace(meta: &ParseNestedMeta<'_>) -> Result<LitStr> {
    const USAGE: &str = "a string: `namespace = \"users\"`";
    match value(meta, USAGE)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(literal),
            ..
        }) => Ok(literal),
        other => Err(Error::new_spanned(
            other,
            format!("`namespace` takes {USAGE}"),
        )),
    }
}

fn parse_expiration(meta: &ParseNestedMeta<'_>) -> Result<ExpirationTime> {
    const USAGE: &str = "whole seconds or a `Duration` expression: `expiration_time = 60`, \
                         `expiration_time = Duration::from_millis(1500)`, or \
                         `expiration_time = -1` for never";
    match value(meta, USAGE)? {
        Expr::Lit(ExprLit {
            lit: Lit::Int(seconds),
            ..
        }) => match seconds.base10_parse::<u64>()? {
            0 => Err(zero_expiration(&seconds)),
            whole => Ok(ExpirationTime::Seconds(whole, seconds.span())),
        },
        Expr::Unary(
            unary @ ExprUnary {
                op: UnOp::Neg(_), ..
            },
        ) if matches!(&*unary.expr, Expr::Lit(ExprLit { lit: Lit::Int(one), .. }) if one.base10_digits() == "1") => {
            Ok(ExpirationTime::Never(unary.span()))
        }
        other @ (Expr::Lit(_)
        | Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        })) => Err(Error::new_spanned(
            other,
            format!("`expiration_time` takes {USAGE}"),
        )),
        other if is_zero_duration(&other) => Err(zero_expiration(&other)),
        other => Ok(ExpirationTime::Expr(Box::new(other))),
    }
}

fn zero_expiration(tokens: impl ToTokens) -> Error {
    Error::new_spanned(
        tokens,
        "an expiration time of zero makes every value expire as soon as it is stored, so \
         the body would run on every call: give a positive time (`expiration_time = 60`), \
         `-1` for never, or leave the function uncached",
    )
}

/// True for the zero `Duration`s written as literals: `Duration::ZERO`,
/// `Duration::from_secs(0)` (and `from_millis`, `from_micros`, `from_nanos`,
/// `from_secs_f32`, `from_secs_f64`), `Duration::new(0, 0)`.
fn is_zero_duration(expr: &Expr) -> bool {
    fn zero(expr: &Expr) -> bool {
        match expr {
            Expr::Lit(ExprLit {
                lit: Lit::Int(int), ..
            }) => int.base10_parse::<u128>().is_ok_and(|n| n == 0),
            Expr::Lit(ExprLit {
                lit: Lit::Float(float),
                ..
            }) => float.base10_parse::<f64>().is_ok_and(|f| f == 0.0),
            _ => false,
        }
    }
    let duration_item = |path: &Path| {
        let mut segments = path.segments.iter().rev();
        let item = segments.next().map(|s| s.ident.to_string());
        let ty = segments.next().map(|s| s.ident.to_string());
        (ty.as_deref() == Some("Duration"))
            .then_some(item)
            .flatten()
    };
    match expr {
        Expr::Path(ExprPath { path, .. }) => duration_item(path).as_deref() == Some("ZERO"),
        Expr::Call(ExprCall { func, args, .. }) => {
            let Expr::Path(ExprPath { path, .. }) = &**func else {
                return false;
            };
            match duration_item(path).as_deref() {
                Some(
                    "from_secs" | "from_millis" | "from_micros" | "from_nanos" | "from_secs_f32"
                    | "from_secs_f64",
                ) => args.len() == 1 && args.iter().all(zero),
                Some("new") => args.len() == 2 && args.iter().all(zero),
                _ => false,
            }
        }
        Expr::Paren(paren) => is_zero_duration(&paren.expr),
        _ => false,
    }
}

/// `name = true` or `name = false`.
fn parse_bool(meta: &ParseNestedMeta<'_>, name: &str, part: &str) -> Result<LitBool> {
    let usage = format!(
        "`{name} = true` (cache only the `{part}` values) or `{name} = false` (cache the \
         whole value)"
    );
    match value(meta, &usage)? {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(literal),
            ..
        }) => Ok(literal),
        other => Err(Error::new_spanned(other, format!("`{name}` takes {usage}"))),
    }
}

/// `siblings = "name"`: a name that can stand in `invalidate_name`, `name_key`, ...
fn parse_siblings(meta: &ParseNestedMeta<'_>) -> Result<Ident> {
    const USAGE: &str = "a name for the generated functions: `siblings = \"user\"` names \
                         them `user_key`, `invalidate_user`, `refresh_user`, `set_user`, \
                         `get_user` and `user_uncached`";
    match value(meta, USAGE)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(literal),
            ..
        }) => {
            let name = literal.value();
            let valid = syn::parse_str::<Ident>(&name).is_ok() && !name.starts_with("r#");
            if valid {
                Ok(Ident::new(&name, literal.span()))
            } else {
                Err(Error::new_spanned(
                    &literal,
                    format!("`{name}` is not an identifier; `siblings` takes {USAGE}"),
                ))
            }
        }
        Expr::Path(path) if path.path.get_ident().is_some() => {
            let ident = path.path.get_ident().cloned();
            ident.ok_or_else(|| Error::new_spanned(&path, USAGE))
        }
        other => Err(Error::new_spanned(
            other,
            format!("`siblings` takes {USAGE}"),
        )),
    }
}

/// A function-valued option: a path, a closure or any other expression, or a string holding
/// a path (`to_str = "my_fn"`), as dogpile users write it.
fn parse_function(meta: &ParseNestedMeta<'_>, name: &str, signature: &str) -> Result<Expr> {
    let usage = format!("`{name} = my_fn`, where `my_fn` is a `{signature}`");
    match value(meta, &usage)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(literal),
            ..
        }) => literal.parse::<Expr>().map_err(|_| {
            Error::new_spanned(
                &literal,
                format!("`{}` is not a path; write {usage}", literal.value()),
            )
        }),
        other @ Expr::Lit(_) => Err(Error::new_spanned(
            other,
            format!("`{name}` takes a function: {usage}"),
        )),
        other => Ok(other),
    }
}

fn parse_skip(meta: &ParseNestedMeta<'_>) -> Result<Vec<Ident>> {
    const USAGE: &str = "`skip(arg, ...)`, naming the arguments to leave out of the key";
    if !meta.input.peek(syn::token::Paren) {
        return Err(Error::new_spanned(&meta.path, format!("expected {USAGE}")));
    }
    let content;
    syn::parenthesized!(content in meta.input);
    let names = Punctuated::<Ident, Token![,]>::parse_terminated_with(&content, |input| {
        if input.peek(Ident::peek_any) {
            Ident::parse_any(input)
        } else {
            Err(input.error(format!("expected {USAGE}")))
        }
    })?;
    let mut skip: Vec<Ident> = Vec::new();
    for name in names {
        if name == "self" {
            return Err(Error::new_spanned(
                name,
                "the receiver is never part of the key; remove `self` from `skip(...)`",
            ));
        }
        if skip.iter().any(|earlier| earlier.unraw() == name.unraw()) {
            return Err(Error::new_spanned(
                &name,
                format!("`{name}` is named twice in `skip(...)`"),
            ));
        }
        skip.push(name);
    }
    Ok(skip)
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn parse(args: TokenStream) -> Result<Options> {
        Options::parse(args, Flavor::Single)
    }

    fn message(args: TokenStream) -> String {
        match parse(args) {
            Ok(_) => panic!("expected an error"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn every_option_parses() {
        let options = parse(quote! {
            region = "crate::regions::DEFAULT",
            namespace = "ns",
            expiration_time = 60,
            should_cache_fn = keep,
            to_str = "render",
            function_key_generator = |key| key.function.to_string(),
            skip(db, r#type),
        })
        .unwrap();
        assert_eq!(
            options.region.to_token_stream().to_string(),
            "crate :: regions :: DEFAULT"
        );
        assert_eq!(options.namespace.unwrap().value(), "ns");
        assert!(matches!(
            options.expiration_time,
            Some(ExpirationTime::Seconds(60, _))
        ));
        assert_eq!(
            options.should_cache_fn.to_token_stream().to_string(),
            "keep"
        );
        assert_eq!(options.to_str.to_token_stream().to_string(), "render");
        assert!(matches!(
            options.function_key_generator,
            Some(Expr::Closure(_))
        ));
        let skip: Vec<String> = options.skip.iter().map(|i| i.unraw().to_string()).collect();
        assert_eq!(skip, ["db", "type"]);
    }

    #[test]
    fn region_may_be_a_bare_path() {
        let options = parse(quote!(region = regions::DEFAULT)).unwrap();
        assert_eq!(
            options.region.to_token_stream().to_string(),
            "regions :: DEFAULT"
        );
    }

    #[test]
    fn expiration_forms() {
        let expiration = |tokens| parse(tokens).unwrap().expiration_time;
        assert!(matches!(
            expiration(quote!(region = "R", expiration_time = -1)),
            Some(ExpirationTime::Never(_))
        ));
        assert!(matches!(
            expiration(quote!(
                region = "R",
                expiration_time = Duration::from_millis(5)
            )),
            Some(ExpirationTime::Expr(_))
        ));
        assert!(matches!(
            expiration(quote!(region = "R", expiration_time = ttl())),
            Some(ExpirationTime::Expr(_))
        ));
        for zero in [
            quote!(0),
            quote!(Duration::ZERO),
            quote!(std::time::Duration::from_secs(0)),
            quote!(Duration::from_millis(0)),
            quote!(Duration::from_secs_f64(0.0)),
            quote!(Duration::new(0, 0)),
        ] {
            let error = message(quote!(region = "R", expiration_time = #zero));
            assert!(error.contains("expiration time of zero"), "{error}");
        }
        assert!(matches!(
            expiration(quote!(region = "R", expiration_time = Duration::new(0, 1))),
            Some(ExpirationTime::Expr(_))
        ));
        for wrong in [quote!(-2), quote!(1.5), quote!("60"), quote!(true)] {
            let error = message(quote!(region = "R", expiration_time = #wrong));
            assert!(error.contains("whole seconds or a `Duration`"), "{error}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(message(quote!(namespace = "x")).starts_with("missing `region`"));
        assert!(message(quote!(region = "R", region = "S")).contains("`region` is given twice"));
        assert!(message(quote!(region = "R", ttl = 5)).contains("unknown option `ttl`"));
        assert!(message(quote!(region = "R", a::b = 5)).contains("unknown option `a::b`"));
        assert!(message(quote!(region = "R", skip = "a")).contains("expected `skip(arg, ...)`"));
        assert!(message(quote!(region = "R", skip(a, a))).contains("`a` is named twice"));
        assert!(message(quote!(region = "R", to_str = 5)).contains("`to_str` takes a function"));
        assert!(message(quote!("R")).contains("options are written `name = value`"));
        assert!(
            message(quote!(region = "R", result = 1)).contains("`result` takes `result = true`")
        );
        assert!(
            message(quote!(region = "R", siblings = "a b")).contains("`a b` is not an identifier")
        );
        let options = parse(quote!(
            region = "R",
            result = false,
            option = true,
            siblings = "user"
        ))
        .unwrap();
        assert!(!options.result.unwrap().value);
        assert!(options.option.unwrap().value);
        assert_eq!(options.siblings.unwrap(), "user");
    }
}
