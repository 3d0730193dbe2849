//! The `file` backend (dogpile's `dbm`): a persistent store on the local disk, shared safely
//! by every thread and process of the machine.
//!
//! From async code (a region's `_async` methods) every call runs on tokio's blocking pool:
//! file I/O has no portable async interface (`tokio::fs` itself uses that pool), so an
//! executor thread never waits on the disk or on a file lock. A few calls per region run
//! there at once, each waited for at most 30 seconds, so a stalled disk under one region
//! cannot take the pool from the others (see `Capabilities::call_timeout`).
//!
//! Only regular files are read as values: a FIFO or a device where a value file should
//! be (which would block an open or a read for ever) reads as a miss, with a warning, and
//! the next `set` replaces it.
//!
//! Configured by name, as `file` or `dogpile.cache.dbm`:
//! `RegionConfig::new("file").argument("filename", "/var/cache/myapp")`; or built directly:
//!
//! ```
//! use dogpile_core::CacheRegion;
//! use dogpile_backends::FileBackend;
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("cache");
//!
//! let region = CacheRegion::new();
//! region.configure_backend(FileBackend::open(&path)?, None)?;
//! let answer: u64 = region.get_or_create("answer", || 42)?;
//! assert_eq!(answer, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! `filename` names a **directory**, the store (created when missing; its parent must
//! exist; a relative path is taken from the current directory when the region is
//! configured). A dogpile.cache configuration that names a dbm file such as
//! `/var/cache/app.dbm` works unchanged: that path becomes the store's directory. A
//! directory that holds other things is refused rather than filled with cache files.
//!
//! ```text
//! <filename>/dogpile-file-store      marks the directory as a store, with its format version
//! <filename>/data/3f/3f1c…e2         one file per key, named by the key's SHA-1
//! <filename>/tmp/                    values being written
//! <filename>/locks/3f1c…e2.lock      dogpile locks held right now (dogpile_lockfile)
//! ```
//!
//! A value file holds a header, the full key and the value (dogpile's byte format, as for
//! every byte backend). The key inside tells two keys with the same hash apart, so a
//! collision costs a miss, never a wrong value. File names are hex digits only, whatever
//! the key: no key (`../x`, `/etc/passwd`, NUL bytes, 10 KiB keys) can name a file
//! outside the store.
//!
//! # Why a directory of files
//!
//! What the backend must guarantee is that several processes read and write one store at
//! once, and that a process killed in the middle of a write leaves every value whole. A
//! value is written to a temporary file in the store, flushed to disk (`fsync`), then
//! renamed over the key's file. A rename is atomic: readers, in this process or another,
//! see the old file or the new one, never a mix, and need no lock at all. A process killed
//! before the rename leaves only a temporary file, removed the next time a store is opened
//! on the directory (once it is a minute old and no process holds it open for writing);
//! killed after, it has written the new value in full. There is no shared index or log to
//! repair, so the store always opens.
//!
//! The embedded databases considered do not fit as well: redb and sled allow one process
//! at a time; LMDB (heed) and SQLite are C libraries with their own map sizes, WAL files and
//! recovery, more machinery than a cache of independent keys needs. Python's dbm modules
//! (gdbm, ndbm) are not safe to share between processes without a lock around every
//! operation, which is why dogpile's dbm backend takes one.
//!
//! The price: one file per key (a store of millions of small values uses as many inodes),
//! and every `set` waits for the disk (`fsync`, a few milliseconds on most disks). After a
//! power failure a recent `set` may be lost, never torn. Expired values are not removed
//! (dogpile never deletes them; they are served stale while one caller regenerates):
//! delete keys, or the directory, to reclaim space.
//!
//! # Locks
//!
//! - **The dogpile lock** (`dogpile_lockfile`, on by default) works across processes:
//!   [`get_mutex`](CacheBackend::get_mutex) returns a lock on the key's own lock file, so
//!   two processes racing on an expired key run the creator once between them. The locks
//!   are `flock(2)` locks: the kernel releases the lock of a process that dies, so a killed
//!   creator never leaves a key locked, and the lock needs no timeout: a caller waiting for
//!   a missing value waits as long as the creator runs, as with dogpile's dbm backend.
//!   Keys are locked separately, so a creator may read other keys of the region. Within a
//!   process, the region's own per-key lock is taken first, so only one thread per process
//!   waits on the file.
//! - **The reader/writer lock** (`rw_lockfile`, off by default) is dogpile's lock around
//!   every operation: shared while reading, exclusive while writing. This layout does not
//!   need it (renames are atomic); turn it on to serialize writers with a tool of your own
//!   that takes the exclusive lock, for example to back the directory up.
//!
//! # Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `filename` | required | the store's directory (see above) |
//! | `dogpile_lockfile` | `<filename>/locks` | the directory of the per-key lock files; `false`: no file locks, only the region's in-process lock (then processes may create the same value at once) |
//! | `rw_lockfile` | off | `true` for `<filename>/rw.lock`, or the path of the lock file; `false`: off |
//!
//! Only local file systems are supported: network file systems differ in how they honour
//! `rename` and `flock`.

mod lock;
mod record;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dogpile_core::backend::{key_matches, Arguments, CacheBackend};
use dogpile_core::key::sha1_mangle_key;
use dogpile_core::lock::CacheMutex;
use dogpile_core::{Error, Result};
use fs4::FileExt;

use self::lock::{lock_rw, KeyFileLock};
use self::record::Invalid;

/// The backend's arguments.
const ARGUMENTS: &[&str] = &["filename", "dogpile_lockfile", "rw_lockfile"];

/// The file marking a directory as a store.
const MARKER: &str = "dogpile-file-store";
/// The marker's content: the layout's name and version.
const MARKER_CONTENT: &str = "dogpile file store, format 1\n";
/// Subdirectories of a store.
const DATA: &str = "data";
const TMP: &str = "tmp";
const LOCKS: &str = "locks";
/// The default reader/writer lock file.
const RW_LOCK: &str = "rw.lock";
/// Suffix of the temporary files in `tmp/` (and of a marker being written).
const TMP_SUFFIX: &str = ".partial";
/// A temporary file this old, that no process holds open for writing, was left by a
/// process that died while writing it.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// A store of values in a directory: see the [module docs](self).
pub struct FileBackend {
    dir: PathBuf,
    data: PathBuf,
    tmp: PathBuf,
    locks: Option<PathBuf>,
    rw_lock: Option<PathBuf>,
    /// `file store at <dir>`, for errors and logs.
    name: String,
}

/// Where a lock of the store lives.
enum LockSetting {
    Default,
    Off,
    At(PathBuf),
}

impl LockSetting {
    /// `true`/`false` (and their synonyms) or a path.
    fn parse(args: &Arguments, name: &str) -> Result<Option<Self>> {
        let Some(raw) = args.get(name) else {
            return Ok(None);
        };
        if raw.trim().is_empty() {
            return Err(args.invalid(name, "give a path, or true or false"));
        }
        Ok(Some(match args.bool(name) {
            Ok(Some(true)) => LockSetting::Default,
            Ok(Some(false)) => LockSetting::Off,
            _ => LockSetting::At(PathBuf::from(raw)),
        }))
    }
}

impl FileBackend {
    /// Opens (creating when missing) the store in directory `dir`, with the default
    /// dogpile lock files and no reader/writer lock.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `dir` cannot be a store (its parent does not exist,
    /// it is a file, or a directory holding other things); [`Error::Backend`] when it cannot
    /// be created or written.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with("file", dir.as_ref(), LockSetting::Default, LockSetting::Off)
    }

    /// The `file` backend from its arguments: `filename` (required), `dogpile_lockfile`,
    /// `rw_lockfile` (see the [module docs](self)).
    ///
    /// # Errors
    /// As [`open`](Self::open); also [`Error::InvalidArgument`] for a missing `filename`
    /// or an unknown argument.
    pub fn from_arguments(args: &Arguments) -> Result<Self> {
        args.check_known(ARGUMENTS)?;
        let filename = args.require("filename")?;
        if filename.trim().is_empty() {
            return Err(args.invalid("filename", "is empty; give the store's directory"));
        }
        let dogpile = LockSetting::parse(args, "dogpile_lockfile")?.unwrap_or(LockSetting::Default);
        let rw = LockSetting::parse(args, "rw_lockfile")?.unwrap_or(LockSetting::Off);
        Self::open_with(args.backend(), Path::new(filename), dogpile, rw)
    }

    fn open_with(backend: &str, dir: &Path, dogpile: LockSetting, rw: LockSetting) -> Result<Self> {
        let invalid = |argument: &str, path: &Path, reason: &str| {
            Error::invalid_argument(backend, argument, format!("{}: {reason}", path.display()))
        };
        let dir = std::path::absolute(dir)
            .map_err(|e| invalid("filename", dir, &format!("not a usable path: {e}")))?;
        let name = format!("file store at {}", dir.display());
        let io_error = |action: &str, path: &Path, e: io::Error| io_error(&name, action, path, e);

        make_dir(&dir).map_err(|problem| invalid("filename", &dir, &problem))?;
        claim(&dir).map_err(|problem| match problem {
            Claim::Foreign(reason) => invalid("filename", &dir, &reason),
            Claim::Io(action, path, e) => io_error(action, &path, e),
        })?;
        let data = dir.join(DATA);
        let tmp = dir.join(TMP);
        for sub in [&data, &tmp] {
            ensure_dir(sub).map_err(|e| io_error("cannot create directory", sub, e))?;
        }

        let locks = match dogpile {
            LockSetting::Off => None,
            LockSetting::Default => Some(dir.join(LOCKS)),
            LockSetting::At(path) => Some(
                std::path::absolute(&path)
                    .map_err(|e| invalid("dogpile_lockfile", &path, &e.to_string()))?,
            ),
        };
        if let Some(locks) = &locks {
            make_dir(locks).map_err(|problem| invalid("dogpile_lockfile", locks, &problem))?;
        }
        let rw_lock = match rw {
            LockSetting::Off => None,
            LockSetting::Default => Some(dir.join(RW_LOCK)),
            LockSetting::At(path) => Some(
                std::path::absolute(&path)
                    .map_err(|e| invalid("rw_lockfile", &path, &e.to_string()))?,
            ),
        };
        if let Some(rw_lock) = &rw_lock {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(rw_lock)
                .map_err(|e| match rw_lock.parent() {
                    Some(parent) if !parent.is_dir() => {
                        invalid("rw_lockfile", rw_lock, "its directory does not exist")
                    }
                    _ => io_error("cannot create lock file", rw_lock, e),
                })?;
        }

        let backend = FileBackend {
            dir,
            data,
            tmp,
            locks,
            rw_lock,
            name,
        };
        // Fail now, naming the path, rather than at the first `set`.
        drop(backend.create_temp()?);
        backend.remove_stale_temp_files();
        tracing::debug!(store = %backend.dir.display(), "file store opened");
        Ok(backend)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn error(&self, action: &str, path: &Path, e: io::Error) -> Error {
        io_error(&self.name, action, path, e)
    }

    /// `data/<first two hex digits>/<sha1 of key>`.
    fn data_path(&self, key: &str) -> PathBuf {
        let hash = sha1_mangle_key(key);
        self.data.join(&hash[..2]).join(hash)
    }

    /// The reader/writer lock, if the store has one, held until the returned file closes.
    fn rw(&self, exclusive: bool) -> Result<Option<File>> {
        self.rw_lock
            .as_ref()
            .map(|path| lock_rw(path, exclusive).map_err(|e| self.error("cannot lock", path, e)))
            .transpose()
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.data_path(key);
        let read = open_regular(&path).and_then(|(mut file, len)| {
            let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            io::Read::read_to_end(&mut file, &mut bytes).map(|_| bytes)
        });
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                // Not ours to read (a FIFO or a device would block or never end): a miss,
                // and the next set replaces it with a value file.
                tracing::warn!(store = %self.dir.display(), key, file = %path.display(), error = %e, "treating it as a miss");
                return Ok(None);
            }
            Err(e) => return Err(self.error("cannot read", &path, e)),
        };
        match record::read(bytes, key) {
            Ok(value) => Ok(Some(value)),
            Err(Invalid::OtherKey) => {
                tracing::debug!(store = %self.dir.display(), key, "another key with the same hash is stored; a miss");
                Ok(None)
            }
            Err(Invalid::Malformed(problem)) => {
                tracing::warn!(store = %self.dir.display(), key, file = %path.display(), problem, "value file is not readable; treating it as a miss");
                Ok(None)
            }
        }
    }

    fn write(&self, key: &str, value: &[u8]) -> Result<()> {
        let path = self.data_path(key);
        let mut temp = self.create_temp()?;
        let written = (|| {
            let mut out = io::BufWriter::with_capacity(64 * 1024, &temp.file);
            record::write(&mut out, key, value)?;
            out.flush()?;
            drop(out);
            temp.file.sync_data()
        })();
        written.map_err(|e| self.error("cannot write", &temp.path, e))?;
        self.rename_into_place(&temp.path, &path)?;
        // Renamed: nothing left for `Temp`'s drop to remove.
        temp.path = PathBuf::new();
        Ok(())
    }

    fn rename_into_place(&self, temp: &Path, path: &Path) -> Result<()> {
        match fs::rename(temp, path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The key's fan-out directory does not exist yet.
                if let Some(parent) = path.parent() {
                    ensure_dir(parent)
                        .map_err(|e| self.error("cannot create directory", parent, e))?;
                }
                fs::rename(temp, path)
            }
            other => other,
        }
        .map_err(|e| self.error("cannot replace", path, e))
    }

    fn remove(&self, key: &str) -> Result<()> {
        let path = self.data_path(key);
        let holds = match open_regular(&path) {
            // Another key with the same hash is left alone; a malformed file is removed.
            Ok((mut file, _)) => record::holds_key(&mut file, key)
                .map_err(|e| self.error("cannot read", &path, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // Not a value file (a FIFO, a device): removed unread.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => None,
            Err(e) => return Err(self.error("cannot open", &path, e)),
        };
        if holds == Some(false) {
            return Ok(());
        }
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(self.error("cannot delete", &path, e))
            }
            _ => Ok(()),
        }
    }

    /// A new file in `tmp/`, exclusively locked while it is being written so that
    /// [`remove_stale_temp_files`](Self::remove_stale_temp_files) leaves it alone.
    fn create_temp(&self) -> Result<Temp> {
        loop {
            let path = self.tmp.join(unique_name());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    // A fresh file nobody else has open: the lock is free.
                    let _ = FileExt::try_lock(&file);
                    return Ok(Temp { file, path });
                }
                // Left by an earlier process with the same id.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    ensure_dir(&self.tmp)
                        .map_err(|e| self.error("cannot create directory", &self.tmp, e))?;
                }
                Err(e) => return Err(self.error("cannot create", &path, e)),
            }
        }
    }

    /// Removes what processes that died while writing left in `tmp/`: files older than
    /// [`STALE_AFTER`] that no process holds locked. Best effort; logs what it cannot do.
    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.tmp) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let path = entry.path();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| {
                    now.duration_since(modified)
                        .is_ok_and(|age| age >= STALE_AFTER)
                });
            if !old || !path.to_string_lossy().ends_with(TMP_SUFFIX) {
                continue;
            }
            let Ok(file) = OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            if FileExt::try_lock(&file).is_ok() {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::debug!(file = %path.display(), "removed a temporary file left by a process that died while writing")
                    }
                    Err(error) => {
                        tracing::warn!(file = %path.display(), %error, "cannot remove a stale temporary file")
                    }
                }
            }
        }
    }
}

/// A temporary file being written; removed if dropped before it was renamed into place.
struct Temp {
    file: File,
    path: PathBuf,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A temporary file name that no other thread or process uses at the same time (unless a
/// dead process with the same id left it: callers create it exclusively and retry).
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos}{TMP_SUFFIX}", std::process::id())
}

fn io_error(name: &str, action: &str, path: &Path, e: io::Error) -> Error {
    Error::backend(
        name,
        io::Error::new(e.kind(), format!("{action} {}: {e}", path.display())),
    )
}

/// Creates directory `dir` if missing; its parent must exist. Returns what is wrong.
fn make_dir(dir: &Path) -> std::result::Result<(), String> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => return Err("exists and is not a directory".into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot be used: {e}")),
    }
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.is_dir() => {
            return Err(format!(
                "its parent directory {} does not exist",
                parent.display()
            ));
        }
        _ => {}
    }
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(format!("cannot be created: {e}")),
    }
}

/// Creates `dir` and its parents if missing.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other,
    }
}

/// Why a directory was not taken as a store.
enum Claim {
    Foreign(String),
    Io(&'static str, PathBuf, io::Error),
}

/// Makes sure `dir` is a store of this format: it has the marker, or is empty and gets
/// one. A directory holding anything else is refused, so that a wrong `filename` never
/// fills a home directory with cache files.
fn claim(dir: &Path) -> std::result::Result<(), Claim> {
    let marker = dir.join(MARKER);
    // Twice at most: another process may put the marker there while this one looks.
    for _ in 0..2 {
        match fs::read_to_string(&marker) {
            Ok(content) if content == MARKER_CONTENT => return Ok(()),
            Ok(content) => {
                return Err(Claim::Foreign(format!(
                    "holds a store of another format ({:?}); this version writes {:?}",
                    content.trim(),
                    MARKER_CONTENT.trim()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Claim::Io("cannot read", marker, e)),
        }
        let listing_error = |e| Claim::Io("cannot list", dir.to_owned(), e);
        let mut marked_meanwhile = false;
        for entry in fs::read_dir(dir).map_err(listing_error)? {
            let name = entry.map_err(listing_error)?.file_name();
            let name = name.to_string_lossy();
            if name == MARKER {
                marked_meanwhile = true;
                continue;
            }
            // Another process may be creating the store right now: its marker being
            // written, or (marker just written) its subdirectories.
            let ours = name.starts_with(&format!(".{MARKER}."))
                || [DATA, TMP, LOCKS, RW_LOCK].contains(&&*name);
            if !ours {
                return Err(Claim::Foreign(format!(
                    "is not empty and is not a dogpile file store (it has no `{MARKER}` \
                     file); give a new or empty directory"
                )));
            }
        }
        if marked_meanwhile {
            continue;
        }
        // Write the marker atomically: a process killed here leaves no half-written one.
        let partial = dir.join(format!(".{MARKER}.{}", unique_name()));
        let written =
            fs::write(&partial, MARKER_CONTENT).and_then(|()| fs::rename(&partial, &marker));
        if let Err(e) = written {
            let _ = fs::remove_file(&partial);
            return Err(Claim::Io("cannot create", marker, e));
        }
        return Ok(());
    }
    // The marker appeared, then was gone again: somebody is deleting the store.
    Err(Claim::Io(
        "cannot read",
        marker,
        io::Error::new(io::ErrorKind::NotFound, "the store is being deleted"),
    ))
}

/// Opens `path` for reading if it is a regular file, with its length: a FIFO or a device
/// is an `InvalidInput` error, never waited on. (Opened without blocking, so that opening
/// a FIFO with no writer returns at once; regular files ignore the flag.)
fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "not a regular file ({:?}), so not a value file",
                metadata.file_type()
            ),
        ));
    }
    Ok((file, metadata.len()))
}

impl CacheBackend for FileBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let _rw = self.rw(false)?;
        self.read(key)
    }

    fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let _rw = self.rw(true)?;
        self.write(key, &value)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let _rw = self.rw(true)?;
        self.remove(key)
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let _rw = self.rw(false)?;
        keys.iter().map(|key| self.read(key)).collect()
    }

    fn set_multi(&self, items: Vec<(&str, Vec<u8>)>) -> Result<()> {
        let _rw = self.rw(true)?;
        items
            .iter()
            .try_for_each(|(key, value)| self.write(key, value))
    }

    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        let _rw = self.rw(true)?;
        keys.iter().try_for_each(|key| self.remove(key))
    }

    /// Reads the key inside every value file under `data/` (its header and key only).
    fn keys(&self, pattern: &str, found: &mut dyn FnMut(String) -> bool) -> Result<()> {
        let list = |dir: &Path| fs::read_dir(dir).map_err(|e| self.error("cannot list", dir, e));
        for shard in list(&self.data)? {
            let shard = shard.map_err(|e| self.error("cannot list", &self.data, e))?;
            if !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let shard = shard.path();
            for file in list(&shard)? {
                let file = file.map_err(|e| self.error("cannot list", &shard, e))?;
                let path = file.path();
                let key = match open_regular(&path) {
                    Ok((mut file, _)) => record::read_key(&mut file),
                    Err(e) => Err(e),
                };
                let key = match key {
                    Ok(Some(key)) => key,
                    // Not a value file, or removed meanwhile: not a key.
                    Ok(None) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) if e.kind() == io::ErrorKind::InvalidInput => continue,
                    Err(e) => return Err(self.error("cannot read", &path, e)),
                };
                if key_matches(pattern, &key) && !found(key) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        let locks = self.locks.as_ref()?;
        let path = locks.join(format!("{}.lock", sha1_mangle_key(key)));
        Some(Box::new(KeyFileLock::new(path, &self.name)))
    }
}

impl fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBackend")
            .field("dir", &self.dir)
            .field("dogpile_lockfile", &self.locks)
            .field("rw_lockfile", &self.rw_lock)
            .finish()
    }
}

/// Registration shim so the factory signature matches [`dogpile_core::__private::BuiltinBackend`].
pub(crate) fn file(args: &Arguments) -> Result<std::sync::Arc<dyn CacheBackend>> {
    Ok(std::sync::Arc::new(FileBackend::from_arguments(args)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, FileBackend) {
        let dir = tempfile::tempdir().unwrap();
        let backend = FileBackend::open(dir.path().join("store")).unwrap();
        (dir, backend)
    }

    #[test]
    fn another_key_with_the_same_hash_is_a_miss_and_is_not_deleted() {
        let (_dir, backend) = store();
        backend.set("other", b"theirs".to_vec()).unwrap();
        // Put "other"'s file where "key" hashes to, as a hash collision would.
        let path = backend.data_path("key");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::copy(backend.data_path("other"), &path).unwrap();

        assert_eq!(backend.get("key").unwrap(), None);
        backend.delete("key").unwrap();
        assert!(
            path.exists(),
            "delete of `key` left the other key's file alone"
        );
        backend.set("key", b"mine".to_vec()).unwrap();
        assert_eq!(backend.get("key").unwrap(), Some(b"mine".to_vec()));
    }

    #[test]
    fn a_damaged_value_file_is_a_miss_and_can_be_deleted_and_replaced() {
        let (_dir, backend) = store();
        backend.set("k", vec![1; 1000]).unwrap();
        let path = backend.data_path("k");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(backend.get("k").unwrap(), None);
        backend.delete("k").unwrap();
        assert!(!path.exists());
        backend.set("k", vec![2]).unwrap();
        assert_eq!(backend.get("k").unwrap(), Some(vec![2]));
    }

    #[test]
    fn file_names_are_hashes_whatever_the_key() {
        let (_dir, backend) = store();
        for key in ["../x", "/etc/passwd", "a\0b", "..", ""] {
            let path = backend.data_path(key);
            assert!(path.starts_with(&backend.data));
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn stale_temporary_files_are_removed_on_open_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let backend = FileBackend::open(&path).unwrap();
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(5);

        // Left by a writer that was killed: the kernel released its lock.
        let dead_path = backend.tmp.join(format!("1-2-3{TMP_SUFFIX}"));
        fs::write(&dead_path, b"half a value").unwrap();
        let live = backend.create_temp().unwrap(); // still being written
        let young = backend.tmp.join(format!("young{TMP_SUFFIX}"));
        fs::write(&young, b"").unwrap();
        let not_ours = backend.tmp.join("unrelated");
        fs::write(&not_ours, b"").unwrap();
        for p in [&dead_path, &live.path, &not_ours] {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }

        FileBackend::open(&path).unwrap();
        assert!(
            !dead_path.exists(),
            "a stale, unlocked temp file is removed"
        );
        assert!(live.path.exists(), "a temp file being written is kept");
        assert!(young.exists(), "a recent temp file is kept");
        assert!(not_ours.exists(), "files not named by the backend are kept");
    }
}
