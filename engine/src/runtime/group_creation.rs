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
        if self.groups.contains_key(&group) {
            return Ok(());
        }
        let Some(creation) = self.creation.as_mut() else {
            return Err(Error::Config("this shard cannot create groups".into()));
        };
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
