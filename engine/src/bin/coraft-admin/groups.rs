//! The group commands: `create-group` and `remove-group` create or remove
//! a group at run time on each node given (admin protocol 6:
//! `Node::create_group`, `Node::remove_group` on each node).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use anyhow::{bail, Result};
use coraft::raft::{GroupId, NodeId};
use serde_json::{json, Value};

use crate::show::ids;
use crate::Target;

/// What one node did: its address, its id (if it was reached) and the
/// outcome.
struct Outcome {
    address: SocketAddr,
    node: Option<NodeId>,
    result: Result<(), String>,
}

/// Creates `group` with `voters` (default: every node given) on each node
/// given that is among them.
pub(crate) fn create_group(target: &Target, group: u64, voters: &[u64], as_json: bool) -> Result<()> {
    let mut clients = target.connect_every()?;
    let voters: Vec<u64> = if voters.is_empty() {
        clients.iter().map(|c| c.node().0).collect()
    } else {
        voters.to_vec()
    };
    clients.retain(|c| voters.contains(&c.node().0));
    if clients.is_empty() {
        bail!(
            "none of the nodes given is among the voters {}: give a voter's --node",
            ids(&voters)
        );
    }
    let given: BTreeSet<u64> = clients.iter().map(|c| c.node().0).collect();
    let missing: Vec<u64> = voters.iter().copied().filter(|v| !given.contains(v)).collect();
    let voter_ids: Vec<NodeId> = voters.iter().map(|&v| NodeId(v)).collect();
    let outcomes: Vec<Outcome> = clients
        .iter_mut()
        .map(|client| Outcome {
            address: client.address(),
            node: Some(client.node()),
            result: client
                .create_group(GroupId(group), &voter_ids)
                .map_err(|e| e.to_string()),
        })
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "warning: voter(s) {} of group {group} not among the nodes given: create the group there too \
             (it elects a leader once a majority of its voters hosts it)",
            ids(&missing)
        );
    }
    let what = format!("created with voters {}", ids(&voters));
    report(group, &outcomes, &what, "created", json!({ "voters": voters }), as_json)
}

/// Removes `group` on each node given; warns when voters of the group
/// (as the nodes reported it before) keep it.
pub(crate) fn remove_group(target: &Target, group: u64, as_json: bool) -> Result<()> {
    let mut outcomes = Vec::new();
    let mut voters = BTreeSet::new();
    for (address, client) in target.connect_all() {
        let mut client = match client {
            Ok(client) => client,
            Err(error) => {
                outcomes.push(Outcome {
                    address,
                    node: None,
                    result: Err(error.to_string()),
                });
                continue;
            }
        };
        // Its voters as this node knows them (none if it does not host it;
        // the removal then says why).
        if let Ok(report) = client.status(&[GroupId(group)]) {
            for g in &report.groups {
                voters.extend(g.voters.iter().chain(&g.outgoing_voters).chain(&g.learners).copied());
            }
        }
        outcomes.push(Outcome {
            address,
            node: Some(client.node()),
            result: client.remove_group(GroupId(group)).map_err(|e| e.to_string()),
        });
    }
    let removed: BTreeSet<u64> = outcomes
        .iter()
        .filter(|o| o.result.is_ok())
        .filter_map(|o| o.node.map(|n| n.0))
        .collect();
    let left: Vec<u64> = voters.iter().copied().filter(|v| !removed.contains(v)).collect();
    if !removed.is_empty() && !left.is_empty() {
        eprintln!(
            "warning: group {group} goes on at node(s) {} (members it was not removed from), with fewer \
             replicas: to retire the group, remove it on every member; to take one node out of a group that \
             goes on, `coraft-admin remove --id ID --group {group}` first",
            ids(&left)
        );
    }
    report(
        group,
        &outcomes,
        "removed",
        "removed",
        json!({ "members_left": left }),
        as_json,
    )
}

/// Prints each node's outcome (a table line, or JSON with `extra`'s
/// fields); an error if any failed.
fn report(group: u64, outcomes: &[Outcome], what: &str, done: &str, extra: Value, as_json: bool) -> Result<()> {
    if as_json {
        let nodes: Vec<Value> = outcomes
            .iter()
            .map(|o| {
                json!({
                    "node": o.node.map(|n| n.0),
                    "address": o.address.to_string(),
                    "done": o.result.is_ok(),
                    "error": o.result.as_ref().err(),
                })
            })
            .collect();
        let mut out = json!({ "group": group, "nodes": nodes });
        if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), extra) {
            out.extend(extra);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for o in outcomes {
            match (&o.result, o.node) {
                (Ok(()), Some(node)) => println!("group {group}: {what} on node {node}"),
                (Ok(()), None) => println!("group {group}: {what} at {}", o.address),
                (Err(error), _) => eprintln!("error: group {group}: {error}"),
            }
        }
    }
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if failed > 0 {
        bail!("group {group} was not {done} on {failed} of {} node(s)", outcomes.len());
    }
    Ok(())
}
