//! What the nodes report: the status table and JSON, snapshots, and each
//! group's leader as the reports tell it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context, Result};
use coraft::admin::{AdminRole, GroupReport, InstallReport, Leadership, NodeReport, ShardReport, ShardState};
use coraft::raft::{GroupId, NodeId};
use serde_json::{json, Value};

use crate::Target;

pub(crate) fn group_ids(groups: &[u64]) -> Vec<GroupId> {
    groups.iter().map(|&g| GroupId(g)).collect()
}

pub(crate) fn role_name(role: AdminRole) -> &'static str {
    match role {
        AdminRole::Follower => "follower",
        AdminRole::PreCandidate => "pre-candidate",
        AdminRole::Candidate => "candidate",
        AdminRole::Leader => "leader",
    }
}

pub(crate) fn ids(list: &[u64]) -> String {
    if list.is_empty() {
        return "-".into();
    }
    list.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// What a node reported: its status, its snapshot streams in flight
/// (`None` from a node of admin protocol version 3, which does not report
/// them) and its shards' states (`None` from a node of version 3 or 4).
pub(crate) struct Reported {
    address: SocketAddr,
    report: NodeReport,
    installs: Option<(Vec<InstallReport>, u64)>,
    shards: Option<Vec<ShardReport>>,
    /// The admin protocol version the node speaks.
    version: u16,
}

pub(crate) fn shard_state_name(state: ShardState) -> &'static str {
    match state {
        ShardState::Serving => "serving",
        ShardState::Failed => "failed",
        ShardState::Stopped => "stopped",
    }
}

/// The shard of `report`'s node that hosts `group` (as the node routes
/// it: group `g` on shard `g % shards`), and its report if the node gave
/// one.
fn shard_of<'a>(report: &NodeReport, shards: Option<&'a [ShardReport]>, group: u64) -> (u64, Option<&'a ShardReport>) {
    let shard = group % u64::from(report.shards.max(1));
    (
        shard,
        shards.and_then(|list| list.iter().find(|s| u64::from(s.shard) == shard)),
    )
}

fn shard_json(shard: &ShardReport) -> Value {
    json!({
        "shard": shard.shard,
        "state": shard_state_name(shard.state),
        "groups": shard.groups,
        "reason": if shard.reason.is_empty() { Value::Null } else { shard.reason.clone().into() },
    })
}

fn install_json(install: &InstallReport) -> Value {
    json!({
        "direction": if install.sending { "sending" } else { "receiving" },
        "peer": install.peer,
        "snapshot_index": install.snapshot_index,
        "snapshot_term": install.snapshot_term,
        "total_bytes": install.total_bytes,
        "sent_bytes": install.sent_bytes,
        "acknowledged_bytes": install.acknowledged_bytes,
        "elapsed_ms": install.elapsed_ms,
    })
}

/// A group's JSON; `installs` are the node's streams in flight (`None`:
/// the node does not report them), of which the group's are listed.
pub(crate) fn group_json_with_installs(group: &GroupReport, installs: Option<&[InstallReport]>) -> Value {
    let mut value = group_json(group);
    value["installs"] = match installs {
        Some(installs) => installs
            .iter()
            .filter(|i| i.group == group.group)
            .map(install_json)
            .collect::<Vec<_>>()
            .into(),
        None => Value::Null,
    };
    value
}

pub(crate) fn group_json(group: &GroupReport) -> Value {
    json!({
        "group": group.group,
        "role": role_name(group.role),
        "term": group.term,
        "leader": group.leader,
        "commit_index": group.commit_index,
        "applied_index": group.applied_index,
        "last_index": group.last_index,
        "snapshot_index": group.snapshot_index,
        "quiesced": group.quiesced,
        "voters": group.voters,
        "outgoing_voters": group.outgoing_voters,
        "learners": group.learners,
        "peers": group.peers.iter().map(|p| json!({
            "node": p.node,
            "match_index": p.match_index,
            "next_index": p.next_index,
            "lag": p.lag,
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn status(target: &Target, groups: &[u64], page_groups: u32, as_json: bool) -> Result<()> {
    let groups = group_ids(groups);
    let mut reported: Vec<Reported> = Vec::new();
    let mut errors: Vec<(SocketAddr, String)> = Vec::new();
    for (address, client) in target.connect_all() {
        let answer = client.and_then(|mut c| {
            let report = c.status_in_pages(&groups, page_groups)?;
            let installs = c.installs()?.map(|(mut installs, total)| {
                if !groups.is_empty() {
                    installs.retain(|i| groups.contains(&GroupId(i.group)));
                }
                (installs, total)
            });
            let shards = c.shards()?;
            Ok((report, installs, shards, c.version()))
        });
        match answer {
            Ok((report, installs, shards, version)) => reported.push(Reported {
                address,
                report,
                installs,
                shards,
                version,
            }),
            Err(error) => errors.push((address, error.to_string())),
        }
    }
    let reports: Vec<(SocketAddr, NodeReport)> = reported.iter().map(|r| (r.address, r.report.clone())).collect();
    let leaders = leaders_per_node(reports.iter().map(|(_, r)| r));
    if as_json {
        let nodes: Vec<Value> = reported
            .iter()
            .map(|reported| {
                let Reported {
                    address,
                    report,
                    installs,
                    shards,
                    version,
                } = reported;
                let streams = installs.as_ref().map(|(list, _)| list.as_slice());
                let groups: Vec<Value> = report
                    .groups
                    .iter()
                    .map(|g| {
                        let mut value = group_json_with_installs(g, streams);
                        let (shard, state) = shard_of(report, shards.as_deref(), g.group);
                        value["shard"] = shard.into();
                        value["shard_state"] = state.map_or(Value::Null, |s| shard_state_name(s.state).into());
                        value
                    })
                    .collect();
                json!({
                    "node": report.node,
                    "address": address.to_string(),
                    "cluster_id": report.cluster_id,
                    "admin_protocol": version,
                    "shards": report.shards,
                    "shard_states": shards.as_ref().map(|list| list.iter().map(shard_json).collect::<Vec<_>>()),
                    "election_priority": report.election_priority,
                    "groups": groups,
                    "installs_in_flight": installs.as_ref().map(|(_, total)| *total),
                })
            })
            .collect();
        let errors: Vec<Value> = errors
            .iter()
            .map(|(address, error)| json!({"address": address.to_string(), "error": error}))
            .collect();
        let leaders: BTreeMap<String, usize> = leaders.iter().map(|(n, c)| (n.to_string(), *c)).collect();
        let out = json!({"nodes": nodes, "leaders_per_node": leaders, "errors": errors});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if !reports.is_empty() {
        print_status_table(&reported);
        let line: Vec<String> = leaders.iter().map(|(n, c)| format!("node {n}: {c}")).collect();
        println!("leaders per node: {}", line.join(", "));
        let priorities: BTreeMap<u64, u8> = reports.iter().map(|(_, r)| (r.node, r.election_priority)).collect();
        let line: Vec<String> = priorities.iter().map(|(n, p)| format!("node {n}: {p}")).collect();
        println!("election priority (0: none): {}", line.join(", "));
        print_installs_table(&reported);
        print_shards(&reported);
    }
    if reports.is_empty() && errors.len() == 1 {
        let (_, error) = errors.remove(0);
        bail!("{error}");
    }
    for (_, error) in &errors {
        eprintln!("error: {error}");
    }
    match errors.len() {
        0 => Ok(()),
        n => Err(anyhow!("{n} of {} node(s) failed", target.addresses.len())),
    }
}

/// One row per group and node; the role of a group whose shard does not
/// serve says so.
fn print_status_table(reported: &[Reported]) {
    let mut rows: Vec<(u64, u64, &GroupReport, Option<&ShardReport>)> = reported
        .iter()
        .flat_map(|r| {
            r.report.groups.iter().map(move |g| {
                let (_, shard) = shard_of(&r.report, r.shards.as_deref(), g.group);
                (g.group, r.report.node, g, shard)
            })
        })
        .collect();
    rows.sort_by_key(|&(group, node, _, _)| (group, node));
    let mut table = vec![[
        "GROUP",
        "NODE",
        "ROLE",
        "TERM",
        "LEADER",
        "COMMIT",
        "APPLIED",
        "LAST",
        "SNAPSHOT",
        "VOTERS",
        "LEARNERS",
        "PEERS (node:match/lag)",
    ]
    .map(String::from)
    .to_vec()];
    for (group, node, report, shard) in rows {
        let role = match shard.filter(|s| s.state != ShardState::Serving) {
            Some(shard) => format!(
                "{} (shard {} {})",
                role_name(report.role),
                shard.shard,
                shard_state_name(shard.state)
            ),
            None => role_name(report.role).to_string(),
        };
        let peers: Vec<String> = report
            .peers
            .iter()
            .map(|p| format!("{}:{}/{}", p.node, p.match_index, p.lag))
            .collect();
        let voters = if report.outgoing_voters.is_empty() {
            ids(&report.voters)
        } else {
            format!("{} (joint with {})", ids(&report.voters), ids(&report.outgoing_voters))
        };
        table.push(vec![
            group.to_string(),
            node.to_string(),
            role,
            report.term.to_string(),
            report.leader.map_or("-".into(), |l| l.to_string()),
            report.commit_index.to_string(),
            report.applied_index.to_string(),
            report.last_index.to_string(),
            report.snapshot_index.to_string(),
            voters,
            ids(&report.learners),
            if peers.is_empty() { "-".into() } else { peers.join(" ") },
        ]);
    }
    print_table(&table);
}

/// Prints rows with each column as wide as its widest cell.
fn mebibytes(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1u64 << 20) as f64)
}

/// The snapshot streams in flight, one row per stream and node, if any; a
/// line per node that does not report them.
fn print_installs_table(reported: &[Reported]) {
    let mut rows: Vec<(u64, u64, &InstallReport)> = reported
        .iter()
        .flat_map(|r| {
            let installs = r.installs.as_ref().map_or(&[][..], |(list, _)| list.as_slice());
            installs.iter().map(move |i| (i.group, r.report.node, i))
        })
        .collect();
    rows.sort_by_key(|&(group, node, i)| (group, node, !i.sending, i.peer));
    if !rows.is_empty() {
        println!();
        println!("snapshot streams in flight:");
        let mut table = vec![[
            "GROUP",
            "NODE",
            "STREAM",
            "SNAPSHOT",
            "SENT/RECEIVED MiB",
            "ACKNOWLEDGED MiB",
            "ELAPSED",
        ]
        .map(String::from)
        .to_vec()];
        for (group, node, install) in rows {
            let percent = |bytes: u64| bytes as f64 * 100.0 / install.total_bytes.max(1) as f64;
            table.push(vec![
                group.to_string(),
                node.to_string(),
                if install.sending {
                    format!("sending to {}", install.peer)
                } else {
                    format!("receiving from {}", install.peer)
                },
                format!("{}/{}", install.snapshot_index, install.snapshot_term),
                format!(
                    "{} of {} ({:.0}%)",
                    mebibytes(install.sent_bytes),
                    mebibytes(install.total_bytes),
                    percent(install.sent_bytes)
                ),
                format!(
                    "{} ({:.0}%)",
                    mebibytes(install.acknowledged_bytes),
                    percent(install.acknowledged_bytes)
                ),
                format!("{:.1} s", install.elapsed_ms as f64 / 1000.0),
            ]);
        }
        print_table(&table);
    }
    for r in reported {
        match &r.installs {
            None => println!(
                "node {}: admin protocol {} reports no snapshot streams",
                r.report.node, r.version
            ),
            Some((listed, total)) if (listed.len() as u64) < *total => println!(
                "node {}: {total} snapshot streams in flight, the first {} listed",
                r.report.node,
                listed.len()
            ),
            Some(_) => {}
        }
    }
}

/// Each node's shards: how many serve, then a row for each one that does
/// not, with the reason; a line per node that does not report them.
fn print_shards(reported: &[Reported]) {
    let mut line = Vec::new();
    let mut table = vec![["NODE", "SHARD", "STATE", "GROUPS", "REASON"]
        .map(String::from)
        .to_vec()];
    for r in reported {
        let Some(shards) = &r.shards else {
            line.push(format!(
                "node {}: not reported (admin protocol {})",
                r.report.node, r.version
            ));
            continue;
        };
        let serving = shards.iter().filter(|s| s.state == ShardState::Serving).count();
        line.push(format!("node {}: {serving} of {}", r.report.node, shards.len()));
        for shard in shards.iter().filter(|s| s.state != ShardState::Serving) {
            table.push(vec![
                r.report.node.to_string(),
                shard.shard.to_string(),
                shard_state_name(shard.state).to_uppercase(),
                if shard.state == ShardState::Stopped {
                    "?".into()
                } else {
                    shard.groups.to_string()
                },
                shard.reason.clone(),
            ]);
        }
    }
    println!("shards serving: {}", line.join(", "));
    if table.len() > 1 {
        println!();
        println!("shards not serving:");
        print_table(&table);
    }
}

pub(crate) fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(String::len).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// How many groups each node leads, by its own reports (every node
/// reporting appears, with 0 if it leads none).
pub(crate) fn leaders_per_node<'a>(reports: impl Iterator<Item = &'a NodeReport>) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for report in reports {
        let led = report.groups.iter().filter(|g| g.role == AdminRole::Leader).count();
        counts.insert(report.node, led);
    }
    counts
}

/// Each group's leader and voters, from the reports of its nodes: the
/// leader of the highest term wins (a deposed leader may not know yet).
pub(crate) fn leaderships(reports: &[NodeReport]) -> Vec<Leadership> {
    let mut best: BTreeMap<u64, (&GroupReport, Option<u64>)> = BTreeMap::new();
    for report in reports {
        for group in &report.groups {
            let leading = (group.role == AdminRole::Leader).then_some(report.node);
            let entry = best.entry(group.group).or_insert((group, leading));
            let better = match (leading, entry.1) {
                (Some(_), None) => true,
                (Some(_), Some(_)) => group.term > entry.0.term,
                _ => false,
            };
            if better {
                *entry = (group, leading);
            }
        }
    }
    best.into_iter()
        .map(|(group, (report, leader))| Leadership {
            group: GroupId(group),
            leader: leader.map(NodeId),
            voters: report.voters.iter().map(|&v| NodeId(v)).collect(),
        })
        .collect()
}

pub(crate) fn snapshot(target: &Target, groups: &[u64], as_json: bool) -> Result<()> {
    let groups = group_ids(groups);
    let mut clients = target.connect_every()?;
    let mut taken = Vec::new();
    for client in &mut clients {
        let hosted: Vec<GroupId> = if groups.is_empty() {
            client.status(&[])?.groups.iter().map(|g| GroupId(g.group)).collect()
        } else {
            groups.clone()
        };
        for group in hosted {
            let index = client
                .snapshot(group)
                .with_context(|| format!("snapshot of group {group} on node {}", client.node()))?;
            taken.push((client.node(), group, index));
        }
    }
    if as_json {
        let out: Vec<Value> = taken
            .iter()
            .map(|(node, group, index)| json!({"node": node.0, "group": group.0, "snapshot_index": index}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "snapshots": out }))?);
    } else {
        let mut table = vec![["NODE", "GROUP", "SNAPSHOT INDEX"].map(String::from).to_vec()];
        for (node, group, index) in &taken {
            table.push(vec![node.to_string(), group.to_string(), index.to_string()]);
        }
        print_table(&table);
    }
    Ok(())
}
