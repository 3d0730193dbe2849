//! An application's own error type, as `try_` callers use: made from dogpile's errors.

use std::fmt;

/// An application's error type.
#[derive(Debug)]
pub struct AppError(pub String);

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<dogpile::Error> for AppError {
    fn from(error: dogpile::Error) -> Self {
        AppError(format!("cache: {error}"))
    }
}
