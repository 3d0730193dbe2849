//! Cached values, their metadata, and dogpile.cache's byte format.
//!
//! Byte backends store what Python's dogpile.cache writes when its region has a msgpack
//! serializer: the metadata as JSON, a `|`, then the payload as MessagePack (structs as maps
//! with field names):
//!
//! ```text
//! {"ct": 1795608176.021698, "v": 2}|<msgpack>
//! ```

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The format version dogpile.cache writes in `v` (its `value_version`).
pub const VALUE_VERSION: u32 = 2;

/// How deeply a stored payload may nest (arrays, maps and extension values inside each
/// other) to be decoded; a deeper one does not decode, so the region treats it as a miss
/// and logs a warning.
///
/// Decoding recurses once per level. Measured in a debug build on a thread with a 2 MiB
/// stack (Rust's default for spawned threads), a `serde_json::Value` overflowed the stack
/// between 550 and 600 levels, and rmp-serde's own default limit (1024) let that happen.
/// 128 leaves a margin of four for types with larger frames.
pub const MAX_DEPTH: usize = 128;

/// Any type a region can cache: serializable, cloneable, shareable between threads.
///
/// Implemented for every type that meets the bounds; there is nothing to implement. A type
/// that misses one is a compile error naming the bounds, at the call that would cache it:
///
/// ```compile_fail
/// # let region = dogpile_core::CacheRegion::new();
/// struct Report; // neither Serialize, Deserialize nor Clone
/// let report = region.get_or_create("report", || Report); // `Report` cannot be cached
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: a cached value is `Serialize`, `Deserialize` (owned), `Clone`, `Send`, `Sync` and `'static`",
    label = "the value this call would cache",
    note = "derive what it lacks, `#[derive(serde::Serialize, serde::Deserialize, Clone)]`, or cache an owned, thread-safe type that has them"
)]
pub trait Cacheable: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

#[diagnostic::do_not_recommend]
impl<T> Cacheable for T where T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

/// The metadata stored beside every value: creation time and format version.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metadata {
    /// Creation time, Unix seconds.
    pub ct: f64,
    /// Format version; values of another version are treated as absent.
    pub v: u32,
    /// How long the value took to create, seconds (NaN: not recorded): written as `d` by
    /// regions with `early_refresh`, which it scales. Python's dogpile.cache reads only `ct`
    /// and `v`, so it reads such values as its own. An `f32` in what would be padding, so
    /// the metadata stays 16 bytes.
    #[serde(default = "not_recorded", skip_serializing_if = "is_not_recorded")]
    d: f32,
}

fn not_recorded() -> f32 {
    f32::NAN
}

fn is_not_recorded(d: &f32) -> bool {
    d.is_nan()
}

/// Equal when the creation times, the versions and the recorded creation durations (or
/// their absence) are.
impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.ct == other.ct && self.v == other.v && self.creation_time() == other.creation_time()
    }
}

impl Metadata {
    /// Metadata for a value created at `ct` (Unix seconds).
    pub fn new(ct: f64) -> Self {
        Metadata {
            ct,
            v: VALUE_VERSION,
            d: f32::NAN,
        }
    }

    /// How long the value took to create, when it was recorded (regions with
    /// `early_refresh`).
    pub fn creation_time(&self) -> Option<f64> {
        (!self.d.is_nan()).then_some(f64::from(self.d))
    }

    /// Records how long the value took to create, in seconds.
    pub(crate) fn set_creation_time(&mut self, took: Option<f64>) {
        self.d = took.map_or(f32::NAN, |took| took as f32);
    }
}

/// A value together with its metadata (dogpile's `CachedValue`).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedValue<T> {
    /// The cached value.
    pub payload: T,
    /// When it was created, and in which format.
    pub metadata: Metadata,
}

impl<T: Cacheable> CachedValue<T> {
    /// Wraps `payload` created at `ct` (Unix seconds).
    pub fn new(payload: T, ct: f64) -> Self {
        CachedValue {
            payload,
            metadata: Metadata::new(ct),
        }
    }

    /// Encodes as dogpile's byte format: JSON metadata, `|`, MessagePack payload.
    pub fn to_bytes(&self, key: &str) -> Result<Vec<u8>> {
        encode(&self.payload, &self.metadata, key)
    }

    /// Decodes dogpile's byte format.
    ///
    /// Returns a description of the problem when the bytes are not of this format, are of
    /// another version, or do not decode as `T`; never panics, whatever the bytes.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let bar = bytes
            .iter()
            .position(|&b| b == b'|')
            .ok_or("no `|` separating the metadata from the payload")?;
        let metadata: Metadata = serde_json::from_slice(&bytes[..bar])
            .map_err(|e| format!("metadata is not dogpile's JSON: {e}"))?;
        if metadata.v != VALUE_VERSION {
            return Err(format!(
                "format version {} is not {VALUE_VERSION}",
                metadata.v
            ));
        }
        let mut payload = rmp_serde::Deserializer::from_read_ref(&bytes[bar + 1..]);
        // rmp-serde counts the top level too: MAX_DEPTH levels pass.
        payload.set_max_depth(MAX_DEPTH + 1);
        let payload = T::deserialize(&mut payload).map_err(|e| {
            format!(
                "payload does not decode as {} (nested at most {MAX_DEPTH} deep): {e}",
                std::any::type_name::<T>()
            )
        })?;
        Ok(CachedValue { payload, metadata })
    }
}

/// Encodes `payload` and `metadata` as dogpile's byte format; errors name `key`.
pub(crate) fn encode<T: Serialize>(payload: &T, metadata: &Metadata, key: &str) -> Result<Vec<u8>> {
    let serialization = |reason: String| Error::Serialization {
        key: key.to_owned(),
        reason,
    };
    let mut out = serde_json::to_vec(metadata).map_err(|e| serialization(e.to_string()))?;
    out.push(b'|');
    let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
    payload
        .serialize(&mut ser)
        .map_err(|e| serialization(e.to_string()))?;
    Ok(out)
}

/// What a [`CacheBackend`](crate::backend::CacheBackend) stores under a key.
///
/// Byte backends only ever see [`Entry::Bytes`]; backends that keep typed objects
/// (the memory backend) also receive [`Entry::Object`], which holds an
/// `Arc<CachedValue<T>>` and is never serialized.
#[derive(Clone)]
pub enum Entry {
    /// dogpile's byte format.
    Bytes(Vec<u8>),
    /// A typed `CachedValue<T>`, shared, never serialized.
    Object(Arc<dyn Any + Send + Sync>),
}

impl Entry {
    /// The bytes, when this entry holds bytes.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Entry::Bytes(b) => Some(b),
            Entry::Object(_) => None,
        }
    }

    /// The bytes, or an error naming `backend` when this entry holds a typed object.
    pub fn into_bytes(self, backend: &str) -> Result<Vec<u8>> {
        match self {
            Entry::Bytes(b) => Ok(b),
            Entry::Object(_) => Err(Error::backend(
                backend,
                "received a typed object, but this backend stores bytes only",
            )),
        }
    }

    /// Approximate size in bytes, for size-bounded stores.
    pub fn approximate_size(&self) -> usize {
        match self {
            Entry::Bytes(b) => b.len(),
            Entry::Object(_) => std::mem::size_of::<Self>(),
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Bytes(b) => write!(f, "Entry::Bytes({} bytes)", b.len()),
            Entry::Object(_) => f.write_str("Entry::Object(..)"),
        }
    }
}

impl From<Vec<u8>> for Entry {
    fn from(bytes: Vec<u8>) -> Self {
        Entry::Bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
    }

    #[test]
    fn bytes_have_dogpile_layout_and_round_trip() {
        let value = CachedValue::new(
            User {
                id: 5,
                name: "ed".into(),
            },
            1795608176.021698,
        );
        let bytes = value.to_bytes("k").unwrap();
        let bar = bytes.iter().position(|&b| b == b'|').unwrap();
        assert_eq!(&bytes[..bar], br#"{"ct":1795608176.021698,"v":2}"#);
        // structs are maps with field names, as Python's msgpack.unpackb expects
        let as_map: BTreeMap<String, serde_json::Value> =
            rmp_serde::from_slice(&bytes[bar + 1..]).unwrap();
        assert_eq!(as_map["id"], 5);
        assert_eq!(as_map["name"], "ed");
        assert_eq!(CachedValue::<User>::from_bytes(&bytes).unwrap(), value);
    }

    /// A recursive type, as a tree or JSON-like value in an application would be.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Nested(Vec<Nested>);

    /// dogpile's bytes of `Nested` values `depth` deep.
    fn nested(depth: usize) -> Vec<u8> {
        let mut bytes = br#"{"ct":1.0,"v":2}|"#.to_vec();
        bytes.extend(std::iter::repeat_n(0x91, depth - 1)); // an array of one, ...
        bytes.push(0x90); // ... around an empty array
        bytes
    }

    #[test]
    fn values_nested_deeper_than_the_limit_are_errors_not_stack_overflows() {
        // On a 2 MiB thread, as a spawned thread has by default. Without the limit, the
        // 10_000 levels overflow its stack (debug builds overflow from about 600).
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let at_limit = CachedValue::<Nested>::from_bytes(&nested(MAX_DEPTH)).unwrap();
                let mut depth = 0;
                let mut level = &at_limit.payload;
                while let Some(inner) = level.0.first() {
                    depth += 1;
                    level = inner;
                }
                assert_eq!(depth, MAX_DEPTH - 1);
                for depth in [MAX_DEPTH + 1, 600, 10_000] {
                    let err = CachedValue::<Nested>::from_bytes(&nested(depth)).unwrap_err();
                    assert!(err.contains("depth limit exceeded"), "{depth}: {err}");
                    let err =
                        CachedValue::<serde_json::Value>::from_bytes(&nested(depth)).unwrap_err();
                    assert!(err.contains("depth limit exceeded"), "{depth}: {err}");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn python_written_metadata_with_spaces_decodes() {
        // json.dumps() writes ", " and ": " separators.
        let mut bytes = br#"{"ct": 1795608176.5, "v": 2}|"#.to_vec();
        bytes.extend(rmp_serde::to_vec(&7u32).unwrap());
        let value = CachedValue::<u32>::from_bytes(&bytes).unwrap();
        assert_eq!(value.payload, 7);
        assert_eq!(value.metadata.ct, 1795608176.5);
    }

    #[test]
    fn wrong_version_wrong_type_and_garbage_are_errors_not_panics() {
        let mut other_version = br#"{"ct": 1.0, "v": 1}|"#.to_vec();
        other_version.extend(rmp_serde::to_vec(&7u32).unwrap());
        assert!(CachedValue::<u32>::from_bytes(&other_version)
            .unwrap_err()
            .contains("version 1"));

        let text = CachedValue::new("seven".to_string(), 1.0)
            .to_bytes("k")
            .unwrap();
        assert!(CachedValue::<u32>::from_bytes(&text).is_err());

        for garbage in [
            &b""[..],
            b"|",
            b"\xff\xfe|\x00",
            b"{\"ct\":|",
            b"hello world",
        ] {
            assert!(CachedValue::<String>::from_bytes(garbage).is_err());
        }
    }
}
