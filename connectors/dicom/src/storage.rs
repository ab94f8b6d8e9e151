//! Where instances are kept: files addressed by the SHA-256 of their bytes,
//! written as they arrive (never held whole in memory) and made durable
//! before anyone is told "stored". A trait, so that an S3-compatible object
//! store can follow for scale-out.
//!
//! Paths are built from the content hash only, never from anything a
//! sender chose (a SOP Instance UID is not a file name).

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("instance storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("the instance is larger than the {limit} bytes allowed")]
    TooLarge { limit: u64 },
}

/// An instance kept: its content hash (hex) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub sha256: String,
    pub size: u64,
}

/// An instance being received: bytes go in as they arrive.
pub trait InstanceWriter: Send {
    fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError>;
    /// Makes the bytes durable under their content hash. Until this
    /// returns, nothing may be acknowledged.
    fn keep(self: Box<Self>) -> Result<Kept, StorageError>;
}

/// Instance storage.
pub trait InstanceStore: Send + Sync {
    /// A writer for one instance of at most `limit` bytes.
    fn begin(&self, limit: u64) -> Result<Box<dyn InstanceWriter>, StorageError>;
    /// Where a kept instance is read from.
    fn path_of(&self, sha256: &str) -> Option<PathBuf>;
}

/// Files under a directory: `<root>/ab/cd/<sha256>`, received into
/// `<root>/incoming/` first.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(root.join("incoming"))?;
        Ok(FileStore { root })
    }

    fn final_path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(&sha256[2..4]).join(sha256)
    }
}

struct FileWriter {
    store: FileStore,
    temp: PathBuf,
    /// `None` once kept.
    file: Option<std::io::BufWriter<std::fs::File>>,
    hash: Sha256,
    size: u64,
    limit: u64,
}

impl InstanceStore for FileStore {
    fn begin(&self, limit: u64) -> Result<Box<dyn InstanceWriter>, StorageError> {
        // A name of our own: a random one, nothing of the sender's.
        let temp = self
            .root
            .join("incoming")
            .join(format!("{}-{:016x}", std::process::id(), rand_u64()));
        let file = std::fs::File::create_new(&temp)?;
        Ok(Box::new(FileWriter {
            store: self.clone(),
            temp,
            file: Some(std::io::BufWriter::with_capacity(256 * 1024, file)),
            hash: Sha256::new(),
            size: 0,
            limit,
        }))
    }

    fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        valid.then(|| self.final_path(sha256))
    }
}

impl InstanceWriter for FileWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.size += bytes.len() as u64;
        if self.size > self.limit {
            return Err(StorageError::TooLarge { limit: self.limit });
        }
        self.hash.update(bytes);
        match self.file.as_mut() {
            Some(file) => file.write_all(bytes)?,
            None => return Err(std::io::Error::other("written after it was kept").into()),
        }
        Ok(())
    }

    fn keep(mut self: Box<Self>) -> Result<Kept, StorageError> {
        let file = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("kept twice"))?
            .into_inner()
            .map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let sha256 = hex::encode(std::mem::take(&mut self.hash).finalize());
        let path = self.store.final_path(&sha256);
        let dir = path.parent().unwrap_or(&self.store.root).to_owned();
        std::fs::create_dir_all(&dir)?;
        // The same bytes already kept: one copy is enough (the temporary
        // file goes with this writer when it drops).
        if !path.exists() {
            std::fs::rename(&self.temp, &path)?;
        }
        // The rename is durable once its directory is.
        sync_dir(&dir)?;
        Ok(Kept {
            sha256,
            size: self.size,
        })
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // A receive that failed or was abandoned leaves nothing behind.
        let _ = std::fs::remove_file(&self.temp);
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (FileStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("carehub-dicom-store-{:016x}", rand_u64()));
        (FileStore::open(&dir).expect("open"), dir)
    }

    #[test]
    fn bytes_written_in_pieces_are_kept_under_their_hash_once() {
        let (store, dir) = store();
        let mut w = store.begin(1 << 20).expect("begin");
        w.write(b"DICM").expect("write");
        w.write(&[7u8; 5000]).expect("write");
        let kept = w.keep().expect("keep");
        assert_eq!(kept.size, 5004);
        let mut all = b"DICM".to_vec();
        all.extend([7u8; 5000]);
        assert_eq!(kept.sha256, hex::encode(Sha256::digest(&all)));
        let path = store.path_of(&kept.sha256).expect("a hash has a path");
        assert_eq!(std::fs::read(&path).expect("read"), all);

        // The same bytes again: the same file, no second copy, nothing left incoming.
        let mut w = store.begin(1 << 20).expect("begin");
        w.write(&all).expect("write");
        assert_eq!(w.keep().expect("keep"), kept);
        assert_eq!(std::fs::read_dir(dir.join("incoming")).expect("dir").count(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_instance_over_its_limit_or_abandoned_leaves_nothing() {
        let (store, dir) = store();
        let mut w = store.begin(10).expect("begin");
        w.write(&[1u8; 8]).expect("under the limit");
        assert!(matches!(w.write(&[1u8; 8]), Err(StorageError::TooLarge { limit: 10 })));
        drop(w);
        let w = store.begin(10).expect("begin");
        drop(w);
        assert_eq!(std::fs::read_dir(dir.join("incoming")).expect("dir").count(), 0);
        assert!(store.path_of("../../etc/passwd").is_none(), "only a hash names a file");
        assert!(store.path_of(&"A".repeat(64)).is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
