//! The arguments a backend is built from: [`Arguments`], string values parsed on request,
//! shown with their secrets redacted.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// What stands for a secret in Debug output, errors and logs.
const REDACTED: &str = "<redacted>";

pub(crate) fn redacted(arguments: &BTreeMap<String, String>) -> BTreeMap<&str, Cow<'_, str>> {
    arguments
        .iter()
        .map(|(k, v)| (k.as_str(), redact(k, v)))
        .collect()
}

/// `value` of argument `name` as it may be shown: a password argument entirely replaced,
/// and the password of every URL in it (`redis://user:secret@host`) replaced.
fn redact<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    if name.contains("password") {
        return Cow::Borrowed(REDACTED);
    }
    let mut out = String::new();
    let mut rest = value;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        let authority_len = rest[authority_start..]
            .find(|c: char| matches!(c, '/' | '?' | '#' | ',') || c.is_whitespace())
            .unwrap_or(rest.len() - authority_start);
        let authority = &rest[authority_start..authority_start + authority_len];
        let password = authority.rfind('@').and_then(|at| {
            let colon = authority[..at].find(':')?;
            Some((authority_start + colon + 1, authority_start + at))
        });
        let consumed = authority_start + authority_len;
        match password {
            Some((start, end)) => {
                out.push_str(&rest[..start]);
                out.push_str(REDACTED);
                out.push_str(&rest[end..consumed]);
            }
            None => out.push_str(&rest[..consumed]),
        }
        rest = &rest[consumed..];
    }
    if out.is_empty() {
        return Cow::Borrowed(value);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The arguments a backend is built from: string values, parsed on request, each error
/// naming the backend and the argument.
#[derive(Clone, PartialEq, Eq)]
pub struct Arguments {
    backend: String,
    values: BTreeMap<String, String>,
}

impl Arguments {
    /// Arguments for `backend` (the name used in error messages).
    pub fn new<I, K, V>(backend: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Arguments {
            backend: backend.into(),
            values: values
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The backend these arguments are for.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The raw string value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `name` as it may appear in error messages, Debug output and logs:
    /// a password argument (any name containing `password`) is `<redacted>`, and so is the
    /// password of every URL in the value (`redis://user:<redacted>@host`).
    pub fn shown(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(|value| redact(name, value))
    }

    /// The raw string value of `name`, or an error saying it is required.
    pub fn require(&self, name: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| self.invalid(name, "this argument is required"))
    }

    /// `name` parsed as `T`.
    pub fn parse<T>(&self, name: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.get(name)
            .map(|raw| {
                raw.trim().parse().map_err(|e| {
                    self.invalid(
                        name,
                        format!("`{raw}` is not a valid {}: {e}", std::any::type_name::<T>()),
                    )
                })
            })
            .transpose()
    }

    /// `name` as a boolean: `true`/`false`, `yes`/`no`, `on`/`off` or `1`/`0`.
    pub fn bool(&self, name: &str) -> Result<Option<bool>> {
        self.get(name)
            .map(|raw| match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => Err(self.invalid(name, format!("`{raw}` is not a boolean (true or false)"))),
            })
            .transpose()
    }

    /// `name` as a duration in seconds (fractions allowed).
    pub fn seconds(&self, name: &str) -> Result<Option<Duration>> {
        self.get(name)
            .map(|raw| {
                raw.trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| {
                        self.invalid(
                            name,
                            format!("`{raw}` is not a non-negative number of seconds"),
                        )
                    })
            })
            .transpose()
    }

    /// `name` as a comma separated list (`"127.0.0.1, 10.0.0.1"`), items trimmed.
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }

    /// Fails on the first argument not in `known`, listing what is accepted and suggesting
    /// the accepted name closest to a misspelt one (`max_entries` for `max_entires`).
    ///
    /// ```
    /// use dogpile_core::backend::Arguments;
    ///
    /// let args = Arguments::new("mine", [("max_entires", "10")]);
    /// let err = args.check_known(&["max_entries", "url"]).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid argument `max_entires` for backend `mine`: unknown argument \
    ///      (did you mean `max_entries`?); accepted: max_entries, url"
    /// );
    /// ```
    pub fn check_known(&self, known: &[&str]) -> Result<()> {
        match self.values.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(unknown) => {
                let suggestion =
                    crate::suggest::closest(unknown, known.iter().copied()).map(str::to_owned);
                Err(self.invalid(
                    unknown,
                    format!(
                        "unknown argument{}; accepted: {}",
                        crate::suggest::did_you_mean(&suggestion),
                        known.join(", ")
                    ),
                ))
            }
        }
    }

    /// An [`Error::InvalidArgument`] for `name` of this backend.
    pub fn invalid(&self, name: &str, reason: impl Into<String>) -> Error {
        Error::invalid_argument(&self.backend, name, reason)
    }
}

impl fmt::Debug for Arguments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arguments")
            .field("backend", &self.backend)
            .field("values", &redacted(&self.values))
            .finish()
    }
}
