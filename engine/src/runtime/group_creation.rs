//! Creating a group on a running shard (`Node::create_group`): the group is
//! first written into the shard's list of created groups (made durable,
//! `created_groups.rs`), then recovered from the shard's WAL like a group
//! named at start (its log there is empty unless it existed before) and
//! handed to the shard loop, which ticks it from the next turn.
//!
//! Removing one (`Node::remove_group`) runs the other way: the list marks
//! it removed (durably) first, then the shard drops the group (answering
//! whatever waited on it), appends a WAL record that forgets it, and
//! deletes its snapshots once its apply lane, if it has one, has drained
//! and ended. A restart finds it marked removed, does not open it, and
//! finishes what a crash interrupted (the forget record, the snapshots).

use std::path::{Path, PathBuf};

use crate::api::Error;
use crate::raft::{Configuration, GroupId, NodeId};

use super::created_groups::CreatedGroups;
use super::node::{NodeOptions, StateMachineFactory};
use super::shard::Shard;

/// What a shard needs to create groups after it started.
pub(crate) struct GroupCreation {
    /// The node's options (the groups' protocol settings and limits).
    pub options: NodeOptions,
    /// The shard's WAL directory (the list and the snapshot stores).
    pub dir: PathBuf,
    /// Makes the new group's state machine.
    pub factory: StateMachineFactory,
    /// The groups created so far (and those removed).
    pub created: CreatedGroups,
    /// Groups removed whose apply thread may still be finishing its queue:
    /// their snapshots are deleted once it ended. At most one per removed
    /// group (`REMOVED_GROUPS_MAX`).
    pub retiring: Vec<RetiringGroup>,
}

/// A removed group whose snapshots are deleted once its lane thread ended.
pub(crate) struct RetiringGroup {
    group: GroupId,
    lane_thread: Option<std::thread::JoinHandle<()>>,
}

impl Shard {
    /// Creates `group` with `voters` here, or does nothing if it exists.
    pub(super) fn create_group(&mut self, group: GroupId, voters: Vec<NodeId>) -> Result<(), Error> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let Some(creation) = self.creation.as_mut() else {
            return Err(Error::Config("this shard cannot create groups".into()));
        };
        if creation.created.is_removed(group) {
            return Err(Error::Config(format!(
                "group {group} was removed from this node; a removed group's id is not created again here \
                 (its peers may still hold the old group under that id)"
            )));
        }
        if self.groups.contains_key(&group) {
            // Done already only if it was created with these voters: a
            // caller told "done" for other voters, or for a group of
            // `NodeOptions::groups` (not in the list, so gone after a
            // restart without it), would be misled.
            return match creation.created.voters(group) {
                Some(first) if same_voters(first, &voters) => Ok(()),
                Some(first) => Err(Error::Config(format!(
                    "group {group} exists here already, created with other voters ({first:?}, not {voters:?})"
                ))),
                None => Err(Error::Config(format!(
                    "group {group} is one of NodeOptions::groups here, not a group to create"
                ))),
            };
        }
        if voters.is_empty() || !voters.contains(&self.node) {
            return Err(Error::Config(format!(
                "group {group}: the voters {voters:?} must include this node ({})",
                self.node
            )));
        }
        if let Some(unknown) = voters.iter().find(|v| !self.addresses.contains_key(v)) {
            return Err(Error::Config(format!(
                "group {group}: voter {unknown} is not a node this shard knows an address of"
            )));
        }
        let groups_max = creation.options.limits.groups_max;
        if self.groups.len() >= groups_max {
            return Err(Error::Config(format!(
                "group {group}: this shard hosts {} groups already, limits.groups_max is {groups_max}",
                self.groups.len()
            )));
        }
        creation.created.add(group, &voters)?;
        let configuration = Configuration::with_voters(voters.iter().copied());
        let hosted = super::node::open_group(
            &creation.options,
            &creation.dir,
            &self.wal,
            group,
            configuration,
            &creation.factory,
        )?;
        log::info!(
            "node {} shard {}: created group {group} with voters {voters:?}",
            self.node,
            self.shard_index()
        );
        self.groups.insert(group, hosted);
        self.admin.add_group(group);
        self.dirty.insert(group);
        self.awake.insert(group);
        Ok(())
    }
}

impl Shard {
    /// Removes `group`, created at run time, from this shard; succeeds and
    /// does nothing if it was removed already.
    pub(super) fn remove_group(&mut self, group: GroupId) -> Result<(), Error> {
        let (node, shard) = (self.node, self.shard_index());
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let Some(creation) = self.creation.as_mut() else {
            return Err(Error::Config("this shard cannot remove groups".into()));
        };
        if creation.created.is_removed(group) {
            return Ok(());
        }
        let Some(hosted) = self.groups.get(&group) else {
            return Err(Error::UnknownGroup(group));
        };
        if creation.created.voters(group).is_none() {
            return Err(Error::Config(format!(
                "group {group} is one of NodeOptions::groups here, not a group created at run time: \
                 only a created group can be removed"
            )));
        }
        // Snapshot files being written, sent or loaded would outlive the
        // deletion of the group's snapshot directory.
        let busy = if hosted.snapshot_writing {
            Some("writing a snapshot")
        } else if hosted.loading.is_some() {
            Some("loading a snapshot installed from its leader")
        } else if !self.installs.progress(group, std::time::Instant::now()).is_empty() {
            Some("sending or receiving a snapshot")
        } else {
            None
        };
        if let Some(what) = busy {
            return Err(Error::Config(format!(
                "group {group} is {what} here; remove it again once that is done"
            )));
        }
        // Durable first: from here on a restart does not bring it back.
        creation.created.remove(group)?;
        let mut hosted = self.groups.remove(&group).expect("checked above");
        self.events.crc_hints.forget_group(group);
        let error = Error::GroupRemoved(group);
        hosted.fail_all(error.clone());
        for reply in hosted.snapshot_waiters.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
        self.pending_snapshots.retain(|(waiting, reply)| {
            let keep = *waiting != group;
            if !keep {
                let _ = reply.send(Err(error.clone()));
            }
            keep
        });
        if let Some(pending) = self.membership_changes.remove(&group) {
            let _ = pending.reply.send(Err(error.clone()));
        }
        self.policy_snapshots.remove(&group);
        self.dirty.remove(&group);
        self.awake.remove(&group);
        self.admin.remove_group(group);
        // Its lane applies what it was handed, then its thread ends; the
        // shard does not wait for it (`finish_removals`).
        let lane_thread = hosted.lane.take().and_then(super::apply_lane::ApplyLane::retire);
        drop(hosted);
        if let Err(error) = self.wal.forget_group(group.0) {
            // The list says removed: the next start appends it again.
            log::error!("node {node} shard {shard}: forgetting removed group {group} in the WAL: {error}");
        }
        // Its records no longer hold segments back.
        self.segment_deletion.want();
        creation.retiring.push(RetiringGroup { group, lane_thread });
        log::info!("node {node} shard {shard}: removed group {group}");
        self.finish_removals(false);
        Ok(())
    }

    /// The error for a request to `group`, which this shard does not host:
    /// [`Error::GroupRemoved`] if it removed it, else [`Error::UnknownGroup`].
    pub(super) fn missing_group(&self, group: GroupId) -> Error {
        match &self.creation {
            Some(creation) if creation.created.is_removed(group) => Error::GroupRemoved(group),
            _ => Error::UnknownGroup(group),
        }
    }

    /// Deletes the snapshots of removed groups whose lane thread ended
    /// (all of them, waiting for the threads, when `wait`: shutdown).
    pub(super) fn finish_removals(&mut self, wait: bool) {
        let Some(creation) = self.creation.as_mut() else {
            return;
        };
        let (node, dir) = (self.node, &creation.dir);
        creation.retiring.retain_mut(|retiring| {
            if !wait && retiring.lane_thread.as_ref().is_some_and(|t| !t.is_finished()) {
                return true;
            }
            if let Some(thread) = retiring.lane_thread.take() {
                if thread.join().is_err() {
                    log::error!(
                        "node {node}: removed group {}: its state machine panicked on its apply thread",
                        retiring.group
                    );
                }
            }
            delete_snapshots(node, dir, retiring.group);
            false
        });
    }
}

/// At a shard's start: refuses a removed group that `NodeOptions::groups`
/// names, and finishes each removal a crash interrupted (the WAL record
/// that forgets the group, its snapshot directory).
pub(super) fn finish_removals_at_start(
    options: &NodeOptions,
    shard_dir: &Path,
    wal: &coraft_wal::Wal,
    created: &CreatedGroups,
) -> Result<(), Error> {
    for group in created.removed() {
        if options.groups.contains(&group) {
            return Err(Error::Config(format!(
                "group {group} is in NodeOptions::groups, but it was removed from this node ({} lists it as removed)",
                shard_dir.join(super::created_groups::CREATED_GROUPS_FILE).display()
            )));
        }
        if wal.group_state(group.0).is_some() {
            wal.forget_group(group.0)
                .map_err(|e| Error::Storage(format!("group {group}: forgetting the removed group in the WAL: {e}")))?;
        }
        delete_snapshots(options.node_id, shard_dir, group);
    }
    Ok(())
}

/// Deletes `group`'s snapshot directory, if there is one. A failure is
/// logged: the group stays removed, and the next start tries again.
fn delete_snapshots(node: NodeId, shard_dir: &Path, group: GroupId) {
    let dir = super::node::snapshot_dir(shard_dir, group);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => log::error!(
            "node {node}: deleting the snapshots of removed group {group} in {}: {error}",
            dir.display()
        ),
    }
}

/// Whether `a` and `b` name the same nodes, in any order.
fn same_voters(a: &[NodeId], b: &[NodeId]) -> bool {
    let set = |v: &[NodeId]| v.iter().copied().collect::<std::collections::BTreeSet<_>>();
    set(a) == set(b)
}
