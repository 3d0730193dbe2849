//! The engine: the dogpile algorithm as a machine that does no I/O ([`machine`]), the one
//! driver that feeds it over either kind of I/O ([`driver`]), and the bridge that runs the
//! driver on a blocking thread ([`block_on`]).

pub(crate) mod block_on;
pub(crate) mod driver;
pub(crate) mod machine;
