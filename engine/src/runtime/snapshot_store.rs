//! The on-disk snapshots of one group: where `on_snapshot_save` writes and
//! where `on_snapshot_load` reads.
//!
//! Sits beside the WAL, below the shard: a snapshot lets the WAL drop the
//! entries it covers. This module only stores and verifies; a snapshot
//! received from a leader is written through it by `snapshot_stream.rs`.
//!
//! Layout of a group's directory:
//!
//! ```text
//! snapshot-<index>-<term>/data   the state machine's bytes, as written
//! snapshot-<index>-<term>/meta   what the snapshot is, and both checksums
//! tmp-snapshot-<index>-<term>/   a snapshot being written (never complete)
//! damaged-snapshot-<index>-<term>/ a snapshot a restart found damaged and
//!                                 skipped, set aside for a look by hand
//! ```
//!
//! A snapshot becomes visible only by the rename of its finished temp
//! directory, after its files are fsynced; the parent directory is fsynced
//! after the rename. So a crash at any point leaves either a complete
//! snapshot or a temp directory, which [`SnapshotStore::open`] removes.
//! The metadata format is in `docs/architecture.md` ("Snapshot storage").

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::raft::{Configuration, GroupId, LogIndex, NodeId, SnapshotMeta, Term};

/// Complete snapshots kept per group; older ones are deleted once a newer
/// one is durable. Two, so that a newest one found damaged on restart still
/// leaves one to fall back on.
pub const SNAPSHOTS_KEPT: usize = 2;
/// Largest metadata file read or written, in bytes. The metadata is read
/// whole into memory; the client-session table is most of it.
pub const SNAPSHOT_METADATA_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Buffer between the state machine's writes and the data file, in bytes.
pub const SNAPSHOT_WRITE_BUFFER_BYTES_MAX: usize = 1024 * 1024;
/// Buffer between the data file and the state machine's reads, in bytes.
pub const SNAPSHOT_READ_BUFFER_BYTES_MAX: usize = 1024 * 1024;
/// The metadata format this version writes. It reads this one and every
/// earlier one: version 1 had no address book.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;
/// The oldest metadata format this version reads.
pub const SNAPSHOT_FORMAT_VERSION_MIN: u32 = 1;

const METADATA_MAGIC: [u8; 8] = *b"CRFTSNAP";
const DATA_FILE: &str = "data";
const METADATA_FILE: &str = "meta";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const TEMP_PREFIX: &str = "tmp-snapshot-";
const DAMAGED_PREFIX: &str = "damaged-";

/// What went wrong with a snapshot store, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotStoreError {
    /// A file-system call failed.
    #[error("snapshot store: cannot {action} {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// The metadata is, or would be, larger than its bound.
    #[error("snapshot metadata {path}: {size} bytes exceed the bound of {bound}")]
    MetadataTooLarge {
        /// The metadata file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// [`SNAPSHOT_METADATA_BYTES_MAX`].
        bound: usize,
    },
    /// The metadata ends inside a field.
    #[error("snapshot metadata {path} truncated in the {field} at byte {offset}")]
    MetadataTruncated {
        /// The metadata file.
        path: PathBuf,
        /// The field being read.
        field: &'static str,
        /// Where it starts.
        offset: usize,
    },
    /// The metadata does not start with the snapshot magic.
    #[error("snapshot metadata {path} is not a snapshot metadata file (bad magic)")]
    BadMagic {
        /// The metadata file.
        path: PathBuf,
    },
    /// A metadata format this version does not read.
    #[error("snapshot metadata {path} has format version {version}; this build reads {SNAPSHOT_FORMAT_VERSION_MIN} to {SNAPSHOT_FORMAT_VERSION}")]
    UnsupportedFormat {
        /// The metadata file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// The metadata's own checksum does not match its bytes.
    #[error("snapshot metadata {path}: checksum {computed:#010x} does not match the stored {stored:#010x}")]
    MetadataChecksum {
        /// The metadata file.
        path: PathBuf,
        /// The checksum written.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// The metadata has bytes after its checksum.
    #[error("snapshot metadata {path} has {extra} bytes after its checksum")]
    MetadataTrailing {
        /// The metadata file.
        path: PathBuf,
        /// How many.
        extra: usize,
    },
    /// The metadata belongs to another group.
    #[error("snapshot {path} belongs to group {found}, not to group {expected}")]
    WrongGroup {
        /// The snapshot directory.
        path: PathBuf,
        /// This store's group.
        expected: GroupId,
        /// The group in the metadata.
        found: GroupId,
    },
    /// The directory's name and the metadata disagree on index or term.
    #[error("snapshot {path}: metadata says index {index} term {term}, unlike its name")]
    NameMismatch {
        /// The snapshot directory.
        path: PathBuf,
        /// The index in the metadata.
        index: LogIndex,
        /// The term in the metadata.
        term: Term,
    },
    /// The data file's length is not the one the metadata records.
    #[error("snapshot data {path}: {actual} bytes, the metadata records {expected}")]
    DataLength {
        /// The data file.
        path: PathBuf,
        /// The length recorded.
        expected: u64,
        /// The length found.
        actual: u64,
    },
    /// The data file's checksum is not the one the metadata records.
    #[error("snapshot data {path}: checksum {computed:#010x} does not match the recorded {stored:#010x}")]
    DataChecksum {
        /// The data file.
        path: PathBuf,
        /// The checksum recorded.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// A complete snapshot with this index and term already exists.
    #[error("snapshot {path} already exists")]
    Exists {
        /// The snapshot directory.
        path: PathBuf,
    },
}

/// Shorthand for this module's results.
pub type SnapshotResult<T> = Result<T, SnapshotStoreError>;

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> SnapshotStoreError + 'a {
    move |source| SnapshotStoreError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Which snapshot: the last index it covers and that entry's term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId {
    /// The last index covered.
    pub index: LogIndex,
    /// Its term.
    pub term: Term,
}

impl SnapshotId {
    fn directory_name(self) -> String {
        format!("{SNAPSHOT_PREFIX}{}-{}", self.index.0, self.term.0)
    }

    fn parse(name: &str) -> Option<SnapshotId> {
        let rest = name.strip_prefix(SNAPSHOT_PREFIX)?;
        let (index, term) = rest.split_once('-')?;
        let index: u64 = index.parse().ok()?;
        let term: u64 = term.parse().ok()?;
        // Only the canonical spelling, so one id has one directory.
        let id = SnapshotId {
            index: LogIndex(index),
            term: Term(term),
        };
        (id.directory_name() == name).then_some(id)
    }
}

/// A complete snapshot whose metadata and data checksums verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// Its directory.
    pub path: PathBuf,
    /// The group it belongs to.
    pub group: GroupId,
    /// Last included index and term, and the configuration in force there.
    pub meta: SnapshotMeta,
    /// The client-session table as of `meta.index` (`SessionTable::encode`).
    pub sessions: Vec<u8>,
    /// The group's address book as of `meta.index` (the runtime's
    /// address-book entry encoding, opaque here; empty: none).
    pub addresses: Vec<u8>,
    /// The data file's length in bytes.
    pub data_bytes: u64,
    /// The data file's CRC32.
    pub data_crc: u32,
}

impl StoredSnapshot {
    /// Which snapshot this is.
    pub fn id(&self) -> SnapshotId {
        SnapshotId {
            index: self.meta.index,
            term: self.meta.term,
        }
    }

    /// The path of its data file.
    pub fn data_path(&self) -> PathBuf {
        self.path.join(DATA_FILE)
    }

    /// The metadata file's bytes, as [`SnapshotStore::decode_metadata`]
    /// reads them back: the prefix of an InstallSnapshot stream.
    pub fn encoded_metadata(&self) -> Vec<u8> {
        Metadata {
            group: self.group,
            meta: self.meta.clone(),
            sessions: self.sessions.clone(),
            addresses: self.addresses.clone(),
            data_bytes: self.data_bytes,
            data_crc: self.data_crc,
        }
        .encode()
    }

    /// A reader of the data for `on_snapshot_load`. It checks length and
    /// checksum again as it reads and fails the read that reaches the end
    /// if they do not match (the file may have changed since it was
    /// verified).
    pub fn open_reader(&self) -> SnapshotResult<SnapshotReader> {
        let path = self.data_path();
        let file = File::open(&path).map_err(io_error(&path, "open"))?;
        Ok(SnapshotReader {
            inner: BufReader::with_capacity(SNAPSHOT_READ_BUFFER_BYTES_MAX, file),
            path,
            hasher: crc32fast::Hasher::new(),
            bytes_read: 0,
            expected_bytes: self.data_bytes,
            expected_crc: self.data_crc,
        })
    }
}

/// A snapshot's metadata decoded from bytes received from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The group it names.
    pub group: GroupId,
    /// Last included index and term, and the configuration in force there.
    pub meta: SnapshotMeta,
    /// The client-session table.
    pub sessions: Vec<u8>,
    /// The group's address book (empty: none).
    pub addresses: Vec<u8>,
    /// The data's length in bytes.
    pub data_bytes: u64,
    /// The data's CRC32.
    pub data_crc: u32,
}

/// A snapshot that [`SnapshotStore::newest_valid`] passed over, and why.
#[derive(Debug)]
pub struct SkippedSnapshot {
    /// Its directory.
    pub path: PathBuf,
    /// What failed.
    pub reason: SnapshotStoreError,
}

/// What [`SnapshotStore::newest_valid`] found.
#[derive(Debug)]
pub struct NewestValid {
    /// The newest snapshot that verified, if any.
    pub snapshot: Option<StoredSnapshot>,
    /// Newer snapshots that failed, newest first (for a warning each).
    pub skipped: Vec<SkippedSnapshot>,
}

/// The snapshots of one group in one directory.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    group: GroupId,
}

impl SnapshotStore {
    /// Opens (creating if needed) `dir` for `group`'s snapshots, and removes
    /// the temp directories a crash left: they were never complete.
    pub fn open(dir: &Path, group: GroupId) -> SnapshotResult<SnapshotStore> {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(io_error(dir, "create directory"))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_directory(parent)?;
            }
        }
        let mut removed = false;
        for name in directory_names(dir)? {
            if name.starts_with(TEMP_PREFIX) {
                let path = dir.join(&name);
                fs::remove_dir_all(&path).map_err(io_error(&path, "remove leftover temp directory"))?;
                removed = true;
            }
        }
        if removed {
            sync_directory(dir)?;
        }
        Ok(SnapshotStore {
            dir: dir.to_path_buf(),
            group,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The complete snapshots (by name; not verified), oldest first.
    pub fn list(&self) -> SnapshotResult<Vec<SnapshotId>> {
        let mut ids: Vec<SnapshotId> = directory_names(&self.dir)?
            .iter()
            .filter_map(|name| SnapshotId::parse(name))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The directory of a complete snapshot.
    pub fn snapshot_path(&self, id: SnapshotId) -> PathBuf {
        self.dir.join(id.directory_name())
    }

    /// Starts writing a snapshot covering `meta`, with the client-session
    /// table `sessions`. Nothing is visible until [`SnapshotWriter::finish`];
    /// a writer dropped unfinished removes its temp directory.
    pub fn begin(&self, meta: SnapshotMeta, sessions: Vec<u8>) -> SnapshotResult<SnapshotWriter> {
        self.begin_with_addresses(meta, sessions, Vec::new())
    }

    /// [`begin`](Self::begin), with the group's address book as of
    /// `meta.index` (bytes the store keeps and returns, opaque to it), so
    /// that a node restarting from the snapshot still knows the addresses
    /// of members added at run time once the log that named them is gone.
    pub fn begin_with_addresses(
        &self,
        meta: SnapshotMeta,
        sessions: Vec<u8>,
        addresses: Vec<u8>,
    ) -> SnapshotResult<SnapshotWriter> {
        let id = SnapshotId {
            index: meta.index,
            term: meta.term,
        };
        let final_dir = self.snapshot_path(id);
        if final_dir.exists() {
            return Err(SnapshotStoreError::Exists { path: final_dir });
        }
        let temp_dir = self.dir.join(format!("{TEMP_PREFIX}{}-{}", id.index.0, id.term.0));
        let metadata = Metadata {
            group: self.group,
            meta,
            sessions,
            addresses,
            data_bytes: 0,
            data_crc: 0,
        };
        let size = metadata.encode().len();
        if size > SNAPSHOT_METADATA_BYTES_MAX {
            return Err(SnapshotStoreError::MetadataTooLarge {
                path: temp_dir.join(METADATA_FILE),
                size: size as u64,
                bound: SNAPSHOT_METADATA_BYTES_MAX,
            });
        }
        fs::create_dir(&temp_dir).map_err(io_error(&temp_dir, "create temp directory"))?;
        let data_path = temp_dir.join(DATA_FILE);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&data_path)
            .map_err(io_error(&data_path, "create"))?;
        Ok(SnapshotWriter {
            store_dir: self.dir.clone(),
            temp_dir,
            final_dir,
            data_path,
            file: Some(BufWriter::with_capacity(SNAPSHOT_WRITE_BUFFER_BYTES_MAX, file)),
            direct: None,
            hasher: crc32fast::Hasher::new(),
            metadata,
        })
    }

    /// Decodes and verifies metadata bytes (from [`StoredSnapshot::encoded_metadata`],
    /// possibly another node's); `source` names them in errors.
    pub fn decode_metadata(&self, source: &Path, bytes: &[u8]) -> SnapshotResult<SnapshotHeader> {
        let metadata = Metadata::decode(source, bytes)?;
        if metadata.group != self.group {
            return Err(SnapshotStoreError::WrongGroup {
                path: source.to_path_buf(),
                expected: self.group,
                found: metadata.group,
            });
        }
        Ok(SnapshotHeader {
            group: metadata.group,
            meta: metadata.meta,
            sessions: metadata.sessions,
            addresses: metadata.addresses,
            data_bytes: metadata.data_bytes,
            data_crc: metadata.data_crc,
        })
    }

    /// The complete snapshot `id`, verified.
    pub fn load(&self, id: SnapshotId) -> SnapshotResult<StoredSnapshot> {
        self.verify(id, &self.snapshot_path(id))
    }

    /// The newest snapshot whose metadata and data verify. Each newer one
    /// that fails is skipped for the one before it and reported.
    pub fn newest_valid(&self) -> SnapshotResult<NewestValid> {
        let mut skipped = Vec::new();
        for id in self.list()?.into_iter().rev() {
            let path = self.snapshot_path(id);
            match self.verify(id, &path) {
                Ok(snapshot) => {
                    return Ok(NewestValid {
                        snapshot: Some(snapshot),
                        skipped,
                    })
                }
                Err(reason) => skipped.push(SkippedSnapshot { path, reason }),
            }
        }
        Ok(NewestValid {
            snapshot: None,
            skipped,
        })
    }

    fn verify(&self, id: SnapshotId, path: &Path) -> SnapshotResult<StoredSnapshot> {
        let metadata_path = path.join(METADATA_FILE);
        let metadata = Metadata::read(&metadata_path)?;
        if metadata.group != self.group {
            return Err(SnapshotStoreError::WrongGroup {
                path: path.to_path_buf(),
                expected: self.group,
                found: metadata.group,
            });
        }
        if metadata.meta.index != id.index || metadata.meta.term != id.term {
            return Err(SnapshotStoreError::NameMismatch {
                path: path.to_path_buf(),
                index: metadata.meta.index,
                term: metadata.meta.term,
            });
        }
        let data_path = path.join(DATA_FILE);
        let mut file = File::open(&data_path).map_err(io_error(&data_path, "open"))?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buffer = vec![0u8; SNAPSHOT_READ_BUFFER_BYTES_MAX];
        let mut length = 0u64;
        loop {
            let n = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(&data_path, "read")(e)),
            };
            hasher.update(&buffer[..n]);
            length += n as u64;
        }
        if length != metadata.data_bytes {
            return Err(SnapshotStoreError::DataLength {
                path: data_path,
                expected: metadata.data_bytes,
                actual: length,
            });
        }
        let computed = hasher.finalize();
        if computed != metadata.data_crc {
            return Err(SnapshotStoreError::DataChecksum {
                path: data_path,
                stored: metadata.data_crc,
                computed,
            });
        }
        Ok(StoredSnapshot {
            path: path.to_path_buf(),
            group: metadata.group,
            meta: metadata.meta,
            sessions: metadata.sessions,
            addresses: metadata.addresses,
            data_bytes: metadata.data_bytes,
            data_crc: metadata.data_crc,
        })
    }

    /// Moves the snapshots a restart skipped as damaged
    /// ([`NewestValid::skipped`]) out of the way, each to
    /// `damaged-<its name>` in the store, once the restart went on from an
    /// older one. Left in place, a damaged snapshot would still count as one
    /// of the [`SNAPSHOTS_KEPT`]: the next snapshot would then delete the
    /// valid older one, and compaction would let the WAL go past it, leaving
    /// no fallback. Those set aside by an earlier restart are deleted first,
    /// so at most [`SNAPSHOTS_KEPT`] damaged directories stay. Returns where
    /// each went.
    pub fn set_aside(&self, skipped: &[SkippedSnapshot]) -> SnapshotResult<Vec<PathBuf>> {
        if skipped.is_empty() {
            return Ok(Vec::new());
        }
        for name in directory_names(&self.dir)? {
            if name.starts_with(DAMAGED_PREFIX) {
                let path = self.dir.join(&name);
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.map_err(io_error(&path, "remove a snapshot set aside before"))?;
            }
        }
        let mut moved = Vec::with_capacity(skipped.len());
        for snapshot in skipped {
            let Some(name) = snapshot.path.file_name() else {
                continue;
            };
            let mut aside = std::ffi::OsString::from(DAMAGED_PREFIX);
            aside.push(name);
            let to = self.dir.join(aside);
            fs::rename(&snapshot.path, &to).map_err(io_error(&snapshot.path, "set aside damaged snapshot"))?;
            moved.push(to);
        }
        sync_directory(&self.dir)?;
        Ok(moved)
    }

    /// Deletes all but the newest [`SNAPSHOTS_KEPT`] complete snapshots,
    /// never `keep`. Each deletion is made durable before the next.
    fn retain(&self, keep: SnapshotId) -> SnapshotResult<()> {
        let ids = self.list()?;
        let excess = ids.len().saturating_sub(SNAPSHOTS_KEPT);
        for id in ids.into_iter().take(excess).filter(|id| *id != keep) {
            let path = self.snapshot_path(id);
            // Rename to a temp name first: a crash mid-removal then leaves a
            // temp directory (removed on open), never a partial snapshot.
            let doomed = self.dir.join(format!("{TEMP_PREFIX}{}-{}-old", id.index.0, id.term.0));
            fs::rename(&path, &doomed).map_err(io_error(&path, "rename old snapshot for removal"))?;
            sync_directory(&self.dir)?;
            fs::remove_dir_all(&doomed).map_err(io_error(&doomed, "remove old snapshot"))?;
        }
        sync_directory(&self.dir)
    }
}

/// Writes one snapshot's data; the state machine's `on_snapshot_save`
/// writes into it through [`std::io::Write`].
#[derive(Debug)]
pub struct SnapshotWriter {
    store_dir: PathBuf,
    temp_dir: PathBuf,
    final_dir: PathBuf,
    data_path: PathBuf,
    /// `None` once finished (or failed while finishing).
    file: Option<BufWriter<File>>,
    /// The data's direct writes, if [`write_direct`](Self::write_direct)
    /// took: then `file` writes nothing and only fsyncs.
    direct: Option<super::direct_write::DirectFile>,
    hasher: crc32fast::Hasher,
    metadata: Metadata,
}

impl SnapshotWriter {
    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.metadata.data_bytes
    }

    /// The temp directory being written.
    pub fn temp_dir(&self) -> &Path {
        &self.temp_dir
    }

    /// Writes the data from here on with `O_DIRECT`, around the page cache
    /// (`direct_write.rs`; a received snapshot, which nothing reads while it
    /// arrives). Only before any data is written; false if the file system
    /// refuses direct writes, or data was written: the writes stay
    /// buffered. The fsync before the rename is the same either way.
    pub fn write_direct(&mut self) -> SnapshotResult<bool> {
        if self.direct.is_some() {
            return Ok(true);
        }
        if self.metadata.data_bytes > 0 {
            return Ok(false);
        }
        let direct = super::direct_write::DirectFile::open(&self.data_path)
            .map_err(io_error(&self.data_path, "open for direct writes"))?;
        self.direct = direct;
        Ok(self.direct.is_some())
    }

    /// True if the data is written with `O_DIRECT` (no dirty pages to
    /// write back).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Flushes what is buffered and opens the data file a second time, for
    /// a caller to fsync on another thread while writing goes on (so that
    /// [`finish`](Self::finish)'s own fsync has little left to write). A
    /// second open file description, not a duplicate of the writer's: a
    /// writeback error seen by that fsync is still reported to the writer's
    /// own fsync in `finish`, so a failed background sync cannot hide.
    pub fn flushed_data_file(&mut self) -> SnapshotResult<File> {
        let Some(writer) = self.file.as_mut() else {
            unreachable!("a writer is used only before it is finished");
        };
        writer.flush().map_err(io_error(&self.data_path, "write"))?;
        OpenOptions::new()
            .write(true)
            .open(&self.data_path)
            .map_err(io_error(&self.data_path, "open"))
    }

    /// Makes the snapshot durable and visible: fsyncs the data, writes and
    /// fsyncs the metadata, renames the temp directory to its final name,
    /// fsyncs the store directory; then deletes snapshots beyond
    /// [`SNAPSHOTS_KEPT`].
    pub fn finish(self) -> SnapshotResult<StoredSnapshot> {
        self.finish_checked(None)
    }

    /// [`finish`](Self::finish), but only if the data written has
    /// `expected_bytes` bytes with CRC32 `expected_crc` (a snapshot received
    /// from a peer, whose metadata said so); otherwise nothing is published
    /// and the temp directory is removed.
    pub fn finish_expecting(self, expected_bytes: u64, expected_crc: u32) -> SnapshotResult<StoredSnapshot> {
        self.finish_checked(Some((expected_bytes, expected_crc)))
    }

    fn finish_checked(mut self, expected: Option<(u64, u32)>) -> SnapshotResult<StoredSnapshot> {
        if let Some((expected_bytes, expected_crc)) = expected {
            if self.metadata.data_bytes != expected_bytes {
                return Err(SnapshotStoreError::DataLength {
                    path: self.data_path.clone(),
                    expected: expected_bytes,
                    actual: self.metadata.data_bytes,
                });
            }
            let computed = self.hasher.clone().finalize();
            if computed != expected_crc {
                return Err(SnapshotStoreError::DataChecksum {
                    path: self.data_path.clone(),
                    stored: expected_crc,
                    computed,
                });
            }
        }
        if let Some(direct) = self.direct.take() {
            direct
                .finish(self.metadata.data_bytes)
                .map_err(io_error(&self.data_path, "write"))?;
        }
        let Some(writer) = self.file.take() else {
            unreachable!("a writer is finished only once (finish takes it by value)");
        };
        let file = writer
            .into_inner()
            .map_err(|e| io_error(&self.data_path, "write")(e.into_error()))?;
        file.sync_all().map_err(io_error(&self.data_path, "fsync"))?;
        drop(file);
        self.metadata.data_crc = self.hasher.clone().finalize();

        let metadata_path = self.temp_dir.join(METADATA_FILE);
        let bytes = self.metadata.encode();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&metadata_path)
            .map_err(io_error(&metadata_path, "create"))?;
        file.write_all(&bytes).map_err(io_error(&metadata_path, "write"))?;
        file.sync_all().map_err(io_error(&metadata_path, "fsync"))?;
        drop(file);
        // The new directory's entries (data, meta) must be durable before
        // the rename can expose them.
        sync_directory(&self.temp_dir)?;

        fs::rename(&self.temp_dir, &self.final_dir).map_err(io_error(&self.temp_dir, "rename to final name"))?;
        sync_directory(&self.store_dir)?;

        let store = SnapshotStore {
            dir: self.store_dir.clone(),
            group: self.metadata.group,
        };
        let snapshot = StoredSnapshot {
            path: self.final_dir.clone(),
            group: self.metadata.group,
            meta: self.metadata.meta.clone(),
            sessions: std::mem::take(&mut self.metadata.sessions),
            addresses: std::mem::take(&mut self.metadata.addresses),
            data_bytes: self.metadata.data_bytes,
            data_crc: self.metadata.data_crc,
        };
        store.retain(snapshot.id())?;
        Ok(snapshot)
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(direct) = self.direct.as_mut() {
            direct.write(buf).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("snapshot store: cannot write {}: {e}", self.data_path.display()),
                )
            })?;
            self.hasher.update(buf);
            self.metadata.data_bytes += buf.len() as u64;
            return Ok(buf.len());
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("snapshot writer already finished"));
        };
        // The state machine sees this error (and may wrap it): it names the
        // file, so that a full disk says which one; the kind is kept.
        let n = file.write(buf).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("snapshot store: cannot write {}: {e}", self.data_path.display()),
            )
        })?;
        self.hasher.update(&buf[..n]);
        self.metadata.data_bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // Unfinished (abandoned, or finish failed before the rename): the
        // temp directory is garbage. Best effort; open removes it otherwise.
        if self.temp_dir.exists() {
            let _ = fs::remove_dir_all(&self.temp_dir);
        }
    }
}

/// Reads a snapshot's data for `on_snapshot_load`, verifying length and
/// checksum as it goes; the read that reaches the end fails with
/// `InvalidData` if either is wrong.
#[derive(Debug)]
pub struct SnapshotReader {
    inner: BufReader<File>,
    path: PathBuf,
    hasher: crc32fast::Hasher,
    bytes_read: u64,
    expected_bytes: u64,
    expected_crc: u32,
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes_read += n as u64;
        if self.bytes_read > self.expected_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot data {}: longer than the recorded {} bytes",
                    self.path.display(),
                    self.expected_bytes
                ),
            ));
        }
        if n == 0 && !buf.is_empty() {
            let computed = self.hasher.clone().finalize();
            if self.bytes_read != self.expected_bytes || computed != self.expected_crc {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "snapshot data {}: {} bytes with checksum {computed:#010x}, the metadata records {} bytes \
                         with {:#010x}",
                        self.path.display(),
                        self.bytes_read,
                        self.expected_bytes,
                        self.expected_crc
                    ),
                ));
            }
        }
        Ok(n)
    }
}

/// The metadata file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Metadata {
    group: GroupId,
    meta: SnapshotMeta,
    sessions: Vec<u8>,
    addresses: Vec<u8>,
    data_bytes: u64,
    data_crc: u32,
}

impl Metadata {
    /// magic, version, group, index, term, four node sets (voters, outgoing
    /// voters, learners, learners next: count u32 then ids u64), sessions
    /// (length u32 then bytes), the address book (length u32 then bytes;
    /// not in version 1), data length u64, data CRC32, then the CRC32 of
    /// everything before it. Little-endian.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&METADATA_MAGIC);
        out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.group.0.to_le_bytes());
        out.extend_from_slice(&self.meta.index.0.to_le_bytes());
        out.extend_from_slice(&self.meta.term.0.to_le_bytes());
        let conf = &self.meta.configuration;
        for set in [&conf.voters, &conf.outgoing_voters, &conf.learners, &conf.learners_next] {
            out.extend_from_slice(&(set.len() as u32).to_le_bytes());
            for node in set {
                out.extend_from_slice(&node.0.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.sessions);
        out.extend_from_slice(&(self.addresses.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.addresses);
        out.extend_from_slice(&self.data_bytes.to_le_bytes());
        out.extend_from_slice(&self.data_crc.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn read(path: &Path) -> SnapshotResult<Metadata> {
        let file = File::open(path).map_err(io_error(path, "open"))?;
        let size = file.metadata().map_err(io_error(path, "stat"))?.len();
        if size > SNAPSHOT_METADATA_BYTES_MAX as u64 {
            return Err(SnapshotStoreError::MetadataTooLarge {
                path: path.to_path_buf(),
                size,
                bound: SNAPSHOT_METADATA_BYTES_MAX,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(SNAPSHOT_METADATA_BYTES_MAX as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error(path, "read"))?;
        Metadata::decode(path, &bytes)
    }

    fn decode(path: &Path, bytes: &[u8]) -> SnapshotResult<Metadata> {
        if bytes.len() > SNAPSHOT_METADATA_BYTES_MAX {
            return Err(SnapshotStoreError::MetadataTooLarge {
                path: path.to_path_buf(),
                size: bytes.len() as u64,
                bound: SNAPSHOT_METADATA_BYTES_MAX,
            });
        }
        let mut reader = FieldReader { path, bytes, offset: 0 };
        if reader.take(8, "magic")? != METADATA_MAGIC {
            return Err(SnapshotStoreError::BadMagic {
                path: path.to_path_buf(),
            });
        }
        let version = reader.u32("format version")?;
        if !(SNAPSHOT_FORMAT_VERSION_MIN..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
            return Err(SnapshotStoreError::UnsupportedFormat {
                path: path.to_path_buf(),
                version,
            });
        }
        // Check the whole before trusting any length field in it.
        if bytes.len() < 4 + reader.offset {
            return Err(reader.truncated("checksum"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(tail.try_into().expect("four bytes"));
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(SnapshotStoreError::MetadataChecksum {
                path: path.to_path_buf(),
                stored,
                computed,
            });
        }
        let mut reader = FieldReader {
            path,
            bytes: body,
            offset: reader.offset,
        };
        let group = GroupId(reader.u64("group")?);
        let index = LogIndex(reader.u64("index")?);
        let term = Term(reader.u64("term")?);
        let mut sets = Vec::with_capacity(4);
        for field in ["voters", "outgoing voters", "learners", "learners next"] {
            let count = reader.u32(field)? as usize;
            let ids = reader.take(count.saturating_mul(8), field)?;
            sets.push(
                ids.chunks_exact(8)
                    .map(|id| NodeId(u64::from_le_bytes(id.try_into().expect("eight bytes"))))
                    .collect(),
            );
        }
        let learners_next = sets.pop().expect("four sets");
        let learners = sets.pop().expect("four sets");
        let outgoing_voters = sets.pop().expect("four sets");
        let voters = sets.pop().expect("four sets");
        let sessions_length = reader.u32("session table length")? as usize;
        let sessions = reader.take(sessions_length, "session table")?.to_vec();
        let addresses = if version >= 2 {
            let addresses_length = reader.u32("address book length")? as usize;
            reader.take(addresses_length, "address book")?.to_vec()
        } else {
            Vec::new()
        };
        let data_bytes = reader.u64("data length")?;
        let data_crc = reader.u32("data checksum")?;
        if reader.offset != body.len() {
            return Err(SnapshotStoreError::MetadataTrailing {
                path: path.to_path_buf(),
                extra: body.len() - reader.offset,
            });
        }
        Ok(Metadata {
            group,
            meta: SnapshotMeta {
                index,
                term,
                configuration: Configuration {
                    voters,
                    outgoing_voters,
                    learners,
                    learners_next,
                },
            },
            sessions,
            addresses,
            data_bytes,
            data_crc,
        })
    }
}

struct FieldReader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> FieldReader<'a> {
    fn truncated(&self, field: &'static str) -> SnapshotStoreError {
        SnapshotStoreError::MetadataTruncated {
            path: self.path.to_path_buf(),
            field,
            offset: self.offset,
        }
    }

    fn take(&mut self, length: usize, field: &'static str) -> SnapshotResult<&'a [u8]> {
        let end = self.offset.checked_add(length).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.truncated(field));
        };
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    fn u32(&mut self, field: &'static str) -> SnapshotResult<u32> {
        Ok(u32::from_le_bytes(self.take(4, field)?.try_into().expect("four bytes")))
    }

    fn u64(&mut self, field: &'static str) -> SnapshotResult<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, field)?.try_into().expect("eight bytes"),
        ))
    }
}

fn directory_names(dir: &Path) -> SnapshotResult<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir, "list directory"))? {
        let entry = entry.map_err(io_error(dir, "list directory"))?;
        // A name that is not UTF-8 is not one of ours; leave it alone.
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

fn sync_directory(dir: &Path) -> SnapshotResult<()> {
    let handle = File::open(dir).map_err(io_error(dir, "open directory"))?;
    handle.sync_all().map_err(io_error(dir, "fsync directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metadata {
        Metadata {
            group: GroupId(7),
            meta: SnapshotMeta {
                index: LogIndex(42),
                term: Term(3),
                configuration: Configuration {
                    voters: [NodeId(1), NodeId(2), NodeId(3)].into_iter().collect(),
                    outgoing_voters: [NodeId(1), NodeId(4)].into_iter().collect(),
                    learners: [NodeId(5)].into_iter().collect(),
                    learners_next: [NodeId(4)].into_iter().collect(),
                },
            },
            sessions: vec![9, 8, 7],
            addresses: vec![3, 1, 0, 0, 0],
            data_bytes: 1234,
            data_crc: 0xdead_beef,
        }
    }

    #[test]
    fn a_write_that_fails_names_the_data_file_and_keeps_its_kind_and_the_temp_directory_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path(), GroupId(7)).unwrap();
        let mut writer = store.begin(sample().meta, Vec::new()).unwrap();
        let data_path = writer.data_path.clone();
        // A file that is always full stands in for a full disk.
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        writer.file = Some(BufWriter::with_capacity(SNAPSHOT_WRITE_BUFFER_BYTES_MAX, full));
        // Larger than the buffer: the write reaches the file.
        let error = writer
            .write_all(&vec![7u8; 2 * SNAPSHOT_WRITE_BUFFER_BYTES_MAX])
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull, "{error}");
        let text = error.to_string();
        assert!(text.contains(&data_path.display().to_string()), "{text}");
        assert!(text.contains("No space left on device"), "{text}");
        let temp_dir = writer.temp_dir().to_path_buf();
        assert!(temp_dir.is_dir());
        drop(writer);
        assert!(!temp_dir.exists(), "the failed snapshot's temp directory is left");
        assert_eq!(store.list().unwrap(), Vec::new());
    }

    #[test]
    fn metadata_decodes_to_what_was_encoded() {
        let metadata = sample();
        let decoded = Metadata::decode(Path::new("m"), &metadata.encode()).unwrap();
        assert_eq!(decoded, metadata);
    }

    #[test]
    fn version_1_metadata_without_an_address_book_is_still_read() {
        let metadata = Metadata {
            addresses: Vec::new(),
            ..sample()
        };
        // Version 1: no address-book field; the CRC over the whole.
        let mut bytes = metadata.encode();
        bytes.truncate(bytes.len() - 4);
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        let book_at = bytes.len() - 12 - 4;
        bytes.drain(book_at..book_at + 4);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(Metadata::decode(Path::new("m"), &bytes).unwrap(), metadata);
        bytes[8..12].copy_from_slice(&(SNAPSHOT_FORMAT_VERSION + 1).to_le_bytes());
        assert!(matches!(
            Metadata::decode(Path::new("m"), &bytes),
            Err(SnapshotStoreError::UnsupportedFormat { .. })
        ));
    }

    #[test]
    fn every_truncation_of_metadata_is_an_error_not_a_panic() {
        let bytes = sample().encode();
        for length in 0..bytes.len() {
            assert!(
                Metadata::decode(Path::new("m"), &bytes[..length]).is_err(),
                "length {length}"
            );
        }
    }

    #[test]
    fn only_canonical_directory_names_are_snapshots() {
        let id = SnapshotId::parse("snapshot-10-2").unwrap();
        assert_eq!((id.index, id.term), (LogIndex(10), Term(2)));
        for name in [
            "snapshot-010-2",
            "snapshot-10",
            "snapshot-10-2-x",
            "tmp-snapshot-10-2",
            "snapshot--1-2",
        ] {
            assert_eq!(SnapshotId::parse(name), None, "{name}");
        }
    }
}
