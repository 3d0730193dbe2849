//! A region's name: given when it is built, or taken from the prefix of its flat
//! configuration when it has none.

use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

/// What an unnamed region is called in logs, errors and metrics.
pub(crate) const UNNAMED: &str = "<unnamed>";

/// A region's name: set at most once, either when the region is built or, for a region
/// built without one, when it is configured from a prefixed flat configuration.
#[derive(Default)]
pub(crate) struct RegionName(OnceLock<String>);

impl RegionName {
    /// A name given when the region is built.
    pub(crate) fn given(name: String) -> Self {
        RegionName(OnceLock::from(name))
    }

    /// Names an unnamed region; true when it was unnamed.
    pub(crate) fn name_if_unnamed(&self, name: &str) -> bool {
        self.0.set(name.to_owned()).is_ok()
    }

    /// Whether the region has a name (given, or taken from its configuration).
    pub(crate) fn is_named(&self) -> bool {
        self.0.get().is_some()
    }

    /// The name, or `<unnamed>`.
    #[inline]
    pub(crate) fn as_str(&self) -> &str {
        self.0.get().map_or(UNNAMED, String::as_str)
    }
}

impl Deref for RegionName {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
