//! The region KV's routing client: it finds the region of a key in its
//! cached region map, sends the request to that region's group (the engine
//! client follows "not leader" to the leader), and when the region answers
//! "wrong region" it caches the region's new range, follows the region's
//! right neighbour, and tries again. A cold cache starts at region 1, whose
//! range always starts at the empty key, so every key is found by walking
//! right from there.
//!
//! A write refused with "wrong region" was not applied (the range is
//! checked when the command is applied), so sending it to another region
//! cannot apply it twice; a write whose answer was lost is sent again to
//! the same group with the same session and sequence (applied at most once).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use coraft::client::{Client, ClientFailure};
use coraft::raft::GroupId;
use coraft_net::schema::ClientError;

use crate::kv::{decode_get, decode_scan, KvQuery, KvWrite, Pair, WriteOutcome, SCAN_PAIRS_MAX};
use crate::region::{decode_next, RegionAnswer, RegionCommand, RegionDescriptor, RegionQuery, ROOT_REGION};

/// Bound on the regions one request walks through before giving up (each
/// hop follows a "wrong region" answer).
pub const ROUTE_HOPS_MAX: usize = 64;
/// Bound on the regions a map listing visits, and on the parts (one
/// region's pairs, at most `SCAN_PAIRS_MAX` of them) a scan reads.
pub const REGIONS_MAX: usize = 4096;
/// Pause before asking a node again for a region it does not host yet (the
/// split that creates it is still being applied there).
const UNKNOWN_REGION_BACKOFF: Duration = Duration::from_millis(50);

/// A client of the region KV.
pub struct RegionClient {
    client: Client,
    /// The cached region map, by first key.
    regions: BTreeMap<Vec<u8>, RegionDescriptor>,
    /// Keep retrying this long while no node answers.
    wait: Duration,
    /// "Wrong region" answers followed so far.
    redirects: u64,
}

/// A request as sent to a region.
enum Sent<'a> {
    Write(&'a [u8]),
    Read(&'a [u8]),
}

impl RegionClient {
    /// A routing client over `client` (a new session), retrying for up to
    /// `wait` while the cluster does not answer.
    pub fn new(client: Client, wait: Duration) -> RegionClient {
        RegionClient {
            client,
            regions: BTreeMap::new(),
            wait,
            redirects: 0,
        }
    }

    /// How many "wrong region" answers this client followed.
    pub fn redirects(&self) -> u64 {
        self.redirects
    }

    /// The cached region map, in key order.
    pub fn cached_regions(&self) -> Vec<RegionDescriptor> {
        self.regions.values().cloned().collect()
    }

    /// A put, delete or compare-and-set, routed by its key.
    pub fn write(&mut self, write: &KvWrite) -> Result<WriteOutcome> {
        let key = match write {
            KvWrite::Put { key, .. } | KvWrite::Delete { key } | KvWrite::CompareAndSet { key, .. } => key.clone(),
        };
        let bytes = RegionCommand::Write(write.clone()).encode();
        RegionCommand::decode(&bytes).map_err(|reason| anyhow!("{reason} (not sent)"))?;
        let (_, answer) = self.routed(&key, Sent::Write(&bytes))?;
        WriteOutcome::decode(&answer).map_err(|e| anyhow!("{e}"))
    }

    /// A linearizable get, routed by its key.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let bytes = RegionQuery::Kv(KvQuery::Get { key: key.to_vec() }).encode();
        RegionQuery::decode(&bytes).map_err(|reason| anyhow!("{reason} (not sent)"))?;
        let (_, answer) = self.routed(key, Sent::Read(&bytes))?;
        decode_get(&answer).map_err(|e| anyhow!("{e}"))
    }

    /// Up to `limit` pairs with `start <= key < end` (`end` empty: no end),
    /// in key order, across as many regions as the range covers (each
    /// region's part is a linearizable read of that region).
    pub fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Pair>> {
        let mut pairs = Vec::new();
        let mut from = start.to_vec();
        for _ in 0..REGIONS_MAX {
            let want = (limit - pairs.len()).min(SCAN_PAIRS_MAX) as u32;
            let bytes = RegionQuery::Kv(KvQuery::Scan {
                start: from.clone(),
                end: end.to_vec(),
                limit: want,
            })
            .encode();
            let (region, answer) = self.routed(&from, Sent::Read(&bytes))?;
            let part = decode_scan(&answer).map_err(|e| anyhow!("{e}"))?;
            let full = part.len() == want as usize;
            if let Some((last, _)) = part.last() {
                from = last.clone();
                from.push(0);
            }
            pairs.extend(part);
            if pairs.len() >= limit {
                return Ok(pairs);
            }
            if !full {
                // This region has no more of the range: go on past its end.
                if region.end.is_empty() || (!end.is_empty() && region.end.as_slice() >= end) {
                    return Ok(pairs);
                }
                from = region.end.clone();
            }
        }
        bail!("a scan read REGIONS_MAX ({REGIONS_MAX}) parts (a part: one region's, up to SCAN_PAIRS_MAX pairs)")
    }

    /// Splits the region holding `key` at `key`; returns the parent as it is
    /// now and the new region.
    pub fn split(&mut self, key: &[u8]) -> Result<(RegionDescriptor, RegionDescriptor)> {
        let lookup = RegionQuery::Kv(KvQuery::Get { key: key.to_vec() }).encode();
        for _ in 0..ROUTE_HOPS_MAX {
            // The region holding the key now, with its epoch (a read of it).
            let (region, _) = self.routed(key, Sent::Read(&lookup))?;
            let bytes = RegionCommand::Split {
                epoch: region.epoch,
                key: key.to_vec(),
            }
            .encode();
            match self.ask(region.id, Sent::Write(&bytes))? {
                RegionAnswer::Ok { region, answer } => {
                    let child = crate::region::decode_descriptor(&answer).map_err(|e| anyhow!("{e}"))?;
                    self.learn(region.clone());
                    self.learn(child.clone());
                    return Ok((region, child));
                }
                // It split since the lookup: look again.
                RegionAnswer::Refused(reason) if reason.contains("epoch") => {}
                RegionAnswer::Refused(reason) => bail!("split refused: {reason}"),
                RegionAnswer::WrongRegion { region, .. } => {
                    self.learn(region);
                }
            }
        }
        bail!("the split did not find its region in ROUTE_HOPS_MAX ({ROUTE_HOPS_MAX}) hops")
    }

    /// The whole region map, walked from region 1 through each region's
    /// right neighbour (each step a linearizable read of that region).
    pub fn regions(&mut self) -> Result<Vec<RegionDescriptor>> {
        let mut map = Vec::new();
        let mut next = Some(ROOT_REGION);
        while let Some(id) = next {
            if map.len() >= REGIONS_MAX {
                bail!("the region map is longer than REGIONS_MAX ({REGIONS_MAX})");
            }
            match self.ask(id, Sent::Read(&RegionQuery::Describe.encode()))? {
                RegionAnswer::Ok { region, answer } => {
                    next = decode_next(&answer).map_err(|e| anyhow!("{e}"))?;
                    self.learn(region.clone());
                    map.push(region);
                }
                other => bail!("region {id} answered {other:?}"),
            }
        }
        Ok(map)
    }

    /// Every pair region `id`'s group holds, whatever its range (to check
    /// that a region holds only its own keys).
    pub fn raw_pairs(&mut self, id: u64) -> Result<Vec<Pair>> {
        let mut pairs: Vec<Pair> = Vec::new();
        let mut from = Vec::new();
        loop {
            let bytes = RegionQuery::RawScan {
                start: from.clone(),
                limit: SCAN_PAIRS_MAX as u32,
            }
            .encode();
            let part = match self.ask(id, Sent::Read(&bytes))? {
                RegionAnswer::Ok { answer, .. } => decode_scan(&answer).map_err(|e| anyhow!("{e}"))?,
                other => bail!("region {id} answered {other:?}"),
            };
            let done = part.len() < SCAN_PAIRS_MAX;
            if let Some((last, _)) = part.last() {
                from = last.clone();
                from.push(0);
            }
            pairs.extend(part);
            if done {
                return Ok(pairs);
            }
        }
    }

    /// Sends `sent` to the region of `key`, following "wrong region"
    /// answers; returns the region that served it and its answer.
    fn routed(&mut self, key: &[u8], sent: Sent<'_>) -> Result<(RegionDescriptor, Vec<u8>)> {
        for _ in 0..ROUTE_HOPS_MAX {
            let region = self.locate(key)?;
            match self.ask(region.id, sent.again())? {
                RegionAnswer::Ok { region, answer } => {
                    self.learn(region.clone());
                    return Ok((region, answer));
                }
                RegionAnswer::WrongRegion { region, next } => {
                    self.redirects += 1;
                    let past_end = !region.end.is_empty() && key >= region.end.as_slice();
                    self.learn(region.clone());
                    match next {
                        // Its right neighbour starts at its end; the
                        // neighbour's answer says where it ends.
                        Some(next) if past_end => {
                            self.learn(RegionDescriptor {
                                id: next,
                                start: region.end,
                                end: Vec::new(),
                                epoch: 0,
                            });
                        }
                        // The cache led us wrong: start over from region 1.
                        _ => self.regions.clear(),
                    }
                }
                RegionAnswer::Refused(reason) => bail!("refused: {reason}"),
            }
        }
        bail!("no region took the key in ROUTE_HOPS_MAX ({ROUTE_HOPS_MAX}) hops")
    }

    /// The cached region whose range holds `key`, or region 1.
    fn locate(&self, key: &[u8]) -> Result<RegionDescriptor> {
        let cached = self
            .regions
            .range(..=key.to_vec())
            .next_back()
            .map(|(_, region)| region)
            .filter(|region| region.contains(key));
        Ok(cached.cloned().unwrap_or(RegionDescriptor {
            id: ROOT_REGION,
            start: Vec::new(),
            end: Vec::new(),
            epoch: 0,
        }))
    }

    /// Caches `region`, dropping the cached regions it overlaps (older news:
    /// ranges only shrink, and a new region takes a range an old one had).
    fn learn(&mut self, region: RegionDescriptor) {
        let overlapping: Vec<Vec<u8>> = self
            .regions
            .range(region.start.clone()..)
            .take_while(|(start, _)| region.end.is_empty() || start.as_slice() < region.end.as_slice())
            .map(|(start, _)| start.clone())
            .collect();
        for start in overlapping {
            self.regions.remove(&start);
        }
        // One that starts before it and runs into it is stale too.
        if let Some((start, before)) = self.regions.range(..region.start.clone()).next_back() {
            if before.end.is_empty() || before.end > region.start {
                let start = start.clone();
                self.regions.remove(&start);
            }
        }
        self.regions.insert(region.start.clone(), region);
    }

    /// Sends `sent` to region `id`'s group and decodes the answer, retrying
    /// while the cluster does not answer (a write with the same session and
    /// sequence) or a node does not host the region yet.
    fn ask(&mut self, id: u64, sent: Sent<'_>) -> Result<RegionAnswer> {
        let deadline = Instant::now() + self.wait;
        let group = GroupId(id);
        let first_sequence = self.client.next_sequence();
        let mut result = match sent {
            Sent::Write(bytes) => self.client.write(group, bytes),
            Sent::Read(bytes) => self.client.read(group, bytes),
        };
        loop {
            let failure = match result {
                Ok(bytes) => return RegionAnswer::decode(&bytes).map_err(|e| anyhow!("region {id}: {e}")),
                Err(failure) => failure,
            };
            let retryable = matches!(
                failure,
                ClientFailure::GaveUp { .. } | ClientFailure::Refused(ClientError::UnknownGroup)
            );
            if !retryable || Instant::now() >= deadline {
                bail!(
                    "region {id}: {failure} (after {} s{})",
                    self.wait.as_secs(),
                    if matches!(sent, Sent::Write(_)) {
                        "; the write may or may not have been applied"
                    } else {
                        ""
                    }
                );
            }
            std::thread::sleep(UNKNOWN_REGION_BACKOFF);
            result = match (&sent, &failure) {
                // Lost answer: same session and sequence (at most once).
                (Sent::Write(_), _) if self.client.next_sequence() != first_sequence => self.client.retry_write(),
                (Sent::Write(bytes), _) => self.client.write(group, bytes),
                (Sent::Read(bytes), _) => self.client.read(group, bytes),
            };
        }
    }
}

impl Sent<'_> {
    fn again(&self) -> Sent<'_> {
        match self {
            Sent::Write(bytes) => Sent::Write(bytes),
            Sent::Read(bytes) => Sent::Read(bytes),
        }
    }
}
