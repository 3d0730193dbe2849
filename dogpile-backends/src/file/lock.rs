//! File locks: the per-key dogpile lock shared by every process on the machine, and the
//! optional reader/writer lock of the whole store.
//!
//! Both are `flock(2)`-style advisory locks (through `fs4`): they belong to an open file, so
//! a lock taken on one thread can be released from another, and the kernel releases them
//! when the process holding them dies, however it dies.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use dogpile_core::lock::CacheMutex;
use dogpile_core::{Error, Result};
use fs4::FileExt;
use fs4::TryLockError;

/// The dogpile lock on one key: an exclusive lock on the key's own lock file.
///
/// Lock files exist only while somebody holds or waits for them: the holder deletes the
/// file before unlocking it, and whoever then gets the lock on the deleted file sees that
/// the path no longer leads to it and starts again on a fresh file. So the lock directory
/// does not fill up with one file per key ever created.
pub(super) struct KeyFileLock {
    path: PathBuf,
    /// The backend's description (with the store's path), for errors.
    backend: String,
    held: Mutex<Option<File>>,
}

impl KeyFileLock {
    pub(super) fn new(path: PathBuf, backend: &str) -> Self {
        KeyFileLock {
            path,
            backend: backend.to_owned(),
            held: Mutex::new(None),
        }
    }

    fn held(&self) -> MutexGuard<'_, Option<File>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn error(&self, action: &str, e: io::Error) -> Error {
        Error::backend(
            &self.backend,
            io::Error::new(
                e.kind(),
                format!("{action} lock file {}: {e}", self.path.display()),
            ),
        )
    }

    fn open(&self) -> io::Result<File> {
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
        };
        match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The lock directory was removed under us: make it again.
                if let Some(parent) = self.path.parent() {
                    fs::create_dir_all(parent)?;
                }
                open()
            }
            other => other,
        }
    }
}

/// True when `path` still names the file `file` has open (it was not deleted or replaced
/// since it was opened).
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata()?;
    match fs::metadata(path) {
        Ok(named) => Ok(open.dev() == named.dev() && open.ino() == named.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Elsewhere lock files are never deleted (see `release`), so the path always names it.
#[cfg(not(unix))]
fn still_at(_file: &File, _path: &Path) -> io::Result<bool> {
    Ok(true)
}

impl CacheMutex for KeyFileLock {
    fn try_acquire(&self) -> Result<bool> {
        let mut held = self.held();
        if held.is_some() {
            // This handle holds it already.
            return Ok(true);
        }
        loop {
            let file = self.open().map_err(|e| self.error("cannot open", e))?;
            match FileExt::try_lock(&file) {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(false),
                Err(TryLockError::Error(e)) => return Err(self.error("cannot lock", e)),
            }
            // The previous holder may have deleted this file just before unlocking it: a
            // lock on a deleted file excludes nobody. Start again on the current file.
            if still_at(&file, &self.path).map_err(|e| self.error("cannot check", e))? {
                *held = Some(file);
                return Ok(true);
            }
        }
    }

    /// Local file locks are cheap to try: a waiting caller tries every 20 ms at most.
    fn retry_pause(&self) -> Duration {
        Duration::from_millis(20)
    }

    fn release(&self) -> Result<()> {
        let Some(file) = self.held().take() else {
            return Ok(());
        };
        // Delete while still holding the lock (see the type's docs), then unlock. Windows
        // cannot delete an open file; there lock files stay.
        #[cfg(unix)]
        let deleted = match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        #[cfg(not(unix))]
        let deleted: io::Result<()> = Ok(());
        let unlocked = FileExt::unlock(&file);
        drop(file); // closing the file releases the lock in any case
        deleted.map_err(|e| self.error("cannot delete", e))?;
        unlocked.map_err(|e| self.error("cannot unlock", e))
    }
}

impl Drop for KeyFileLock {
    fn drop(&mut self) {
        if let Err(error) = self.release() {
            tracing::warn!(%error, "failed to release a file lock");
        }
    }
}

/// The reader/writer lock of a whole store (dogpile's `rw_lockfile`): shared while reading,
/// exclusive while writing. Held for as long as the returned file is open.
pub(super) fn lock_rw(path: &Path, exclusive: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if exclusive {
        FileExt::lock(&file)?;
    } else {
        FileExt::lock_shared(&file)?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dogpile_core::lock::acquire_until;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Barrier;
    use std::thread;
    use std::time::Instant;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// True when some handle holds the lock: a third handle cannot take it.
    fn locked(dir: &Path) -> bool {
        let probe = lock(dir);
        let free = probe.try_acquire().unwrap();
        probe.release().unwrap();
        !free
    }

    fn lock(dir: &Path) -> KeyFileLock {
        KeyFileLock::new(dir.join("k.lock"), "file store at test")
    }

    #[test]
    fn excludes_other_handles_and_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (lock(dir.path()), lock(dir.path()));
        assert!(!locked(dir.path()));
        assert!(a.try_acquire().unwrap());
        assert!(a.try_acquire().unwrap(), "the holder's own handle");
        assert!(locked(dir.path()));
        assert!(!b.try_acquire().unwrap());
        a.release().unwrap();
        a.release().unwrap(); // releasing what is not held is a no-op
        assert!(!dir.path().join("k.lock").exists(), "lock file deleted");
        assert!(!locked(dir.path()));
        assert!(b.try_acquire().unwrap());
        assert!(!a.try_acquire().unwrap());
        drop(b); // dropping a held lock releases it
        assert!(acquire_until(&a, far()).unwrap());
    }

    #[test]
    fn released_from_another_thread() {
        let dir = tempfile::tempdir().unwrap();
        let a = lock(dir.path());
        assert!(acquire_until(&a, far()).unwrap());
        thread::scope(|s| {
            s.spawn(|| a.release().unwrap()).join().unwrap();
        });
        assert!(lock(dir.path()).try_acquire().unwrap());
    }

    #[test]
    fn blocking_acquires_are_mutually_exclusive_despite_deleted_lock_files() {
        // Many handles (as many processes would have) race for one key, over and over; the
        // holder deletes the lock file on every release. Nobody may ever hold it together.
        let dir = tempfile::tempdir().unwrap();
        let inside = AtomicBool::new(false);
        let entered = AtomicUsize::new(0);
        let barrier = Barrier::new(8);
        thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    barrier.wait();
                    for i in 0..50 {
                        let handle = lock(dir.path());
                        let got = if i % 3 == 0 {
                            handle.try_acquire().unwrap()
                        } else {
                            acquire_until(&handle, far()).unwrap()
                        };
                        if got {
                            assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                            entered.fetch_add(1, Ordering::SeqCst);
                            thread::yield_now();
                            inside.store(false, Ordering::SeqCst);
                            handle.release().unwrap();
                        }
                    }
                });
            }
        });
        assert!(entered.load(Ordering::SeqCst) >= 8 * 33);
    }

    #[test]
    fn rw_lock_shares_reads_and_excludes_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rw.lock");
        let r1 = lock_rw(&path, false).unwrap();
        let r2 = lock_rw(&path, false).unwrap();
        let probe = File::open(&path).unwrap();
        assert!(matches!(
            FileExt::try_lock(&probe),
            Err(TryLockError::WouldBlock)
        ));
        drop((r1, r2));
        let w = lock_rw(&path, true).unwrap();
        assert!(matches!(
            FileExt::try_lock_shared(&probe),
            Err(TryLockError::WouldBlock)
        ));
        drop(w);
        FileExt::try_lock_shared(&probe).unwrap();
    }
}
