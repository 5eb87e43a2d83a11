//! The region-sharded KV (issue 15, in the spirit of SOFAJRaft's RheaKV):
//! the keyspace split by key range into regions, each its own Raft group.
//! This is a region's state machine, the encoding of what clients send it,
//! and what every replica does when it applies a split.
//!
//! Region 1 (group 1) starts with the whole keyspace. `split(region, key)`
//! is a command in the region's own log: every replica applies it at the
//! same index, moves the keys at and after `key` into a new region (a new
//! Raft group with the same members, created on the running node), and
//! shrinks its own range to end at `key`. Each region keeps its own
//! descriptor (id, `[start, end)`, epoch) and the id of the region that
//! took the keys after its end (its right neighbour), so the region map is
//! replicated piece by piece, each piece in the log of the region it
//! describes: a client walks it from region 1 (whose start, the empty key,
//! never changes). A write or read for a key outside the region's range is
//! refused with "wrong region" (the descriptor and the right neighbour),
//! decided when the command is applied, in log order, so a write that
//! reaches the old range after the split is never applied there.
//!
//! The new region's first state (the parent's keys from `key` on, as of
//! the split's index) is written by each replica into a seed file in its
//! data directory before the group is created; the group's log then starts
//! empty on top of it, and its snapshots replace it. The parent's snapshots
//! carry the seeds of the regions split from it, so a replica that learns
//! of a split only from such a snapshot (it lagged, or restarts from it)
//! writes the seed and hosts the new region too.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use coraft::api::{Command, LeaderStopReason, SnapshotView, StateMachine};
use coraft::raft::{GroupId, NodeId, Term};
use coraft::runtime::GroupCreator;

use crate::kv::{
    put_bytes, put_optional, read_sized, KvQuery, KvWrite, Reader, WriteOutcome, KEY_BYTES_MAX, SCAN_PAIRS_MAX,
    VALUE_BYTES_MAX,
};

/// The region that starts with the whole keyspace.
pub const ROOT_REGION: u64 = 1;

/// Most regions split from one region that its snapshot may name (a bound
/// on what a snapshot read from a peer may ask for).
const CHILDREN_MAX: u64 = 1 << 20;

const WRITE: u8 = 1;
const SPLIT: u8 = 2;
const QUERY: u8 = 1;
const DESCRIBE: u8 = 2;
const RAW_SCAN: u8 = 3;
const ANSWER_OK: u8 = 0;
const ANSWER_WRONG_REGION: u8 = 1;
const ANSWER_REFUSED: u8 = 2;

/// A region: its id (also its Raft group's), its key range `[start, end)`
/// (`end` empty: no end) and its epoch, which grows by one at each split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionDescriptor {
    /// Region and group id.
    pub id: u64,
    /// First key.
    pub start: Vec<u8>,
    /// Key past the range; empty for none.
    pub end: Vec<u8>,
    /// Splits of this region so far, plus one.
    pub epoch: u64,
}

impl RegionDescriptor {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        put_bytes(out, &self.start);
        put_bytes(out, &self.end);
        out.extend_from_slice(&self.epoch.to_le_bytes());
    }

    fn decode(reader: &mut Reader<'_>) -> Result<RegionDescriptor, String> {
        Ok(RegionDescriptor {
            id: reader.u64()?,
            start: reader.key()?,
            end: reader.key()?,
            epoch: reader.u64()?,
        })
    }
}

/// A command in a region's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionCommand {
    /// A KV write, applied only if its key is in the region's range.
    Write(KvWrite),
    /// Splits the region at `key` if its epoch is still `epoch`.
    Split {
        /// The epoch the client saw (a split for an older one is refused).
        epoch: u64,
        /// The first key of the new region.
        key: Vec<u8>,
    },
}

/// A read of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionQuery {
    /// A KV get, or a scan clipped to the region's range (its `start` must
    /// be in the range).
    Kv(KvQuery),
    /// The region's descriptor and right neighbour.
    Describe,
    /// Up to `limit` pairs from `start` on of whatever the group holds,
    /// whatever its range (to check that a region holds only its keys).
    RawScan {
        /// First key.
        start: Vec<u8>,
        /// Most pairs.
        limit: u32,
    },
}

/// A region's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionAnswer {
    /// Done: the region as it is, and the KV answer (a `WriteOutcome`, a
    /// get's or a scan's bytes; for a split, the new region's descriptor).
    Ok {
        /// The region answering.
        region: RegionDescriptor,
        /// The answer's bytes.
        answer: Vec<u8>,
    },
    /// The key is not in this region: here is its range, and the region
    /// that took the keys after its end, if it split.
    WrongRegion {
        /// The region answering.
        region: RegionDescriptor,
        /// Its right neighbour.
        next: Option<u64>,
    },
    /// Not done, and why (a bad split, a region this node has no state of).
    Refused(String),
}

impl RegionCommand {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            RegionCommand::Write(write) => {
                let mut out = vec![WRITE];
                out.extend_from_slice(&write.encode());
                out
            }
            RegionCommand::Split { epoch, key } => {
                let mut out = vec![SPLIT];
                out.extend_from_slice(&epoch.to_le_bytes());
                put_bytes(&mut out, key);
                out
            }
        }
    }

    /// Decodes and checks a command.
    pub fn decode(bytes: &[u8]) -> Result<RegionCommand, String> {
        let mut reader = Reader(bytes);
        match reader.byte()? {
            WRITE => KvWrite::decode(reader.0).map(RegionCommand::Write),
            SPLIT => {
                let epoch = reader.u64()?;
                let key = reader.key()?;
                reader.end()?;
                Ok(RegionCommand::Split { epoch, key })
            }
            tag => Err(format!("unknown region command tag {tag}")),
        }
    }
}

impl RegionQuery {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            RegionQuery::Kv(query) => {
                let mut out = vec![QUERY];
                out.extend_from_slice(&query.encode());
                out
            }
            RegionQuery::Describe => vec![DESCRIBE],
            RegionQuery::RawScan { start, limit } => {
                let mut out = vec![RAW_SCAN];
                put_bytes(&mut out, start);
                out.extend_from_slice(&limit.to_le_bytes());
                out
            }
        }
    }

    /// Decodes and checks a query.
    pub fn decode(bytes: &[u8]) -> Result<RegionQuery, String> {
        let mut reader = Reader(bytes);
        match reader.byte()? {
            QUERY => KvQuery::decode(reader.0).map(RegionQuery::Kv),
            DESCRIBE => {
                reader.end()?;
                Ok(RegionQuery::Describe)
            }
            RAW_SCAN => {
                let start = reader.key()?;
                let limit = reader.u32()?;
                reader.end()?;
                if limit as usize > SCAN_PAIRS_MAX {
                    return Err(format!(
                        "a raw scan returns at most SCAN_PAIRS_MAX ({SCAN_PAIRS_MAX}) pairs"
                    ));
                }
                Ok(RegionQuery::RawScan { start, limit })
            }
            tag => Err(format!("unknown region query tag {tag}")),
        }
    }
}

impl RegionAnswer {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            RegionAnswer::Ok { region, answer } => {
                out.push(ANSWER_OK);
                region.encode(&mut out);
                out.extend_from_slice(answer);
            }
            RegionAnswer::WrongRegion { region, next } => {
                out.push(ANSWER_WRONG_REGION);
                region.encode(&mut out);
                out.extend_from_slice(&next.unwrap_or(0).to_le_bytes());
            }
            RegionAnswer::Refused(reason) => {
                out.push(ANSWER_REFUSED);
                out.extend_from_slice(reason.as_bytes());
            }
        }
        out
    }

    /// Decodes an answer.
    pub fn decode(bytes: &[u8]) -> Result<RegionAnswer, String> {
        let mut reader = Reader(bytes);
        match reader.byte()? {
            ANSWER_OK => {
                let region = RegionDescriptor::decode(&mut reader)?;
                Ok(RegionAnswer::Ok {
                    region,
                    answer: reader.0.to_vec(),
                })
            }
            ANSWER_WRONG_REGION => {
                let region = RegionDescriptor::decode(&mut reader)?;
                let next = reader.u64()?;
                reader.end()?;
                Ok(RegionAnswer::WrongRegion {
                    region,
                    next: (next != 0).then_some(next),
                })
            }
            ANSWER_REFUSED => Ok(RegionAnswer::Refused(String::from_utf8_lossy(reader.0).into_owned())),
            tag => Err(format!("unknown region answer tag {tag}")),
        }
    }
}

/// A split's answer bytes: the new region.
pub fn decode_descriptor(answer: &[u8]) -> Result<RegionDescriptor, String> {
    let mut reader = Reader(answer);
    let region = RegionDescriptor::decode(&mut reader)?;
    reader.end()?;
    Ok(region)
}

/// The describe answer's bytes: the right neighbour (0: none).
pub fn decode_next(answer: &[u8]) -> Result<Option<u64>, String> {
    let mut reader = Reader(answer);
    let next = reader.u64()?;
    reader.end()?;
    Ok((next != 0).then_some(next))
}

/// What every region of a node shares: where seeds are written, the
/// members of new regions, and the node's group creator once it runs.
pub struct RegionHost {
    node: NodeId,
    /// `DATA/regions`: the seed files.
    seed_dir: PathBuf,
    /// The members of every region (the static cluster).
    members: Vec<NodeId>,
    /// Set once the node started; until then creations wait in `pending`
    /// (a restarted node's created groups come back from the engine's
    /// own list; these are only the ones asked for while it started).
    creator: Mutex<(Option<GroupCreator>, Vec<u64>)>,
}

impl RegionHost {
    /// The host of node `node`, with its seeds under `data/regions`.
    pub fn new(node: NodeId, data: &Path, members: Vec<NodeId>) -> std::io::Result<Arc<RegionHost>> {
        let seed_dir = data.join("regions");
        std::fs::create_dir_all(&seed_dir)?;
        Ok(Arc::new(RegionHost {
            node,
            seed_dir,
            members,
            creator: Mutex::new((None, Vec::new())),
        }))
    }

    /// The node runs: creations go to it from now on (and those asked for
    /// meanwhile go now).
    pub fn started(&self, creator: GroupCreator) {
        let mut guard = self.creator.lock().expect("not poisoned");
        for region in std::mem::take(&mut guard.1) {
            self.create(&creator, region);
        }
        guard.0 = Some(creator);
    }

    /// The state machine of region `group` on this node.
    pub fn state_machine(self: &Arc<Self>, group: GroupId) -> Box<dyn StateMachine> {
        let mut region = RegionStore {
            host: self.clone(),
            region: None,
            next: None,
            children: Vec::new(),
            map: Arc::new(BTreeMap::new()),
        };
        if group.0 == ROOT_REGION {
            region.region = Some(RegionDescriptor {
                id: ROOT_REGION,
                start: Vec::new(),
                end: Vec::new(),
                epoch: 1,
            });
        } else {
            let path = self.seed_path(group.0);
            let loaded = std::fs::File::open(&path)
                .map(std::io::BufReader::new)
                .and_then(|mut file| region.load(&mut file));
            if let Err(error) = loaded {
                // Without its seed this node cannot hold the region's
                // first state; it answers "refused" until a snapshot of
                // the region replaces its state.
                log::error!(
                    "node {}: region {group} has no usable seed {} ({error}); it refuses requests here",
                    self.node,
                    path.display()
                );
            }
        }
        Box::new(region)
    }

    fn seed_path(&self, region: u64) -> PathBuf {
        self.seed_dir.join(format!("region-{region}.seed"))
    }

    fn request_creation(&self, region: u64) {
        let mut guard = self.creator.lock().expect("not poisoned");
        match &guard.0 {
            Some(creator) => self.create(creator, region),
            None => guard.1.push(region),
        }
    }

    fn create(&self, creator: &GroupCreator, region: u64) {
        if let Err(error) = creator.create_group_in_background(GroupId(region), self.members.clone()) {
            log::error!("node {}: asking for region {region}'s group: {error}", self.node);
        }
    }

    /// Writes `seed` as region `region`'s first state, durably (a temporary
    /// file, synced, renamed, the directory synced).
    fn write_seed(
        &self,
        region: u64,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let path = self.seed_path(region);
        let temporary = path.with_extension("tmp");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&temporary)?);
        write(&mut file)?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(&self.seed_dir)?.sync_all()
    }
}

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// One region's replicated state: its descriptor, its right neighbour and
/// its pairs (a `BTreeMap` in memory, snapshotted whole, like `KvStore`).
pub struct RegionStore {
    host: Arc<RegionHost>,
    /// `None`: this node has no state of the region (no seed).
    region: Option<RegionDescriptor>,
    next: Option<u64>,
    /// The regions split from this one, oldest first: this region's
    /// snapshots carry their seeds.
    children: Vec<u64>,
    map: Arc<Map>,
}

impl RegionStore {
    fn apply(&mut self, command: &Command<'_>) -> RegionAnswer {
        let Some(region) = self.region.clone() else {
            return RegionAnswer::Refused(format!("node {} has no state of this region", self.host.node));
        };
        let command = match RegionCommand::decode(command.data).map(|c| (c, command.index)) {
            Ok(command) => command,
            Err(reason) => return RegionAnswer::Refused(reason),
        };
        match command {
            (RegionCommand::Write(write), _) => {
                let key = match &write {
                    KvWrite::Put { key, .. } | KvWrite::Delete { key } | KvWrite::CompareAndSet { key, .. } => key,
                };
                if !region.contains(key) {
                    return RegionAnswer::WrongRegion {
                        region,
                        next: self.next,
                    };
                }
                let outcome = apply_write(Arc::make_mut(&mut self.map), write);
                RegionAnswer::Ok {
                    region,
                    answer: outcome.encode(),
                }
            }
            (RegionCommand::Split { epoch, key }, index) => self.split(region, epoch, key, index.0),
        }
    }

    /// Splits at `key`: the keys from `key` on go to a new region, whose id
    /// every replica derives alike from this region's id and the split's
    /// log index.
    fn split(&mut self, region: RegionDescriptor, epoch: u64, key: Vec<u8>, index: u64) -> RegionAnswer {
        if epoch != region.epoch {
            return RegionAnswer::Refused(format!(
                "region {} is at epoch {}, not {epoch}: it split since; split the region that holds the key now",
                region.id, region.epoch
            ));
        }
        if key <= region.start || !region.contains(&key) {
            return RegionAnswer::Refused(format!(
                "the split key must lie inside region {}'s range, after its first key",
                region.id
            ));
        }
        let child_id = child_region_id(region.id, index);
        let child_map = Arc::make_mut(&mut self.map).split_off(&key);
        let child = RegionDescriptor {
            id: child_id,
            start: key.clone(),
            end: region.end.clone(),
            epoch: 1,
        };
        let seed = RegionStore {
            host: self.host.clone(),
            region: Some(child.clone()),
            next: self.next,
            children: Vec::new(),
            map: Arc::new(child_map),
        };
        let parent = RegionDescriptor {
            end: key,
            epoch: region.epoch + 1,
            ..region
        };
        self.region = Some(parent.clone());
        self.next = Some(child_id);
        self.children.push(child_id);
        // The seed is durable before the group exists, and both before
        // this region's snapshot can cover the split. A node that cannot
        // write it stops here (as on a failed fsync): restarted, it applies
        // the split again from its log; going on, its snapshots would cover
        // a split whose seed it never wrote.
        if let Err(error) = self.host.write_seed(child_id, |file| seed.view().write_state(file)) {
            panic!(
                "node {}: writing region {child_id}'s seed {} failed: {error}",
                self.host.node,
                self.host.seed_path(child_id).display()
            );
        }
        self.host.request_creation(child_id);
        println!(
            "node {}: region {} split at {:?}: region {child_id} holds {} keys",
            self.host.node,
            parent.id,
            String::from_utf8_lossy(&child.start),
            seed.map.len()
        );
        let mut answer = Vec::new();
        child.encode(&mut answer);
        RegionAnswer::Ok { region: parent, answer }
    }

    fn query(&self, query: RegionQuery) -> RegionAnswer {
        let Some(region) = self.region.clone() else {
            return RegionAnswer::Refused(format!("node {} has no state of this region", self.host.node));
        };
        let wrong = |region: RegionDescriptor| RegionAnswer::WrongRegion {
            region,
            next: self.next,
        };
        let mut out = Vec::new();
        match query {
            RegionQuery::Describe => out.extend_from_slice(&self.next.unwrap_or(0).to_le_bytes()),
            RegionQuery::Kv(KvQuery::Get { key }) => {
                if !region.contains(&key) {
                    return wrong(region);
                }
                put_optional(&mut out, self.map.get(&key).map(Vec::as_slice));
            }
            RegionQuery::Kv(KvQuery::Scan { start, end, limit }) => {
                if !region.contains(&start) {
                    return wrong(region);
                }
                let upper = match (end.is_empty(), region.end.is_empty()) {
                    (true, true) => Bound::Unbounded,
                    (true, false) => Bound::Excluded(region.end.clone()),
                    (false, true) => Bound::Excluded(end),
                    (false, false) => Bound::Excluded(end.min(region.end.clone())),
                };
                let empty = matches!(&upper, Bound::Excluded(e) if *e <= start);
                let pairs: Vec<_> = if empty {
                    Vec::new()
                } else {
                    self.map
                        .range((Bound::Included(start), upper))
                        .take(limit as usize)
                        .collect()
                };
                put_pairs(&mut out, pairs);
            }
            RegionQuery::RawScan { start, limit } => {
                let pairs: Vec<_> = self.map.range(start..).take(limit as usize).collect();
                put_pairs(&mut out, pairs);
            }
        }
        RegionAnswer::Ok { region, answer: out }
    }

    fn view(&self) -> RegionView {
        RegionView {
            host: self.host.clone(),
            region: self.region.clone(),
            next: self.next,
            children: self.children.clone(),
            map: Arc::clone(&self.map),
        }
    }

    /// Replaces the state with one written by `RegionView::write_state`.
    fn load(&mut self, reader: &mut dyn Read) -> std::io::Result<()> {
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let mut word = [0u8; 8];
        let mut u64_of = |reader: &mut dyn Read| -> std::io::Result<u64> {
            reader.read_exact(&mut word)?;
            Ok(u64::from_le_bytes(word))
        };
        let id = u64_of(reader)?;
        let start = read_sized(reader, KEY_BYTES_MAX)?;
        let end = read_sized(reader, KEY_BYTES_MAX)?;
        let epoch = u64_of(reader)?;
        let next = u64_of(reader)?;
        let count = u64_of(reader)?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let key = read_sized(reader, KEY_BYTES_MAX).map_err(|e| invalid(format!("region key: {e}")))?;
            let value = read_sized(reader, VALUE_BYTES_MAX).map_err(|e| invalid(format!("region value: {e}")))?;
            map.insert(key, value);
        }
        // The seeds of the regions split from this one (a state written
        // before they were carried ends here: none).
        let mut children = Vec::new();
        if let Some(count) = u64_or_end(reader)? {
            if count > CHILDREN_MAX {
                return Err(invalid(format!(
                    "{count} regions split from one exceed CHILDREN_MAX ({CHILDREN_MAX})"
                )));
            }
            for _ in 0..count {
                let child = u64_of(reader)?;
                let bytes = u64_of(reader)?;
                let mut seed = reader.take(bytes);
                let mut copy = |into: &mut dyn Write| -> std::io::Result<()> {
                    std::io::copy(&mut seed, into)?;
                    match seed.limit() {
                        0 => Ok(()),
                        _ => Err(invalid(format!("region {child}'s seed is truncated"))),
                    }
                };
                if self.host.seed_path(child).exists() {
                    // Written when this node applied the split (the same
                    // bytes: a seed never changes).
                    copy(&mut std::io::sink())?;
                } else {
                    // Checked whole before it is renamed into place.
                    self.host.write_seed(child, copy)?;
                }
                children.push(child);
            }
        }
        self.region = Some(RegionDescriptor { id, start, end, epoch });
        self.next = (next != 0).then_some(next);
        self.children = children;
        self.map = Arc::new(map);
        Ok(())
    }
}

/// The id of the region a split of `parent` at log index `index` creates:
/// a hash of the two, the same on every replica, 62 bits (never 0 or 1),
/// so two splits of a cluster pick the same id with odds of about n²/2⁶³
/// for n regions (a collision would merge two regions' groups).
pub fn child_region_id(parent: u64, index: u64) -> u64 {
    // splitmix64's finaliser.
    let mut x = parent.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    2 + (x >> 2)
}

fn apply_write(map: &mut Map, write: KvWrite) -> WriteOutcome {
    match write {
        KvWrite::Put { key, value } => WriteOutcome::Done {
            previous: map.insert(key, value),
            swapped: true,
        },
        KvWrite::Delete { key } => WriteOutcome::Done {
            previous: map.remove(&key),
            swapped: true,
        },
        KvWrite::CompareAndSet { key, expected, new } => {
            let previous = map.get(&key).cloned();
            if previous != expected {
                return WriteOutcome::Done {
                    previous,
                    swapped: false,
                };
            }
            match new {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
            WriteOutcome::Done {
                previous,
                swapped: true,
            }
        }
    }
}

impl StateMachine for RegionStore {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands.map(|command| self.apply(&command).encode()).collect()
    }

    fn on_query(&self, query: &[u8]) -> Vec<u8> {
        match RegionQuery::decode(query) {
            Ok(query) => self.query(query).encode(),
            Err(reason) => RegionAnswer::Refused(reason).encode(),
        }
    }

    fn snapshot_view(&mut self) -> Option<Box<dyn SnapshotView>> {
        self.region
            .is_some()
            .then(|| Box::new(self.view()) as Box<dyn SnapshotView>)
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        self.view().write_state(writer)
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn Read) -> std::io::Result<()> {
        self.load(reader)?;
        // The regions split from this one: a node that learns of a split
        // only from this snapshot (it lagged, or restarts from it) now has
        // their seeds and hosts them; for the others this does nothing.
        for &child in &self.children {
            self.host.request_creation(child);
        }
        Ok(())
    }

    fn on_leader_start(&mut self, term: Term) {
        if let Some(region) = &self.region {
            println!(
                "node {}: leader of region {} in term {term}: {} keys",
                self.host.node,
                region.id,
                self.map.len()
            );
        }
    }

    fn on_leader_stop(&mut self, reason: LeaderStopReason) {
        if let Some(region) = &self.region {
            println!(
                "node {}: leader stop of region {}: {reason:?}",
                self.host.node, region.id
            );
        }
    }
}

/// A region's state as of when it was taken, to write off the shard loop.
struct RegionView {
    host: Arc<RegionHost>,
    region: Option<RegionDescriptor>,
    next: Option<u64>,
    children: Vec<u64>,
    map: Arc<Map>,
}

impl RegionView {
    fn write_state(&self, writer: &mut dyn Write) -> std::io::Result<()> {
        let region = self
            .region
            .as_ref()
            .ok_or_else(|| std::io::Error::other(format!("node {} has no state of this region", self.host.node)))?;
        let mut head = Vec::new();
        region.encode(&mut head);
        head.extend_from_slice(&self.next.unwrap_or(0).to_le_bytes());
        head.extend_from_slice(&(self.map.len() as u64).to_le_bytes());
        writer.write_all(&head)?;
        for (key, value) in self.map.iter() {
            writer.write_all(&(key.len() as u32).to_le_bytes())?;
            writer.write_all(key)?;
            writer.write_all(&(value.len() as u32).to_le_bytes())?;
            writer.write_all(value)?;
        }
        // Every seed this region made, from the files (written once and
        // never changed), so that a node that learns of a split from this
        // snapshot can host the new region.
        writer.write_all(&(self.children.len() as u64).to_le_bytes())?;
        for &child in &self.children {
            let path = self.host.seed_path(child);
            let mut seed = std::fs::File::open(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("region {child}'s seed {}: {e}", path.display())))?;
            let bytes = seed.metadata()?.len();
            writer.write_all(&child.to_le_bytes())?;
            writer.write_all(&bytes.to_le_bytes())?;
            let copied = std::io::copy(&mut (&mut seed).take(bytes), writer)?;
            if copied != bytes {
                return Err(std::io::Error::other(format!(
                    "region {child}'s seed {} shrank while copied",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}

/// Reads a `u64`, or `None` at the end of the input.
fn u64_or_end(reader: &mut dyn Read) -> std::io::Result<Option<u64>> {
    let mut word = [0u8; 8];
    let first = loop {
        match reader.read(&mut word) {
            Ok(count) => break count,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    };
    if first == 0 {
        return Ok(None);
    }
    reader.read_exact(&mut word[first..])?;
    Ok(Some(u64::from_le_bytes(word)))
}

impl SnapshotView for RegionView {
    fn write_to(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        self.write_state(writer)
    }
}

fn put_pairs<'a>(out: &mut Vec<u8>, pairs: Vec<(&'a Vec<u8>, &'a Vec<u8>)>) {
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (key, value) in pairs {
        put_bytes(out, key);
        put_bytes(out, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coraft::raft::LogIndex;

    fn store(dir: &Path) -> (Arc<RegionHost>, RegionStore) {
        let host = RegionHost::new(NodeId(1), dir, vec![NodeId(1)]).unwrap();
        let mut root = RegionStore {
            host: host.clone(),
            region: None,
            next: None,
            children: Vec::new(),
            map: Arc::new(BTreeMap::new()),
        };
        root.region = Some(RegionDescriptor {
            id: ROOT_REGION,
            start: Vec::new(),
            end: Vec::new(),
            epoch: 1,
        });
        (host, root)
    }

    fn run(store: &mut RegionStore, index: u64, command: RegionCommand) -> RegionAnswer {
        let data = command.encode();
        let command = Command {
            index: LogIndex(index),
            term: Term(1),
            data: &data,
        };
        RegionAnswer::decode(&store.on_apply(&mut std::iter::once(command)).remove(0)).unwrap()
    }

    fn put(key: &str) -> RegionCommand {
        RegionCommand::Write(KvWrite::Put {
            key: key.into(),
            value: key.to_uppercase().into(),
        })
    }

    #[test]
    fn a_split_moves_the_upper_keys_into_a_seed_and_refuses_them_after() {
        let dir = tempfile::tempdir().unwrap();
        let (host, mut root) = store(dir.path());
        for (index, key) in ["a", "m", "z"].into_iter().enumerate() {
            assert!(matches!(
                run(&mut root, index as u64 + 1, put(key)),
                RegionAnswer::Ok { .. }
            ));
        }
        let split = RegionCommand::Split {
            epoch: 1,
            key: "m".into(),
        };
        let RegionAnswer::Ok { region, answer } = run(&mut root, 4, split.clone()) else {
            panic!("the split was refused");
        };
        assert_eq!((region.end.as_slice(), region.epoch), (&b"m"[..], 2));
        let child = RegionDescriptor::decode(&mut Reader(&answer)).unwrap();
        assert_eq!(child.id, child_region_id(ROOT_REGION, 4));
        assert_eq!((child.start.as_slice(), child.end.as_slice()), (&b"m"[..], &b""[..]));
        // The same split again (a stale epoch) is refused.
        assert!(matches!(run(&mut root, 5, split), RegionAnswer::Refused(r) if r.contains("epoch")));
        // A write to the moved range is refused with the right neighbour.
        match run(&mut root, 6, put("q")) {
            RegionAnswer::WrongRegion { next, .. } => assert_eq!(next, Some(child.id)),
            other => panic!("a write outside the range was answered {other:?}"),
        }
        assert_eq!(root.map.len(), 1, "only 'a' stays");
        // The child's state machine starts from its seed.
        let seeded = host.state_machine(GroupId(child.id));
        let answer = seeded.on_query(
            &RegionQuery::RawScan {
                start: Vec::new(),
                limit: 10,
            }
            .encode(),
        );
        let RegionAnswer::Ok { region, answer } = RegionAnswer::decode(&answer).unwrap() else {
            panic!("the child refused");
        };
        assert_eq!(region, child);
        let keys: Vec<_> = crate::kv::decode_scan(&answer)
            .unwrap()
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(keys, vec![b"m".to_vec(), b"z".to_vec()]);
    }

    fn raw_keys(store: &dyn StateMachine) -> Vec<Vec<u8>> {
        let answer = store.on_query(
            &RegionQuery::RawScan {
                start: Vec::new(),
                limit: 10,
            }
            .encode(),
        );
        let RegionAnswer::Ok { answer, .. } = RegionAnswer::decode(&answer).unwrap() else {
            panic!("the region refused");
        };
        crate::kv::decode_scan(&answer)
            .unwrap()
            .into_iter()
            .map(|p| p.0)
            .collect()
    }

    #[test]
    fn a_node_that_loads_a_snapshot_past_a_split_gets_the_new_regions_seed() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut root) = store(&dir.path().join("a"));
        for (index, key) in ["a", "m", "z"].into_iter().enumerate() {
            run(&mut root, index as u64 + 1, put(key));
        }
        let split = RegionCommand::Split {
            epoch: 1,
            key: "m".into(),
        };
        run(&mut root, 4, split);
        run(&mut root, 5, put("b"));
        let child = child_region_id(ROOT_REGION, 5 - 1);
        let mut snapshot = Vec::new();
        root.on_snapshot_save(&mut snapshot).unwrap();
        // A node that never applied the split loads the parent's snapshot.
        let lagging = RegionHost::new(NodeId(2), &dir.path().join("b"), vec![NodeId(1), NodeId(2)]).unwrap();
        let mut parent = lagging.state_machine(GroupId(ROOT_REGION));
        parent.on_snapshot_load(&mut snapshot.as_slice()).unwrap();
        assert_eq!(raw_keys(parent.as_ref()), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            lagging.creator.lock().unwrap().1,
            vec![child],
            "the new region is asked for"
        );
        let seeded = lagging.state_machine(GroupId(child));
        assert_eq!(raw_keys(seeded.as_ref()), vec![b"m".to_vec(), b"z".to_vec()]);
        // Its own snapshot carries the seed on; a truncated one is refused.
        let mut again = Vec::new();
        parent.on_snapshot_save(&mut again).unwrap();
        assert_eq!(again, snapshot);
        let third = RegionHost::new(NodeId(3), &dir.path().join("c"), vec![NodeId(3)]).unwrap();
        let error = third
            .state_machine(GroupId(ROOT_REGION))
            .on_snapshot_load(&mut &snapshot[..snapshot.len() - 1])
            .unwrap_err();
        assert!(error.to_string().contains("truncated"), "{error}");
        assert!(!third.seed_path(child).exists(), "a truncated seed is not kept");
    }

    #[test]
    fn a_region_without_a_seed_refuses_and_bad_splits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (host, mut root) = store(dir.path());
        let orphan = host.state_machine(GroupId(77));
        let answer = orphan.on_query(&RegionQuery::Describe.encode());
        assert!(matches!(
            RegionAnswer::decode(&answer).unwrap(),
            RegionAnswer::Refused(_)
        ));
        let at_start = RegionCommand::Split {
            epoch: 1,
            key: Vec::new(),
        };
        assert!(matches!(run(&mut root, 1, at_start), RegionAnswer::Refused(r) if r.contains("inside")));
        assert!(RegionCommand::decode(&[9]).is_err());
    }
}
