//! The membership commands: each group's change goes to its leader
//! (following a not-leader hint a few times); reset-peers goes to every
//! node given.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use coraft::admin::{AdminCallError, AdminClient, AdminError, AdminRequest, MemberSpec};
use coraft::raft::{GroupId, NodeId};
use serde_json::{json, Value};

use crate::leaders::await_leader;
use crate::show::{group_ids, ids};
use crate::{reachable, ChangeArgs, Target};

pub(crate) fn member(node: u64, address: Option<SocketAddr>) -> MemberSpec {
    MemberSpec {
        node,
        address: address.map(|a| a.to_string()),
    }
}

/// The groups a membership command changes: those named, or every group
/// the nodes host.
pub(crate) fn groups_to_change(clients: &mut [AdminClient], named: &[u64]) -> Result<Vec<GroupId>> {
    if !named.is_empty() {
        return Ok(group_ids(named));
    }
    let mut all = BTreeSet::new();
    for client in clients.iter_mut() {
        all.extend(client.status(&[])?.groups.iter().map(|g| GroupId(g.group)));
    }
    Ok(all.into_iter().collect())
}

/// Sends `request(group)` to the leader of each group (following a
/// not-leader hint a few times) and reports each group's outcome.
pub(crate) fn on_leaders(
    target: &Target,
    args: &ChangeArgs,
    what: &str,
    as_json: bool,
    request: impl Fn(u64) -> AdminRequest,
) -> Result<()> {
    let mut clients = reachable(target)?;
    let groups = groups_to_change(&mut clients, &args.groups)?;
    let wait = Duration::from_millis(args.wait_ms).max(target.timeout);
    for client in &mut clients {
        client.set_timeout(wait)?;
    }
    let mut outcomes: Vec<(GroupId, Result<(), String>)> = Vec::new();
    for group in groups {
        let outcome = change_on_leader(&mut clients, group, wait, &request).map_err(|e| format!("{e:#}"));
        outcomes.push((group, outcome));
    }
    report_changes(&outcomes, what, as_json)
}

/// Follows a leader hint at most this many times per group.
pub(crate) const LEADER_HINTS_FOLLOWED_MAX: usize = 3;

pub(crate) fn change_on_leader(
    clients: &mut [AdminClient],
    group: GroupId,
    wait: Duration,
    request: &impl Fn(u64) -> AdminRequest,
) -> Result<()> {
    let mut leader = await_leader(clients, group, wait)?;
    for _ in 0..LEADER_HINTS_FOLLOWED_MAX {
        let client = clients.iter_mut().find(|c| c.node() == leader).ok_or_else(|| {
            anyhow!("node {leader} leads group {group} but is not among the nodes given (add its --node)")
        })?;
        match client.change_membership(request(group.0)) {
            Ok(()) => return Ok(()),
            Err(AdminCallError::Node {
                error:
                    AdminError::NotLeader {
                        leader_hint: Some(hint),
                        ..
                    },
                ..
            }) if hint != leader.0 => leader = NodeId(hint),
            Err(error) => return Err(error.into()),
        }
    }
    bail!("group {group}: its leader kept moving; retry")
}

pub(crate) fn report_changes(outcomes: &[(GroupId, Result<(), String>)], what: &str, as_json: bool) -> Result<()> {
    if as_json {
        let out: Vec<Value> = outcomes
            .iter()
            .map(|(group, outcome)| match outcome {
                Ok(()) => json!({"group": group.0, "done": true}),
                Err(error) => json!({"group": group.0, "done": false, "error": error}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "changes": out }))?);
    } else {
        for (group, outcome) in outcomes {
            match outcome {
                Ok(()) => println!("group {group}: {what}"),
                Err(error) => eprintln!("error: group {group}: {error}"),
            }
        }
    }
    let failed = outcomes.iter().filter(|(_, o)| o.is_err()).count();
    match failed {
        0 => Ok(()),
        1 if outcomes.len() == 1 => bail!("the change was not made"),
        n => bail!("{n} of {} group(s) not changed", outcomes.len()),
    }
}

pub(crate) const RESET_WARNING: &str =
    "reset-peers forces the voters of a group on each node given, WITHOUT CONSENSUS, \
for a group whose majority is gone for good. It CAN LOSE ACKNOWLEDGED WRITES: every entry that only the lost \
nodes held is gone. If a node you count as lost comes back with its data, two leaders can be elected and the \
group's copies diverge: wipe such a node's WAL before it returns. Run it on every survivor, with the same voters.";

pub(crate) fn reset_peers(
    target: &Target,
    args: &ChangeArgs,
    voters: &[u64],
    confirmed: bool,
    as_json: bool,
) -> Result<()> {
    eprintln!("WARNING: {RESET_WARNING}");
    if !confirmed {
        bail!("refused without --yes-i-know-this-can-lose-data");
    }
    let mut clients = target.connect_every()?;
    let groups = groups_to_change(&mut clients, &args.groups)?;
    let wait = Duration::from_millis(args.wait_ms).max(target.timeout);
    let mut outcomes: Vec<(GroupId, Result<(), String>)> = Vec::new();
    for group in groups {
        let mut outcome = Ok(());
        for client in &mut clients {
            client.set_timeout(wait)?;
            let request = AdminRequest::ResetPeers {
                group: group.0,
                voters: voters.to_vec(),
                confirm_data_loss: true,
            };
            if let Err(error) = client.change_membership(request) {
                outcome = Err(error.to_string());
                break;
            }
        }
        outcomes.push((group, outcome));
    }
    let nodes: Vec<u64> = clients.iter().map(|c| c.node().0).collect();
    let what = format!("voters forced to {} on node(s) {}", ids(voters), ids(&nodes));
    report_changes(&outcomes, &what, as_json)
}
