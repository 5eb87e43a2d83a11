//! Creating a group on a running shard (`Node::create_group`): the group is
//! first written into the shard's list of created groups (made durable,
//! `created_groups.rs`), then recovered from the shard's WAL like a group
//! named at start (its log there is empty unless it existed before) and
//! handed to the shard loop, which ticks it from the next turn.

use std::path::PathBuf;

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
    /// The groups created so far.
    pub created: CreatedGroups,
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

/// Whether `a` and `b` name the same nodes, in any order.
fn same_voters(a: &[NodeId], b: &[NodeId]) -> bool {
    let set = |v: &[NodeId]| v.iter().copied().collect::<std::collections::BTreeSet<_>>();
    set(a) == set(b)
}
