//! Between bytes and [`Entry`] values: what the entry methods' defaults (sync and async)
//! and the proxies' byte views convert with, written once.

use crate::error::{Error, Result};
use crate::value::Entry;

/// Byte values read by a `get_multi`, as entries.
pub(crate) fn from_bytes(values: Vec<Option<Vec<u8>>>) -> Vec<Option<Entry>> {
    values
        .into_iter()
        .map(|value| value.map(Entry::Bytes))
        .collect()
}

/// Entries to store, as the bytes a store of bytes takes; `backend` names it in the error
/// for a typed object.
pub(crate) fn into_bytes<'k>(
    items: Vec<(&'k str, Entry)>,
    backend: &str,
) -> Result<Vec<(&'k str, Vec<u8>)>> {
    items
        .into_iter()
        .map(|(key, entry)| Ok((key, entry.into_bytes(backend)?)))
        .collect()
}

/// Byte values to store, as entries.
pub(crate) fn bytes_items(items: Vec<(&str, Vec<u8>)>) -> Vec<(&str, Entry)> {
    items
        .into_iter()
        .map(|(key, value)| (key, Entry::Bytes(value)))
        .collect()
}

/// The byte form of an entry read from `backend`: a typed object has none.
pub(crate) fn read_bytes(entry: Option<Entry>, backend: &str) -> Result<Option<Vec<u8>>> {
    match entry {
        None => Ok(None),
        Some(Entry::Bytes(bytes)) => Ok(Some(bytes)),
        Some(Entry::Object(_)) => Err(Error::backend(
            backend,
            "holds a typed object under this key, which has no byte form: read it through a \
             region (or the entry methods)",
        )),
    }
}

/// [`read_bytes`] for many entries.
pub(crate) fn read_bytes_multi(
    entries: Vec<Option<Entry>>,
    backend: &str,
) -> Result<Vec<Option<Vec<u8>>>> {
    entries
        .into_iter()
        .map(|entry| read_bytes(entry, backend))
        .collect()
}
