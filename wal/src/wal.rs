//! [`Wal`]: the shard's log. Opening recovers; appends are synchronous and
//! only buffer; [`Wal::sync`] starts a group commit and resolves when it is
//! durable; reads come from the segments' mmaps (or, for records not yet
//! written, from the in-memory batches).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use memmap2::Mmap;

use crate::config::Config;
use crate::error::{Error, IoOp, Result};
use crate::format::{decode_record, Decoded, FlushMarker, HardState, Record, ENTRY_FIXED_BYTES, RECORD_PREFIX_BYTES};
use crate::fs::{DmaFs, FileSystem};
use crate::index::{EntryLocation, GroupState, SegmentHolders};
use crate::recovery::{
    map_segment, recover, recover_keeping_payloads, release_pages, write_segment_range, write_segment_range_off_thread,
    SegmentRange, TornTail, SEGMENT_RANGE_FILE_NAME,
};
use crate::writer::{
    flush, prepare_spare, run_flusher, Batch, Segment, State, SyncFuture, WriterStats, BATCH_CAPACITY_MIN_BYTES,
};

/// What opening the WAL found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The torn tail truncated (never acknowledged data), with its offset.
    pub torn_tail: Option<TornTail>,
    /// A last segment whose creation never became durable, removed.
    pub removed_blank_segment: Option<u64>,
    /// Segments found.
    pub segments: usize,
    /// The LSN of the last recovered record (0 if none).
    pub last_lsn: u64,
}

/// The group that keeps the oldest segment from being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The group.
    pub group: u64,
    /// The oldest LSN it still needs (its first entry, hard state or purge marker).
    pub lsn: u64,
    /// The segment holding that LSN.
    pub segment: u64,
}

/// An entry's payload: borrowed from a segment's mapping, or copied when the
/// entry is not written yet.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Bytes inside a mapped segment.
    Mapped {
        /// The segment's mapping.
        map: Rc<Mmap>,
        /// The payload's range in it.
        range: Range<usize>,
    },
    /// Bytes copied from a batch not yet written.
    Owned(Vec<u8>),
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Mapped { map, range } => &map[range.clone()],
            Payload::Owned(bytes) => bytes,
        }
    }
}

/// One entry read back.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its log index.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// Its type, as appended.
    pub entry_type: u8,
    /// Its payload.
    pub payload: Payload,
}

/// One entry of a run appended with [`Wal::append_entries`]; its index
/// follows from its position in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEntry<P> {
    /// Its term.
    pub term: u64,
    /// Its type, opaque to the WAL.
    pub entry_type: u8,
    /// Its payload: any bytes (`&[u8]`, `Vec<u8>`, `bytes::Bytes`, ...).
    pub payload: P,
}

impl<P: AsRef<[u8]>> NewEntry<P> {
    /// The same entry, its payload borrowed.
    pub fn as_borrowed(&self) -> NewEntry<&[u8]> {
        NewEntry {
            term: self.term,
            entry_type: self.entry_type,
            payload: self.payload.as_ref(),
        }
    }
}

/// The write-ahead log of one shard. Not `Send`: it lives on one executor.
pub struct Wal {
    shared: Rc<RefCell<State>>,
    flusher: Option<glommio::task::JoinHandle<()>>,
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir` with the real file system.
    /// Must run inside a glommio executor; it spawns the flusher there.
    pub async fn open(dir: impl AsRef<Path>, config: Config) -> Result<(Wal, OpenReport)> {
        let fs = DmaFs {
            polled_io: config.polled_io,
            dsync_small_flush_bytes: config.dsync_small_flush_bytes,
        };
        Wal::open_with_fs(dir, config, Rc::new(fs)).await
    }

    /// Opens the WAL writing through `fs` (fault injection in tests).
    pub async fn open_with_fs(
        dir: impl AsRef<Path>,
        config: Config,
        fs: Rc<dyn FileSystem>,
    ) -> Result<(Wal, OpenReport)> {
        config.validate()?;
        let dir: PathBuf = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|error| Error::io(IoOp::Directory, 0, &error))?;
        let recovered = if config.keep_recovered_payloads {
            recover_keeping_payloads(&dir, config.recovery_mode, true)?
        } else {
            recover(&dir, config.recovery_mode, true)?
        };
        // A temporary file left by a crash while the range file was made
        // never held the range (the rename is what makes it the file).
        match std::fs::remove_file(dir.join(format!("{SEGMENT_RANGE_FILE_NAME}.tmp"))) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(IoOp::RangeFile, 0, &error));
            }
            _ => {}
        }
        let (range, range_sequence) = match (recovered.range, recovered.segments.first(), recovered.segments.last()) {
            // The older one-record format: converted once, atomically.
            (Some(range), _, _) if recovered.range_sequence == 0 => {
                (Some(range), write_segment_range(&*fs, &dir, range)?)
            }
            (Some(range), _, _) => (Some(range), recovered.range_sequence),
            // Written before the range file existed, or a crash before the
            // first segment was named in it: record what is there.
            (None, Some(first), Some(last)) => {
                let range = SegmentRange {
                    oldest: first.first_lsn,
                    newest: last.first_lsn,
                };
                (Some(range), write_segment_range(&*fs, &dir, range)?)
            }
            (None, _, _) => (None, 0),
        };
        let last_lsn = recovered.next_lsn - 1;
        let report = OpenReport {
            torn_tail: recovered.torn_tail,
            removed_blank_segment: recovered.removed_blank_segment,
            segments: recovered.segments.len(),
            last_lsn,
        };
        let mut segments = VecDeque::new();
        let mut open = None;
        let count = recovered.segments.len();
        // Records go only into segments of this format version: a reader
        // of an older one refuses the segment by its version instead of
        // taking a record kind it does not know for damage.
        let last_is_older_format = recovered
            .segments
            .last()
            .is_some_and(|last| last.version < crate::format::FORMAT_VERSION);
        for (position, mapped) in recovered.segments.into_iter().enumerate() {
            let mut file = None;
            if position + 1 == count {
                let writer = fs
                    .open_segment(&mapped.path)
                    .await
                    .map_err(|error| Error::io(IoOp::Open, mapped.first_lsn, &error))?;
                file = Some(writer);
                // The next flush starts on a fresh block after the last one.
                let marker = FlushMarker {
                    nonce: mapped.nonce,
                    offset: crate::format::align_up(mapped.end_offset),
                    flush: mapped.flushes + 1,
                    previous_end: mapped.end_offset,
                    synced_through: last_lsn,
                    flags: 0,
                };
                let batch = Batch::new(
                    mapped.first_lsn,
                    marker,
                    mapped.segment_bytes,
                    &config,
                    BATCH_CAPACITY_MIN_BYTES,
                );
                open = Some(batch);
            }
            segments.push_back(Segment {
                first_lsn: mapped.first_lsn,
                path: mapped.path,
                segment_bytes: mapped.segment_bytes,
                nonce: mapped.nonce,
                file,
                created: true,
                map: Some(mapped.map),
            });
        }
        let mut state = State {
            dir,
            config,
            fs,
            groups: recovered.groups,
            segments,
            next_lsn: recovered.next_lsn,
            // Replaced below by the recovered tail or a new segment's batch.
            open: Batch::new(0, FlushMarker::default(), 0, &Config::default(), 0),
            sealed: VecDeque::new(),
            pending_bytes: 0,
            written_lsn: last_lsn,
            durable_lsn: last_lsn,
            requested_lsn: last_lsn,
            failures: 0,
            last_failure: None,
            poisoned: None,
            closed: false,
            flusher_done: false,
            flusher_waker: None,
            waiters: Vec::new(),
            stats: WriterStats::default(),
            batch_capacity: BATCH_CAPACITY_MIN_BYTES,
            recent_batches: Default::default(),
            zero_frontier: Default::default(),
            range,
            range_sequence,
            range_lock: Rc::new(glommio::sync::Semaphore::new(1)),
            spare: None,
            spare_preparing: false,
            zero_sync_in_flight: false,
            written_unnamed: None,
        };
        let recovered_a_segment = open.is_some();
        match open {
            Some(batch) => state.open = batch,
            None => state.rotate(),
        }
        let shared = Rc::new(RefCell::new(state));
        if recovered_a_segment {
            vouch_for_recovered_log(&shared).await?;
        }
        if last_is_older_format {
            shared.borrow_mut().rotate();
        }
        let flusher = glommio::spawn_local(run_flusher(shared.clone())).detach();
        // A spare left by the last run was never written (it is renamed
        // before its header goes in): the preparation replaces it.
        let created = shared.borrow().segments.back().is_some_and(|segment| segment.created);
        if created {
            prepare_spare(&shared);
        }
        Ok((
            Wal {
                shared,
                flusher: Some(flusher),
            },
            report,
        ))
    }

    /// The append path: every record of every group goes through here, so
    /// the common case is kept to one test for all refusals, one hash probe
    /// of the group, one comparison for batch and segment room, and the
    /// record encoded in place in the batch's DMA memory.
    #[inline]
    fn append(&self, record: Record<'_>) -> Result<u64> {
        let mut guard = self.shared.borrow_mut();
        let state = &mut *guard;
        let record_bytes = record.encoded_len();
        if state.refuses(record_bytes, record_bytes) {
            return Err(state
                .refusal(record_bytes, record_bytes)
                .expect("a refused append has a reason"));
        }
        // One lookup of the group serves both the check and the update.
        let slot = state.groups.slot(record.group());
        if let Record::Entry { group, index, .. } = record {
            if let Some(expected) = state.groups.log_at(slot).next_index() {
                if index != expected {
                    return Err(Error::NonContiguousIndex { group, index, expected });
                }
            }
        }
        let (lsn, offset) = state.push_record(&record, record_bytes);
        state.pending_bytes += record_bytes;
        match record {
            Record::Entry { index, term, .. } => {
                let location = EntryLocation { lsn, term, offset };
                state.groups.push_entry_at(slot, index, location);
            }
            _ => state
                .groups
                .apply_at(slot, &record, lsn, offset)
                .expect("checked above"),
        }
        Ok(lsn)
    }

    /// Appends a log entry of `group`; returns its LSN. Not durable until a
    /// [`Wal::sync`] created after this call resolves.
    pub fn append_entry(&self, group: u64, index: u64, term: u64, entry_type: u8, payload: &[u8]) -> Result<u64> {
        self.append(Record::Entry {
            group,
            term,
            index,
            entry_type,
            payload,
        })
    }

    /// Appends a run of `group`'s entries, with indexes `first_index`,
    /// `first_index + 1`, ...; returns the LSN of the last one (`None` for
    /// an empty run). The records are exactly those of as many
    /// [`Wal::append_entry`] calls, with consecutive LSNs; not durable until
    /// a [`Wal::sync`] created after this call resolves.
    ///
    /// All or nothing: the run is checked as a whole before any of it is
    /// appended (the WAL poisoned or closed, any record larger than
    /// `record_bytes_max`, the run's bytes past `pending_bytes_max`, or
    /// `first_index` not following the group's last index), and on an error
    /// nothing was appended. A run larger than `pending_bytes_max` can never
    /// be appended: split it. It may span flushes and segments like single
    /// appends do.
    ///
    /// The group lookup, the refusal checks and the growth of the group's
    /// index are paid once per run instead of once per entry (the engine
    /// appends each Ready's entries so, by [`Wal::append_entries_from`]).
    pub fn append_entries<P: AsRef<[u8]>>(
        &self,
        group: u64,
        first_index: u64,
        entries: &[NewEntry<P>],
    ) -> Result<Option<u64>> {
        self.append_entries_from(group, first_index, entries.iter().map(NewEntry::as_borrowed))
    }

    /// [`Wal::append_entries`] from an iterator over the run, which it goes
    /// through twice (the checks, then the records; a clone must yield the
    /// same entries, and no more are taken than the first pass counted): the caller's entries
    /// need not be gathered into a slice of their own, e.g. payloads borrowed
    /// from the engine's log instead of a reference count taken and dropped
    /// per entry.
    pub fn append_entries_from<P, I>(&self, group: u64, first_index: u64, entries: I) -> Result<Option<u64>>
    where
        P: AsRef<[u8]>,
        I: Iterator<Item = NewEntry<P>> + Clone,
    {
        let mut guard = self.shared.borrow_mut();
        let state = &mut *guard;
        let (mut largest_bytes, mut total_bytes, mut count) = (0usize, 0usize, 0usize);
        for entry in entries.clone() {
            let record_bytes = (RECORD_PREFIX_BYTES + ENTRY_FIXED_BYTES).saturating_add(entry.payload.as_ref().len());
            largest_bytes = largest_bytes.max(record_bytes);
            total_bytes = total_bytes.saturating_add(record_bytes);
            count += 1;
        }
        if state.refuses(largest_bytes, total_bytes) {
            return Err(state
                .refusal(largest_bytes, total_bytes)
                .expect("a refused append has a reason"));
        }
        if count == 0 {
            return Ok(None);
        }
        let slot = state.groups.slot(group);
        if let Some(expected) = state.groups.log_at(slot).next_index() {
            if first_index != expected {
                return Err(Error::NonContiguousIndex {
                    group,
                    index: first_index,
                    expected,
                });
            }
        }
        // Nothing below can fail: the run goes in whole.
        state.groups.reserve_at(slot, count);
        for (index, entry) in (first_index..).zip(entries.take(count)) {
            let record = Record::Entry {
                group,
                term: entry.term,
                index,
                entry_type: entry.entry_type,
                payload: entry.payload.as_ref(),
            };
            let (lsn, offset) = state.push_record(&record, record.encoded_len());
            let location = EntryLocation {
                lsn,
                term: entry.term,
                offset,
            };
            state.groups.push_entry_at(slot, index, location);
        }
        state.pending_bytes += total_bytes;
        Ok(Some(state.next_lsn - 1))
    }

    /// Appends `group`'s hard state; the latest one wins on recovery.
    pub fn append_hard_state(&self, group: u64, state: HardState) -> Result<u64> {
        self.append(Record::HardState { group, state })
    }

    /// Drops `group`'s entries from `from_index` on (a conflicting suffix).
    pub fn truncate_suffix(&self, group: u64, from_index: u64) -> Result<u64> {
        self.append(Record::TruncateSuffix { group, from_index })
    }

    /// Drops `group`'s entries up to and including `index`, recording the
    /// snapshot point (`index`, `term`).
    pub fn purge(&self, group: u64, index: u64, term: u64) -> Result<u64> {
        self.append(Record::Purge { group, index, term })
    }

    /// Forgets `group`: a [`Record::ForgetGroup`] after which recovery knows
    /// nothing of what the group wrote before (entries, hard state, purge
    /// marker), so its records no longer hold segments back from
    /// [`Wal::delete_obsolete_segments`]. The group's next record, if any,
    /// starts a new log at any index. Not durable until a [`Wal::sync`]
    /// created after this call resolves; until then a crash brings the
    /// group's log back. Returns the record's LSN.
    pub fn forget_group(&self, group: u64) -> Result<u64> {
        let mut guard = self.shared.borrow_mut();
        let state = &mut *guard;
        let record = Record::ForgetGroup { group };
        let record_bytes = record.encoded_len();
        if state.refuses(record_bytes, record_bytes) {
            return Err(state
                .refusal(record_bytes, record_bytes)
                .expect("a refused append has a reason"));
        }
        let (lsn, _) = state.push_record(&record, record_bytes);
        state.pending_bytes += record_bytes;
        state.groups.forget(group, lsn);
        Ok(lsn)
    }

    /// The groups forgotten ([`Wal::forget_group`]) by a record still in
    /// the log, by id, with the LSN of the latest such record.
    pub fn forgotten_groups(&self) -> Vec<(u64, u64)> {
        self.shared.borrow().groups.forgotten().collect()
    }

    /// Starts a group commit of everything appended so far (if one is not
    /// already covering it) and resolves with the durable LSN once all of it
    /// is on disk. The request is made when this is called, not when the
    /// future is first polled.
    pub fn sync(&self) -> SyncFuture {
        let mut state = self.shared.borrow_mut();
        let target_lsn = state.next_lsn - 1;
        if target_lsn > state.requested_lsn {
            state.requested_lsn = target_lsn;
            if state.sealed.is_empty() {
                // The flusher is idle: this flush covers exactly what was
                // appended so far. Otherwise later appends join the next one.
                state.seal_open();
            }
            if let Some(waker) = state.flusher_waker.take() {
                waker.wake();
            }
        }
        SyncFuture {
            shared: self.shared.clone(),
            target_lsn,
            failures_seen: state.failures,
            waited: false,
            handoff: None,
        }
    }

    /// The LSN of the last record known durable.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.borrow().durable_lsn
    }

    /// The LSN of the last record appended.
    pub fn last_lsn(&self) -> u64 {
        self.shared.borrow().next_lsn - 1
    }

    /// The error that poisoned the WAL, if an fdatasync failed.
    pub fn poisoned(&self) -> Option<Error> {
        self.shared.borrow().poisoned.clone()
    }

    /// Counters of the write path.
    pub fn stats(&self) -> WriterStats {
        self.shared.borrow().stats
    }

    /// The state of `group`, if the WAL holds anything for it.
    pub fn group_state(&self, group: u64) -> Option<GroupState> {
        let state = self.shared.borrow();
        state
            .groups
            .get(group)
            .filter(|log| !log.is_empty() || log.next_index().is_some())
            .map(|log| log.state())
    }

    /// Every group the WAL holds something for, by id.
    pub fn groups(&self) -> Vec<(u64, GroupState)> {
        let state = self.shared.borrow();
        state.groups.iter().map(|(group, log)| (group, log.state())).collect()
    }

    /// The term of `group`'s entry `index` (or of its purge marker).
    pub fn term(&self, group: u64, index: u64) -> Option<u64> {
        self.shared.borrow().groups.get(group)?.term(index)
    }

    /// Reads `group`'s entries in `indexes` (end exclusive), stopping once
    /// their payloads exceed `bytes_max`; at least one entry is returned
    /// when the range is not empty.
    pub fn entries(&self, group: u64, indexes: Range<u64>, bytes_max: usize) -> Result<Vec<Entry>> {
        let mut state = self.shared.borrow_mut();
        let Some(log) = state.groups.get(group) else {
            return Err(Error::Unavailable {
                group,
                index: indexes.start,
                last_index: 0,
            });
        };
        let group_state = log.state();
        if indexes.start < group_state.first_index {
            return Err(Error::Compacted {
                group,
                index: indexes.start,
                first_index: group_state.first_index,
            });
        }
        if indexes.end > group_state.last_index + 1 {
            return Err(Error::Unavailable {
                group,
                index: indexes.end - 1,
                last_index: group_state.last_index,
            });
        }
        let locations: Vec<EntryLocation> = indexes
            .clone()
            .map(|index| *log.entry(index).expect("within range"))
            .collect();
        let mut entries = Vec::with_capacity(locations.len());
        let mut bytes = 0;
        for (index, location) in indexes.zip(locations) {
            let entry = read_entry(&mut state, index, &location)?;
            bytes += entry.payload.len();
            if bytes > bytes_max && !entries.is_empty() {
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Drops the pages of every mapped segment from this process's resident
    /// memory (they stay in the page cache): [`Entry`] payloads read with
    /// [`Wal::entries`] stay valid and are read again when next touched. For
    /// a reader that copies a long run of entries out (the engine at start),
    /// so that the log is not resident twice, once mapped and once copied.
    pub fn release_mapped_pages(&self) {
        let state = self.shared.borrow();
        for map in state.segments.iter().filter_map(|segment| segment.map.as_ref()) {
            release_pages(map);
        }
    }

    /// The group holding back the deletion of the oldest segment, if any.
    pub fn oldest_holder(&self) -> Option<Holder> {
        let state = self.shared.borrow();
        let (group, lsn) = state.groups.oldest_needed()?;
        let segment = state
            .segments
            .iter()
            .rev()
            .find(|segment| segment.first_lsn <= lsn)?
            .first_lsn;
        Some(Holder { group, lsn, segment })
    }

    /// For each of the oldest `segments_max` segments, oldest first, the
    /// groups whose oldest needed record is in it (at most
    /// [`SEGMENT_HOLDERS_MAX`](crate::SEGMENT_HOLDERS_MAX) named, the rest
    /// counted): the first segment's holders keep it from being deleted.
    pub fn segment_holders(&self, segments_max: usize) -> Vec<SegmentHolders> {
        let state = self.shared.borrow();
        let segments: Vec<u64> = state.segments.iter().map(|segment| segment.first_lsn).collect();
        state.groups.segment_holders(&segments, segments_max)
    }

    /// Re-appends `group`'s hard state and purge marker so that old segments
    /// holding only those can be deleted. Returns the last LSN appended.
    pub fn rewrite_group_metadata(&self, group: u64) -> Result<Option<u64>> {
        let Some(state) = self.group_state(group) else {
            return Ok(None);
        };
        let mut lsn = None;
        if let Some(hard_state) = state.hard_state {
            lsn = Some(self.append_hard_state(group, hard_state)?);
        }
        if let Some((index, term)) = state.snapshot {
            lsn = Some(self.purge(group, index, term)?);
        }
        Ok(lsn)
    }

    /// Makes everything appended durable, then deletes every segment no group
    /// needed any more when this was called. Returns the first LSNs of the
    /// deleted segments.
    ///
    /// The oldest needed LSN is taken before the sync: every record that moved
    /// it there is then durable once the sync resolves. A purge another task
    /// appends while the sync runs may not be, so it frees nothing until a
    /// later call (a group's oldest needed LSN only grows, so the earlier
    /// value is never past what any group needs now), and a segment holding
    /// records appended after the call is never deleted by it.
    pub async fn delete_obsolete_segments(&self) -> Result<Vec<u64>> {
        let needed = {
            let state = self.shared.borrow();
            // With nothing needed, still nothing appended from here on.
            state.groups.oldest_needed().map_or(state.next_lsn, |(_, lsn)| lsn)
        };
        self.sync().await?;
        // Segments leave the front only here, under the range lock: the
        // count found below still holds after the range file is written.
        let lock = self.shared.borrow().range_lock.clone();
        let writing = lock.acquire_permit(1).await.map_err(|_| Error::Closed)?;
        let (kept, range, sequence, fs, dir) = {
            let state = self.shared.borrow();
            // The newest created segment is always kept: the range file
            // names it (a rotated-to segment may not exist yet).
            let mut kept = 0;
            while kept + 1 < state.segments.len()
                && state.segments[kept + 1].first_lsn <= needed
                && state.segments[kept + 1].created
            {
                kept += 1;
            }
            let range = (kept > 0).then(|| {
                let front = state.segments[kept].first_lsn;
                SegmentRange {
                    oldest: front,
                    newest: state.range.map_or(front, |range| range.newest.max(front)),
                }
            });
            (
                kept,
                range,
                state.range_sequence + 1,
                state.fs.clone(),
                state.dir.clone(),
            )
        };
        if let Some(range) = range {
            // Before any file goes: a crash between leaves segments
            // older than the range's oldest, which recovery accepts.
            write_segment_range_off_thread(&*fs, &dir, range, sequence).await?;
            let mut state = self.shared.borrow_mut();
            state.range = Some(range);
            state.range_sequence = sequence;
        }
        let doomed = {
            let mut state = self.shared.borrow_mut();
            let doomed: Vec<(u64, PathBuf)> = state
                .segments
                .drain(..kept)
                .map(|segment| (segment.first_lsn, segment.path))
                .collect();
            if let Some(front) = state.segments.front().map(|segment| segment.first_lsn) {
                state.groups.forget_older_than(front);
            }
            doomed
        };
        // The range and the list no longer name them: a rotation may name
        // its new segment in the range file while they are unlinked (each
        // unlink can wait for the device: `FileSystem::remove`), instead of
        // its flush waiting for the lock behind them.
        drop(writing);
        for (segment, path) in &doomed {
            fs.remove(path)
                .await
                .map_err(|error| Error::io(IoOp::Remove, *segment, &error))?;
        }
        if !doomed.is_empty() {
            fs.sync_dir(&dir)
                .await
                .map_err(|error| Error::io(IoOp::SyncDirectory, 0, &error))?;
        }
        Ok(doomed.into_iter().map(|(segment, _)| segment).collect())
    }

    /// Makes everything appended durable, stops the flusher and closes,
    /// ending the log with a close marker: a flush of its own that vouches
    /// for every flush before it, so that damage to them is reported as
    /// corruption on the next open instead of being taken for a torn tail.
    pub async fn close(mut self) -> Result<u64> {
        let synced = self.sync().await;
        self.shared.borrow_mut().closed = true;
        self.wake_flusher();
        if let Some(flusher) = self.flusher.take() {
            flusher.await;
        }
        let durable = synced?;
        let close_marker = {
            let mut state = self.shared.borrow_mut();
            if state.poisoned.is_some() || !state.sealed.is_empty() {
                None
            } else {
                state.seal_marker_only(true)
            }
        };
        if let Some(batch) = close_marker {
            flush(&self.shared, &batch).await?;
        }
        Ok(durable)
    }

    fn wake_flusher(&self) {
        if let Some(waker) = self.shared.borrow_mut().flusher_waker.take() {
            waker.wake();
        }
    }
}

/// Handing over the payloads recovery copied ([`Config::keep_recovered_payloads`]).
impl Wal {
    /// Takes `group`'s entries as recovery copied them, in index order from
    /// its first live index (payloads [`Payload::Owned`]): `None` if the WAL
    /// was opened without [`Config::keep_recovered_payloads`], they were
    /// taken already, or anything was appended to the group since (then
    /// read them with [`Wal::entries`]).
    pub fn take_recovered_entries(&self, group: u64) -> Option<Vec<Entry>> {
        let mut state = self.shared.borrow_mut();
        let copies = state.groups.take_copies(group)?;
        let log = state.groups.get(group)?;
        let first_index = log.state().first_index;
        (first_index..)
            .zip(copies)
            .map(|(index, copy)| {
                Some(Entry {
                    index,
                    term: log.entry(index)?.term,
                    entry_type: copy.entry_type,
                    payload: Payload::Owned(copy.payload),
                })
            })
            .collect()
    }

    /// Drops every payload recovery copied that no one took.
    pub fn drop_recovered_entries(&self) {
        self.shared.borrow_mut().groups.drop_copies();
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Work already requested by a sync() still completes if the executor
        // keeps running; nothing new is accepted.
        self.shared.borrow_mut().closed = true;
        self.wake_flusher();
    }
}

/// Makes the recovered last segment durable and vouches for all of it with a
/// flush of only a marker, before anything acts on what recovery read: the
/// last flush found may have been written but never synced before the
/// process died (its bytes still in a volatile cache), and without a later
/// marker it would count as a torn tail on the next open even though this
/// node went on as if it held it. Where the segment has no room for another
/// marker, the segment is fdatasynced (the next flush goes to a new segment,
/// which vouches for it as a whole).
async fn vouch_for_recovered_log(shared: &Rc<RefCell<State>>) -> Result<()> {
    let marker_only = shared.borrow_mut().seal_marker_only(false);
    if let Some(batch) = marker_only {
        flush(shared, &batch).await?;
        return Ok(());
    }
    let (segment, file) = {
        let state = shared.borrow();
        let segment = state.segments.back().expect("a recovered segment");
        (segment.first_lsn, segment.file.clone())
    };
    if let Some(file) = file {
        file.sync_data().await.map_err(|error| Error::Poisoned {
            segment,
            errno: error.raw_os_error(),
        })?;
    }
    Ok(())
}

fn read_entry(state: &mut State, index: u64, location: &EntryLocation) -> Result<Entry> {
    let start = location.offset as usize;
    let segment_lsn = state
        .segments
        .iter()
        .rev()
        .find(|segment| segment.first_lsn <= location.lsn)
        .expect("a live entry's segment exists")
        .first_lsn;
    if location.lsn <= state.written_lsn {
        let segment = state
            .segments
            .iter_mut()
            .find(|segment| segment.first_lsn == segment_lsn)
            .expect("found above");
        if segment.map.is_none() {
            segment.map = Some(Rc::new(map_segment(&segment.path, segment.first_lsn)?));
        }
        let map = segment.map.clone().expect("mapped above");
        // The record's own prefix gives its length; decoding checks it
        // against the end of the segment and verifies the CRC.
        let Decoded::Record(
            Record::Entry {
                term,
                entry_type,
                payload,
                ..
            },
            _,
        ) = decode_record(&map[start.min(map.len())..])
        else {
            return Err(Error::Corruption {
                segment: segment_lsn,
                offset: location.offset,
            });
        };
        let payload_start = payload.as_ptr() as usize - map.as_ptr() as usize;
        return Ok(Entry {
            index,
            term,
            entry_type,
            payload: Payload::Mapped {
                range: payload_start..payload_start + payload.len(),
                map,
            },
        });
    }
    let sealed = state
        .sealed
        .iter()
        .map(|batch| (batch.segment, batch.file_offset, batch.bytes.as_slice()));
    let open = (state.open.segment, state.open.file_offset, state.open.bytes());
    for (segment, file_offset, bytes) in sealed.chain([open]) {
        let end_offset = file_offset + bytes.len() as u64;
        if segment == segment_lsn && file_offset <= location.offset && location.offset < end_offset {
            let at = (location.offset - file_offset) as usize;
            if let Decoded::Record(
                Record::Entry {
                    term,
                    entry_type,
                    payload,
                    ..
                },
                _,
            ) = decode_record(&bytes[at..])
            {
                return Ok(Entry {
                    index,
                    term,
                    entry_type,
                    payload: Payload::Owned(payload.to_vec()),
                });
            }
        }
    }
    unreachable!("an unwritten entry is in a batch")
}
