//! The one error type of dogpile.

use std::time::Duration;

/// The error type of every fallible dogpile operation.
///
/// Each message names what failed: the region, the key, the backend (with its server address
/// where it has one) or the argument.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `configure` was called on a region that already has a backend.
    #[error(
        "region `{region}` is already configured with backend `{backend}`; \
         call replace_existing_backend(true) on the RegionConfig to replace it"
    )]
    RegionAlreadyConfigured {
        /// The region's name.
        region: String,
        /// The backend the region already has.
        backend: String,
    },

    /// The region was used before `configure` was called.
    #[error("region `{region}` is not configured: call configure() on it before using it")]
    RegionNotConfigured {
        /// The region's name.
        region: String,
    },

    /// No backend is registered under this name.
    #[error(
        "no cache backend named `{name}`{}; known backends: {known}",
        crate::suggest::did_you_mean(.suggestion)
    )]
    PluginNotFound {
        /// The name that was asked for.
        name: String,
        /// The names that are registered, comma separated.
        known: String,
        /// The registered name closest to `name`, when one is close enough to be a typo
        /// (`redis` for `reddis`).
        suggestion: Option<String>,
    },

    /// A backend argument, or an argument of a call, is missing, unknown or malformed
    /// (dogpile's `ValidationError`).
    #[error("invalid argument `{argument}` for backend `{backend}`: {reason}")]
    InvalidArgument {
        /// The backend being configured (or ``region `NAME` `` for a call's argument).
        backend: String,
        /// The argument's name.
        argument: String,
        /// What is wrong and what is accepted.
        reason: String,
    },

    /// A region option of a flat configuration ([`RegionConfig::from_config`]) is missing,
    /// unknown or malformed: `{prefix}backend`, `{prefix}expiration_time` or
    /// `{prefix}arguments.NAME`.
    ///
    /// [`RegionConfig::from_config`]: crate::RegionConfig::from_config
    #[error("invalid region option `{option}`: {reason}")]
    InvalidRegionOption {
        /// The option's key, prefix included (`cache.local.expiration_time`).
        option: String,
        /// What is wrong and what is accepted.
        reason: String,
    },

    /// A value could not be serialized for storage.
    #[error("cannot serialize the value for key `{key}`: {reason}")]
    Serialization {
        /// The cache key.
        key: String,
        /// The serializer's message.
        reason: String,
    },

    /// The backend failed (server down, I/O error, protocol error).
    #[error("cache backend {backend} failed: {source}")]
    Backend {
        /// The backend, with its server address or path where it has one.
        backend: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The call's time budget ran out while it waited for the dogpile lock.
    #[error(
        "timed out after {waited:?} waiting for the dogpile lock on key `{key}` of region \
         `{region}` (the call's time_budget, or the backend's lock_blocking_timeout){}",
        if *in_runtime {
            "; this blocking call ran inside a tokio runtime, where its waiting blocks an \
             executor thread: call the _async method there"
        } else {
            ""
        }
    )]
    LockTimeout {
        /// The region's name.
        region: String,
        /// The cache key.
        key: String,
        /// How long the caller waited.
        waited: Duration,
        /// The call was a blocking one made inside a tokio runtime.
        in_runtime: bool,
    },

    /// The creator of this key, run by another caller of this process whose creation this
    /// call waited for, failed: the waiters of a wave share its failure instead of each
    /// calling the origin again. The caller that ran the creator gets its own error.
    #[error(
        "the creator of key `{key}` in region `{region}` failed (run by another caller \
         of this process, whose result this call waited for): {message}"
    )]
    CreatorFailed {
        /// The region's name.
        region: String,
        /// The cache key.
        key: String,
        /// The creator's error, as text.
        message: String,
    },

    /// An async method ran outside a tokio runtime on a backend that async code reaches
    /// through tokio (its sockets, timers or blocking pool).
    #[error(
        "region `{region}`: backend `{backend}` is reached from async code through tokio, and \
         this call runs outside a tokio runtime; call it within one (#[tokio::main], \
         Runtime::block_on, or Handle::enter), or use the region's blocking methods"
    )]
    NoTokioRuntime {
        /// The region's name.
        region: String,
        /// The backend's name.
        backend: String,
    },

    /// Soft invalidation needs an expiration time to compare against.
    #[error(
        "soft invalidation of region `{region}` needs an expiration time; \
         configure one or use invalidate(true)"
    )]
    SoftInvalidationWithoutExpiration {
        /// The region's name.
        region: String,
    },
}

impl Error {
    /// Builds an [`Error::Backend`] from any error, naming the backend (and server).
    pub fn backend(
        backend: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Backend {
            backend: backend.into(),
            source: source.into(),
        }
    }

    /// Builds an [`Error::InvalidArgument`].
    pub fn invalid_argument(
        backend: impl Into<String>,
        argument: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument {
            backend: backend.into(),
            argument: argument.into(),
            reason: reason.into(),
        }
    }
}

/// `Result` with dogpile's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
