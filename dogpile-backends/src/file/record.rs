//! The layout of one value file: a header, the full key, the value.
//!
//! ```text
//! "DPF1"  key length (u32 LE)  value length (u64 LE)  key bytes  value bytes
//! ```
//!
//! The file is named by a hash of the key; the key is kept inside so that two keys with
//! the same hash are told apart. A file whose length does not match its header (cut short,
//! or not a value file at all) is rejected rather than decoded.

use std::io::{self, Read, Write};

/// The first bytes of every value file: a magic number and the layout's version.
const MAGIC: &[u8; 4] = b"DPF1";
/// Magic, key length, value length.
pub(super) const HEADER_LEN: usize = 4 + 4 + 8;

/// Why a value file was not decoded.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Invalid {
    /// The file is shorter or longer than its header says, or has no valid header.
    Malformed(&'static str),
    /// The file holds another key with the same hash.
    OtherKey,
}

/// Writes the value file for `key` and `value` to `out`.
pub(super) fn write(out: &mut impl Write, key: &str, value: &[u8]) -> io::Result<()> {
    let key_len = u32::try_from(key.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "key longer than 4 GiB"))?;
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(MAGIC);
    header[4..8].copy_from_slice(&key_len.to_le_bytes());
    header[8..].copy_from_slice(&(value.len() as u64).to_le_bytes());
    out.write_all(&header)?;
    out.write_all(key.as_bytes())?;
    out.write_all(value)
}

/// The key length and value length a header announces.
fn parse_header(header: &[u8]) -> Result<(usize, u64), Invalid> {
    if header.len() < HEADER_LEN || &header[..4] != MAGIC {
        return Err(Invalid::Malformed("no value file header"));
    }
    let mut key_len = [0u8; 4];
    key_len.copy_from_slice(&header[4..8]);
    let mut value_len = [0u8; 8];
    value_len.copy_from_slice(&header[8..HEADER_LEN]);
    Ok((
        u32::from_le_bytes(key_len) as usize,
        u64::from_le_bytes(value_len),
    ))
}

/// The value in `file` (a whole value file), if it is well formed and holds `key`.
pub(super) fn read(mut file: Vec<u8>, key: &str) -> Result<Vec<u8>, Invalid> {
    let (key_len, value_len) = parse_header(&file)?;
    let expected = (HEADER_LEN as u64)
        .checked_add(key_len as u64)
        .and_then(|n| n.checked_add(value_len));
    if expected != Some(file.len() as u64) {
        return Err(Invalid::Malformed("length differs from the header's"));
    }
    let value_start = HEADER_LEN + key_len;
    if &file[HEADER_LEN..value_start] != key.as_bytes() {
        return Err(Invalid::OtherKey);
    }
    file.drain(..value_start);
    Ok(file)
}

/// The length of the key of the value file read from `input`, reading only its header.
///
/// `Ok(None)` when the file is not a well-formed value file.
fn key_len(input: &mut impl Read) -> io::Result<Option<usize>> {
    let mut header = [0u8; HEADER_LEN];
    if let Err(e) = input.read_exact(&mut header) {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => Ok(None),
            _ => Err(e),
        };
    }
    Ok(parse_header(&header).ok().map(|(key_len, _)| key_len))
}

/// Whether the value file read from `input` holds `key`, reading only its header and key.
///
/// `Ok(None)` when the file is not a well-formed value file.
pub(super) fn holds_key(input: &mut impl Read, key: &str) -> io::Result<Option<bool>> {
    let Some(key_len) = key_len(input)? else {
        return Ok(None);
    };
    if key_len != key.len() {
        return Ok(Some(false));
    }
    let mut stored = vec![0u8; key_len];
    match input.read_exact(&mut stored) {
        Ok(()) => Ok(Some(stored == key.as_bytes())),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// The key of the value file read from `input`, reading only its header and key.
///
/// `Ok(None)` when the file is not a well-formed value file or its key is not UTF-8.
pub(super) fn read_key(input: &mut impl Read) -> io::Result<Option<String>> {
    let Some(key_len) = key_len(input)? else {
        return Ok(None);
    };
    let mut key = Vec::new();
    input.take(key_len as u64).read_to_end(&mut key)?;
    if key.len() != key_len {
        return Ok(None);
    }
    Ok(String::from_utf8(key).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(key: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, key, value).unwrap();
        out
    }

    #[test]
    fn round_trips_and_tells_keys_apart() {
        let file = encoded("k€y", b"va|ue\0");
        assert_eq!(file.len(), HEADER_LEN + "k€y".len() + 6);
        assert_eq!(read(file.clone(), "k€y").unwrap(), b"va|ue\0");
        assert_eq!(read(file.clone(), "other").unwrap_err(), Invalid::OtherKey);
        assert_eq!(holds_key(&mut &file[..], "k€y").unwrap(), Some(true));
        assert_eq!(holds_key(&mut &file[..], "k€z").unwrap(), Some(false));
        assert_eq!(holds_key(&mut &file[..], "short").unwrap(), Some(false));
        assert_eq!(read(encoded("", b""), "").unwrap(), b"");
    }

    #[test]
    fn every_truncation_and_extension_is_rejected() {
        let file = encoded("key", &[7u8; 100]);
        for len in 0..file.len() {
            assert!(
                matches!(
                    read(file[..len].to_vec(), "key"),
                    Err(Invalid::Malformed(_))
                ),
                "cut to {len} bytes"
            );
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(matches!(read(longer, "key"), Err(Invalid::Malformed(_))));
        for len in 0..HEADER_LEN + 3 {
            assert_ne!(holds_key(&mut &file[..len], "key").unwrap(), Some(true));
        }
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        let mut huge_lengths = b"DPF1".to_vec();
        huge_lengths.extend([0xff; 12]);
        for garbage in [
            &b""[..],
            b"DPF",
            b"DPF0\0\0\0\0\0\0\0\0\0\0\0\0",
            &huge_lengths,
            &[0u8; 64],
        ] {
            assert!(read(garbage.to_vec(), "k").is_err());
            assert_ne!(holds_key(&mut &garbage[..], "k").unwrap(), Some(true));
        }
    }
}
