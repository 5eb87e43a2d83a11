//! Log compaction after a snapshot: once a group's snapshot is durable, its
//! core drops the entries below it (keeping a tail for slow followers), the
//! shard's WAL records a purge marker for the group, and segment files no
//! group needs any more are deleted off the shard's loop.
//! `docs/architecture.md`, "Snapshot policy and log compaction".

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coraft_wal::{Need, Wal};

use crate::api::Error;
use crate::raft::{Entry, GroupId, LogIndex};

use super::group::Group;

/// Default of [`SnapshotPolicy::log_tail_entries`]: entries kept in memory
/// (and in the WAL) below a snapshot, so that a follower this far behind
/// still catches up entry by entry instead of by a whole snapshot (4,096;
/// the tuning config's default, one constant for both).
pub const SNAPSHOT_LOG_TAIL_ENTRIES_DEFAULT: u64 = coraft_tuning::SNAPSHOT_LOG_TAIL_ENTRIES_DEFAULT;

/// Bound on the log bytes a leader keeps in memory (and in the WAL) after
/// the snapshot it is streaming to a follower, and after the stream until
/// the follower is caught up from the log (`Shard::log_held_after`),
/// beyond what the policy keeps anyway (`log_tail_entries` below its newest
/// snapshot). Within it, the follower is caught up from the log once it
/// installed the streamed snapshot; past it, the oldest of those entries go
/// as they would without a stream, and the follower is sent a newer
/// snapshot after this one.
pub const SNAPSHOT_STREAM_LOG_KEPT_BYTES_MAX: u64 = 64 << 20;

/// The bound compaction applies in place of
/// [`SNAPSHOT_STREAM_LOG_KEPT_BYTES_MAX`]: that, unless a test lowered it.
static STREAM_LOG_KEPT_BYTES_MAX: AtomicU64 = AtomicU64::new(SNAPSHOT_STREAM_LOG_KEPT_BYTES_MAX);

/// Test-only knob: replaces [`SNAPSHOT_STREAM_LOG_KEPT_BYTES_MAX`] for
/// every node of this process, so that an integration test can show the
/// bound on a live cluster without writing 64 MiB during one stream. Not
/// an operator's setting (no config field or option sets it).
#[doc(hidden)]
pub fn set_snapshot_stream_log_kept_bytes_max_for_tests(bytes: u64) {
    STREAM_LOG_KEPT_BYTES_MAX.store(bytes, Ordering::Relaxed);
}

/// Bound on the idle groups whose hard state and purge marker are written
/// again in one turn so that the oldest WAL segment can be deleted
/// (`coraft_wal::SEGMENT_HOLDERS_MAX` are named per segment).
pub const METADATA_REWRITES_PER_TURN_MAX: usize = coraft_wal::SEGMENT_HOLDERS_MAX;

/// When each group takes a snapshot by itself and how much log it keeps
/// (the tuning config's `[snapshot]`; the defaults are its defaults). A
/// trigger at 0 is off; with every trigger off, snapshots are taken only on
/// demand (`GroupHandle::snapshot`). The entry and byte triggers fire when
/// the group applies entries; the interval is also checked on the shard's
/// clock, so a group that stopped receiving writes still snapshots what it
/// applied since its last snapshot once the interval has passed. A group
/// that applied nothing since its last snapshot takes none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// After this many entries applied since the group's last snapshot
    /// (default 0, off).
    pub after_entries: u64,
    /// After this many log bytes applied since the group's last snapshot
    /// (default 32 MiB).
    pub after_log_bytes: u64,
    /// Once the shard's groups together applied this many log bytes since
    /// their last snapshots, the group holding the most takes one (and the
    /// next most, while the rest is still above it); default 256 MiB. The
    /// bound on what a shard's logs hold in memory above their tails however
    /// many groups it has, which `after_log_bytes` alone is not
    /// (`groups × after_log_bytes`). Checked once a turn, from a running
    /// count; the groups are walked only when it is over.
    pub shard_after_log_bytes: u64,
    /// After this long since the group's last snapshot or its start, if it
    /// applied anything since (default 1 hour; zero: off).
    pub interval: Duration,
    /// Entries kept below a durable snapshot, in memory and in the WAL
    /// (default [`SNAPSHOT_LOG_TAIL_ENTRIES_DEFAULT`]); 0 drops every entry
    /// the snapshot covers.
    pub log_tail_entries: u64,
    /// Pace of all the snapshot streams (InstallSnapshot) one shard sends
    /// to followers that need compacted entries, in bytes per second
    /// (default [`SNAPSHOT_INSTALL_BYTES_PER_SECOND_DEFAULT`](super::SNAPSHOT_INSTALL_BYTES_PER_SECOND_DEFAULT),
    /// 64 MiB/s; see `docs/architecture.md`, "InstallSnapshot streaming").
    pub install_bytes_per_second: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> SnapshotPolicy {
        SnapshotPolicy {
            after_entries: coraft_tuning::SNAPSHOT_AFTER_ENTRIES_DEFAULT,
            after_log_bytes: coraft_tuning::SNAPSHOT_AFTER_LOG_BYTES_DEFAULT,
            shard_after_log_bytes: coraft_tuning::SNAPSHOT_SHARD_AFTER_LOG_BYTES_DEFAULT,
            interval: Duration::from_millis(coraft_tuning::SNAPSHOT_INTERVAL_MS_DEFAULT),
            log_tail_entries: SNAPSHOT_LOG_TAIL_ENTRIES_DEFAULT,
            install_bytes_per_second: super::SNAPSHOT_INSTALL_BYTES_PER_SECOND_DEFAULT,
        }
    }
}

impl SnapshotPolicy {
    /// The policy of a tuning config's `[snapshot]` section.
    pub fn from_settings(settings: &coraft_tuning::SnapshotSettings) -> SnapshotPolicy {
        SnapshotPolicy {
            after_entries: settings.after_entries,
            after_log_bytes: settings.after_log_bytes,
            shard_after_log_bytes: settings.shard_after_log_bytes,
            interval: Duration::from_millis(settings.interval_ms),
            log_tail_entries: settings.log_tail_entries,
            install_bytes_per_second: settings.install_bytes_per_second,
        }
    }

    /// Whether a group that applied `since` since its last snapshot should
    /// take one now.
    /// `now` is read only when the interval decides.
    pub(crate) fn due(&self, since: &SinceSnapshot, now: impl FnOnce() -> Instant) -> bool {
        if since.entries == 0 {
            return false;
        }
        (self.after_entries > 0 && since.entries >= self.after_entries)
            || (self.after_log_bytes > 0 && since.log_bytes >= self.after_log_bytes)
            || (!self.interval.is_zero() && now().saturating_duration_since(since.at) >= self.interval)
    }
}

impl super::shard::Shard {
    /// The interval trigger on the clock (each tick): every group that
    /// applied entries since its last snapshot and whose interval has passed
    /// is queued for a snapshot, as an apply would queue it. The entry and
    /// byte triggers need applies to change, so they are checked only there.
    pub(super) fn snapshot_intervals_due(&mut self, now: Instant) {
        if self.snapshot_policy.interval.is_zero() {
            return;
        }
        for (&group_id, group) in &self.groups {
            if group.since_snapshot.entries > 0
                && now.saturating_duration_since(group.since_snapshot.at) >= self.snapshot_policy.interval
            {
                self.policy_snapshots.insert(group_id);
            }
        }
    }
}

impl super::shard::Shard {
    /// The shard-wide trigger (`SnapshotPolicy::shard_after_log_bytes`),
    /// once a turn after the groups applied: when the running count of log
    /// bytes applied since the groups' snapshots is over the bound, counts
    /// them again exactly (the running count misses nothing it should
    /// count, but knows of no snapshot) and queues the groups holding the
    /// most until what the others hold is within it.
    pub(super) fn shard_snapshot_bound_due(&mut self) {
        let bound = self.snapshot_policy.shard_after_log_bytes;
        if bound == 0 || self.log_bytes_since_snapshots <= bound {
            return;
        }
        let queued = &self.policy_snapshots;
        let held = self.groups.iter().filter_map(|(&id, group)| {
            let since = &group.since_snapshot;
            // A group whose snapshot is queued already is counted as gone.
            (since.entries > 0 && group.loading.is_none() && !queued.contains(&id)).then_some((id, since.log_bytes))
        });
        let (kept, largest) = groups_over_bound(held, bound);
        self.log_bytes_since_snapshots = kept;
        self.policy_snapshots.extend(largest);
    }
}

/// Which groups, of `held` (`(group, log bytes applied since its last
/// snapshot)`), to snapshot so that the others hold at most `bound`: the
/// largest first, as few as that takes. Returns what the others hold and
/// the groups picked.
pub(crate) fn groups_over_bound(held: impl Iterator<Item = (GroupId, u64)>, bound: u64) -> (u64, Vec<GroupId>) {
    let mut held: Vec<(GroupId, u64)> = held.collect();
    let mut total: u64 = held.iter().map(|&(_, bytes)| bytes).sum();
    let mut picked = Vec::new();
    if total <= bound {
        return (total, picked);
    }
    held.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (group, bytes) in held {
        if total <= bound {
            break;
        }
        total -= bytes;
        picked.push(group);
    }
    (total, picked)
}

/// What a group applied since its last snapshot (or its start).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SinceSnapshot {
    /// Entries applied.
    pub entries: u64,
    /// Their bytes.
    pub log_bytes: u64,
    /// When the count started.
    pub at: Instant,
}

impl SinceSnapshot {
    /// Starts counting at `at`.
    pub fn new(at: Instant) -> SinceSnapshot {
        SinceSnapshot {
            entries: 0,
            log_bytes: 0,
            at,
        }
    }
}

/// The points a durable snapshot at `snapshot_index` lets a group compact
/// to: `(memory, wal)`. The core keeps `tail` entries below the snapshot;
/// the WAL keeps as much and never purges past the next older snapshot the
/// store still holds (`older`, `None` if this is the only one), so that a
/// newest snapshot found damaged on restart can be skipped for that one and
/// the entries after it replayed.
pub(crate) fn compaction_points(snapshot_index: LogIndex, tail: u64, older: Option<LogIndex>) -> (LogIndex, LogIndex) {
    let memory = LogIndex(snapshot_index.0.saturating_sub(tail));
    let wal = older.map_or(LogIndex(0), |older| memory.min(older));
    (memory, wal)
}

/// Where to compact to, at most `memory`, so that the entries after
/// `streamed` (a snapshot being streamed to a follower) stay, as far as
/// they take at most `bytes_max` bytes (`entry_bytes` gives each entry's
/// size; an entry it does not know ends the walk). Walks down from `memory`.
pub(crate) fn stream_hold_point(
    memory: LogIndex,
    streamed: LogIndex,
    bytes_max: u64,
    entry_bytes: impl Fn(LogIndex) -> Option<u64>,
) -> LogIndex {
    let mut point = memory;
    let mut kept = 0u64;
    while point > streamed {
        let Some(bytes) = entry_bytes(point) else {
            break;
        };
        if kept.saturating_add(bytes) > bytes_max {
            break;
        }
        kept += bytes;
        point = LogIndex(point.0 - 1);
    }
    point
}

/// Compacts `group` after its snapshot at `snapshot_index` became durable:
/// writes the WAL purge marker (buffered; the shard's next sync makes it
/// durable, and the snapshot already is) and drops the core's entries.
/// Returns whether a purge marker was written, and the entries the core
/// forgot, for the caller to release (`release::Releaser`). `streaming` is the point a
/// follower being streamed a snapshot, or caught up after one, needs the
/// log after (`Shard::log_held_after`), if any: the entries after it stay,
/// so that the follower, once it installed that snapshot, is caught up from
/// the log instead of being sent a newer snapshot (under a steady write
/// load a slow stream would otherwise never be recent enough), as far as
/// [`SNAPSHOT_STREAM_LOG_KEPT_BYTES_MAX`] allows.
pub(crate) fn compact_group(
    wal: &Wal,
    group_id: GroupId,
    group: &mut Group,
    snapshot_index: LogIndex,
    tail: u64,
    streaming: Option<LogIndex>,
) -> Result<Compacted, Error> {
    let older = match group.snapshots.as_ref() {
        Some(store) => store
            .list()
            .map_err(|e| Error::Snapshot {
                group: group_id,
                reason: format!("listing the snapshot store: {e}"),
            })?
            .into_iter()
            .filter(|id| id.index < snapshot_index)
            .map(|id| id.index)
            .next_back(),
        None => None,
    };
    let (memory, wal_point) = compaction_points(snapshot_index, tail, older);
    let memory = match streaming {
        Some(streamed) if streamed < memory => {
            let bytes_max = STREAM_LOG_KEPT_BYTES_MAX.load(Ordering::Relaxed);
            let point = stream_hold_point(memory, streamed, bytes_max, |index| group.core.entry_bytes(index));
            if point > streamed {
                log::info!(
                    "group {group_id}: keeping the log after index {point}, not after {streamed} (a snapshot \
                     streamed to a follower, or what it caught up to since): SNAPSHOT_STREAM_LOG_KEPT_BYTES_MAX; \
                     the follower will be sent a newer one"
                );
            }
            point
        }
        _ => memory,
    };
    let wal_point = wal_point.min(memory);
    let mut purged = false;
    if wal_point > group.wal_purged {
        // The term is read before the core drops the entry.
        if let Some(term) = group.core.term_at(wal_point) {
            wal.purge(group_id.0, wal_point.0, term.0)
                .map_err(|e| Error::Storage(format!("group {group_id}: writing a WAL purge marker: {e}")))?;
            group.wal_purged = wal_point;
            purged = true;
        }
    }
    let forgotten = group.core.compact(memory);
    Ok(Compacted { purged, forgotten })
}

/// What [`compact_group`] did.
pub(crate) struct Compacted {
    /// A WAL purge marker was written.
    pub purged: bool,
    /// The entries the core forgot, not yet dropped.
    pub forgotten: VecDeque<Entry>,
}

/// Deletes the WAL segments no group needs, one pass at a time, off the
/// shard's loop (a spawned task): the WAL syncs first, so every purge
/// marker that freed a segment is durable before the segment goes.
#[derive(Default)]
pub(crate) struct SegmentDeletion {
    /// A purge was written since the last pass started.
    wanted: bool,
    /// A pass is running.
    running: Rc<Cell<bool>>,
    /// Segments deleted so far.
    pub deleted: Rc<Cell<u64>>,
}

impl SegmentDeletion {
    /// A pass is running (its removals may be on the blocking thread).
    pub fn is_running(&self) -> bool {
        self.running.get()
    }

    /// Asks for a pass (after a purge).
    pub fn want(&mut self) {
        self.wanted = true;
    }

    /// Starts a pass if one is wanted and none is running. Idle groups whose
    /// only need of the oldest segment is their hard state or purge marker
    /// get them written again first (`Wal::rewrite_group_metadata`), so a
    /// group that stopped writing does not pin the oldest segment forever.
    pub fn maybe_start(&mut self, wal: &Rc<Wal>, node: crate::raft::NodeId, shard: usize) {
        if !self.wanted || self.running.get() {
            return;
        }
        self.wanted = false;
        for holders in wal.segment_holders(1) {
            for holder in holders.holders.iter().take(METADATA_REWRITES_PER_TURN_MAX) {
                if matches!(holder.need, Need::HardState | Need::PurgeMarker { .. }) {
                    if let Err(error) = wal.rewrite_group_metadata(holder.group) {
                        log::error!(
                            "node {node} shard {shard}: rewriting group {} metadata: {error}",
                            holder.group
                        );
                        return;
                    }
                }
            }
        }
        self.running.set(true);
        let running = self.running.clone();
        let deleted = self.deleted.clone();
        let wal = wal.clone();
        glommio::spawn_local(async move {
            match wal.delete_obsolete_segments().await {
                Ok(segments) => {
                    if !segments.is_empty() {
                        log::debug!("node {node} shard {shard}: deleted WAL segments {segments:?}");
                    }
                    deleted.set(deleted.get() + segments.len() as u64);
                }
                // A failed sync poisons the WAL: the shard's own next sync
                // fails and stops it (fail-stop); a failed removal only
                // leaves a file behind.
                Err(error) => log::error!("node {node} shard {shard}: deleting obsolete WAL segments: {error}"),
            }
            running.set(false);
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_fires_only_after_something_was_applied() {
        let start = Instant::now();
        let policy = SnapshotPolicy {
            after_entries: 10,
            after_log_bytes: 1000,
            shard_after_log_bytes: 0,
            interval: Duration::from_secs(60),
            log_tail_entries: 0,
            install_bytes_per_second: 1 << 20,
        };
        let since = |entries, log_bytes, at| SinceSnapshot { entries, log_bytes, at };
        let later = start + Duration::from_secs(61);
        assert!(
            !policy.due(&since(0, 0, start), || later),
            "nothing applied: no snapshot"
        );
        assert!(!policy.due(&since(9, 999, start), || start));
        assert!(policy.due(&since(10, 0, start), || start), "entries");
        assert!(policy.due(&since(1, 1000, start), || start), "log bytes");
        assert!(policy.due(&since(1, 1, start), || later), "interval");
        let off = SnapshotPolicy {
            after_entries: 0,
            after_log_bytes: 0,
            shard_after_log_bytes: 0,
            interval: Duration::ZERO,
            log_tail_entries: 0,
            install_bytes_per_second: 1 << 20,
        };
        assert!(
            !off.due(&since(u64::MAX, u64::MAX, start), || later),
            "every trigger off"
        );
    }

    #[test]
    fn the_shard_bound_picks_the_largest_groups_until_the_rest_is_within_it() {
        let held = |sizes: &[(u64, u64)]| {
            sizes
                .iter()
                .map(|&(id, bytes)| (GroupId(id), bytes))
                .collect::<Vec<_>>()
        };
        // Within the bound: nothing, and the exact count back.
        assert_eq!(
            groups_over_bound(held(&[(1, 40), (2, 60)]).into_iter(), 100),
            (100, vec![])
        );
        // Over it by a little: only the largest goes.
        assert_eq!(
            groups_over_bound(held(&[(1, 40), (2, 61), (3, 10)]).into_iter(), 100),
            (50, vec![GroupId(2)])
        );
        // One group cannot bring the rest within it: the next largest too;
        // equal sizes go in group order.
        assert_eq!(
            groups_over_bound(held(&[(4, 30), (1, 50), (2, 50), (3, 30)]).into_iter(), 70),
            (60, vec![GroupId(1), GroupId(2)])
        );
        // Every group, when even the smallest alone is over.
        assert_eq!(
            groups_over_bound(held(&[(1, 500), (2, 200)]).into_iter(), 100),
            (0, vec![GroupId(1), GroupId(2)])
        );
        assert_eq!(groups_over_bound(std::iter::empty(), 0), (0, vec![]));
    }

    #[test]
    fn the_wal_never_purges_past_the_older_kept_snapshot() {
        assert_eq!(
            compaction_points(LogIndex(100), 10, Some(LogIndex(50))),
            (LogIndex(90), LogIndex(50))
        );
        assert_eq!(
            compaction_points(LogIndex(100), 10, Some(LogIndex(95))),
            (LogIndex(90), LogIndex(90))
        );
    }

    #[test]
    fn a_stream_holds_the_log_after_its_snapshot_only_within_the_byte_bound() {
        let hundred_each = |index: LogIndex| (index.0 >= 1).then_some(100);
        // All of (50, 90] is 4,000 bytes: kept under a bound of 4,000.
        assert_eq!(
            stream_hold_point(LogIndex(90), LogIndex(50), 4_000, hundred_each),
            LogIndex(50)
        );
        // Under 1,050 bytes: the ten newest entries stay, (80, 90].
        assert_eq!(
            stream_hold_point(LogIndex(90), LogIndex(50), 1_050, hundred_each),
            LogIndex(80)
        );
        // A bound of nothing holds nothing.
        assert_eq!(
            stream_hold_point(LogIndex(90), LogIndex(50), 0, hundred_each),
            LogIndex(90)
        );
        // Entries the log no longer holds end the walk.
        assert_eq!(
            stream_hold_point(LogIndex(90), LogIndex(50), u64::MAX, |i: LogIndex| (i.0 > 70)
                .then_some(1)),
            LogIndex(70)
        );
        // A stream of a snapshot at or past the point holds nothing back.
        assert_eq!(
            stream_hold_point(LogIndex(90), LogIndex(95), u64::MAX, hundred_each),
            LogIndex(90)
        );
    }

    #[test]
    fn the_only_snapshot_purges_nothing_from_the_wal() {
        assert_eq!(compaction_points(LogIndex(100), 0, None), (LogIndex(100), LogIndex(0)));
    }

    #[test]
    fn a_tail_longer_than_the_log_keeps_everything() {
        assert_eq!(
            compaction_points(LogIndex(5), 10, Some(LogIndex(3))),
            (LogIndex(0), LogIndex(0))
        );
    }
}
