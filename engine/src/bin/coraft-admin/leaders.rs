//! Leadership: transfer one group, rebalance all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use coraft::admin::{plan_rebalance_by_priority, AdminClient, Move};
use coraft::raft::{GroupId, NodeId};
use serde_json::{json, Value};

use crate::show::{ids, leaders_per_node, leaderships, print_table};
use crate::{reachable, Target};

/// The current leader of `group` among the reachable nodes, from their
/// reports; an unknown group anywhere is an error.
pub(crate) fn find_leader(clients: &mut [AdminClient], group: GroupId) -> Result<Option<NodeId>> {
    let mut reports = Vec::new();
    for client in clients.iter_mut() {
        reports.push(client.status(&[group])?);
    }
    Ok(leaderships(&reports).first().and_then(|l| l.leader))
}

/// The leader of `group`, waiting up to `wait` for one (an election may be
/// under way, e.g. after a leader removed itself).
pub(crate) fn await_leader(clients: &mut [AdminClient], group: GroupId, wait: Duration) -> Result<NodeId> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(leader) = find_leader(clients, group)? {
            return Ok(leader);
        }
        if Instant::now() >= deadline {
            bail!("group {group} has no leader among the nodes given after {wait:?}: retry after its election");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn transfer(target: &Target, group: GroupId, to: NodeId, wait: Duration, as_json: bool) -> Result<()> {
    // A node that is down leads nothing: the reachable ones suffice.
    let mut clients = reachable(target)?;
    let leader = await_leader(&mut clients, group, wait)?;
    let started = Instant::now();
    if leader != to {
        let client = clients.iter_mut().find(|c| c.node() == leader).ok_or_else(|| {
            anyhow!("node {leader} leads group {group} but is not among the nodes given (add its --node)")
        })?;
        client
            .transfer_leader(group, to)
            .with_context(|| format!("transferring group {group} from node {leader} to node {to}"))?;
        wait_for_leaders(&mut clients, &[(group, to)], wait)?;
    }
    let elapsed = started.elapsed();
    if as_json {
        let out = json!({"group": group.0, "from": leader.0, "to": to.0, "moved": leader != to,
            "elapsed_ms": elapsed.as_millis() as u64});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if leader == to {
        println!("node {to} already leads group {group}: nothing to do");
    } else {
        println!("group {group}: leadership moved from node {leader} to node {to} in {elapsed:.1?}");
    }
    Ok(())
}

/// Polls the nodes until each `(group, node)` pair holds (the node leads
/// the group) or `wait` has passed; returns the pairs that never held, with
/// who leads instead.
pub(crate) fn poll_leaders(
    clients: &mut [AdminClient],
    wanted: &[(GroupId, NodeId)],
    wait: Duration,
) -> Result<Vec<(GroupId, NodeId, Option<NodeId>)>> {
    let deadline = Instant::now() + wait;
    let groups: Vec<GroupId> = wanted
        .iter()
        .map(|(g, _)| *g)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    loop {
        let mut reports = Vec::new();
        for client in clients.iter_mut() {
            reports.push(client.status(&groups)?);
        }
        let now: BTreeMap<GroupId, Option<NodeId>> =
            leaderships(&reports).into_iter().map(|l| (l.group, l.leader)).collect();
        let missing: Vec<(GroupId, NodeId, Option<NodeId>)> = wanted
            .iter()
            .filter(|(g, n)| now.get(g).copied().flatten() != Some(*n))
            .map(|&(g, n)| (g, n, now.get(&g).copied().flatten()))
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            return Ok(missing);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn wait_for_leaders(
    clients: &mut [AdminClient],
    wanted: &[(GroupId, NodeId)],
    wait: Duration,
) -> Result<()> {
    let missing = poll_leaders(clients, wanted, wait)?;
    if let Some((group, to, now)) = missing.first() {
        let now = now.map_or("no node".into(), |n| format!("node {n}"));
        bail!("node {to} did not take over group {group} within {wait:?}; {now} leads it now");
    }
    Ok(())
}

/// How long `rebalance` waits for a transfer before asking again: a leader
/// drops a transfer its target did not complete within an election
/// timeout (a slow target, a lost TimeoutNow on a loaded machine), so a
/// request made once may never happen.
pub(crate) const TRANSFER_RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Polls until each `(group, node)` pair holds or `wait` has passed, asking
/// a group's current leader again to transfer it every
/// [`TRANSFER_RETRY_INTERVAL`]; returns the pairs that never held.
fn await_transfers(
    clients: &mut [AdminClient],
    wanted: &[(GroupId, NodeId)],
    wait: Duration,
) -> Result<Vec<(GroupId, NodeId, Option<NodeId>)>> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let missing = poll_leaders(clients, wanted, left.min(TRANSFER_RETRY_INTERVAL))?;
        if missing.is_empty() || Instant::now() >= deadline {
            return Ok(missing);
        }
        for &(group, to, now) in &missing {
            let Some(leader) = now.filter(|&leader| leader != to) else {
                continue; // no leader now: an election is under way
            };
            if let Some(client) = clients.iter_mut().find(|c| c.node() == leader) {
                // A refusal (the leader just changed) is retried next round.
                let _ = client.transfer_leader(group, to);
            }
        }
    }
}

pub(crate) fn rebalance(target: &Target, wait: Duration, dry_run: bool, as_json: bool) -> Result<()> {
    // A node left out would be counted as leading nothing: all must answer.
    let mut clients = target
        .connect_every()
        .context("rebalance counts every node's leaders (name the live ones with --node to leave a dead one out)")?;
    let mut reports = Vec::new();
    for client in &mut clients {
        reports.push(client.status(&[])?);
    }
    // Each node with its election priority: leaders go to the highest
    // priority among a group's voters (all 0: every voter alike).
    let nodes: Vec<(NodeId, u8)> = reports.iter().map(|r| (NodeId(r.node), r.election_priority)).collect();
    let before = leaders_per_node(reports.iter());
    let current = leaderships(&reports);
    let leaderless: Vec<GroupId> = current.iter().filter(|l| l.leader.is_none()).map(|l| l.group).collect();
    let plan = plan_rebalance_by_priority(&nodes, &current);
    let mut failed: Vec<(Move, String)> = Vec::new();
    if !dry_run {
        for m in &plan {
            let Some(client) = clients.iter_mut().find(|c| c.node() == m.from) else {
                failed.push((*m, format!("node {} is not among the nodes given", m.from)));
                continue;
            };
            if let Err(error) = client.transfer_leader(m.group, m.to) {
                failed.push((*m, error.to_string()));
            }
        }
        let wanted: Vec<(GroupId, NodeId)> = plan
            .iter()
            .filter(|m| !failed.iter().any(|(f, _)| f.group == m.group))
            .map(|m| (m.group, m.to))
            .collect();
        for (group, to, now) in await_transfers(&mut clients, &wanted, wait)? {
            let m = *plan.iter().find(|m| m.group == group).expect("planned");
            let now = now.map_or("no node".into(), |n| format!("node {n}"));
            failed.push((
                m,
                format!("node {to} did not take over within {wait:?}; {now} leads it"),
            ));
        }
    }
    let after = if dry_run {
        let mut planned = before.clone();
        for m in &plan {
            *planned.entry(m.from.0).or_default() -= 1;
            *planned.entry(m.to.0).or_default() += 1;
        }
        planned
    } else {
        let mut after_reports = Vec::new();
        for client in &mut clients {
            after_reports.push(client.status(&[])?);
        }
        leaders_per_node(after_reports.iter())
    };
    let outcome = |m: &Move| -> String {
        if dry_run {
            return "planned".into();
        }
        failed
            .iter()
            .find(|(f, _)| f.group == m.group)
            .map_or("moved".into(), |(_, why)| format!("failed: {why}"))
    };
    if as_json {
        let moves: Vec<Value> = plan
            .iter()
            .map(|m| json!({"group": m.group.0, "from": m.from.0, "to": m.to.0, "outcome": outcome(m)}))
            .collect();
        let counts = |c: &BTreeMap<u64, usize>| -> BTreeMap<String, usize> {
            c.iter().map(|(n, k)| (n.to_string(), *k)).collect()
        };
        let out = json!({
            "dry_run": dry_run,
            "moves": moves,
            "leaders_before": counts(&before),
            // With --dry-run: as planned.
            "leaders_after": counts(&after),
            "leaderless_groups": leaderless.iter().map(|g| g.0).collect::<Vec<_>>(),
            "failed": failed.len(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let mut table = vec![["GROUP", "FROM", "TO", "OUTCOME"].map(String::from).to_vec()];
        for m in &plan {
            table.push(vec![
                m.group.to_string(),
                m.from.to_string(),
                m.to.to_string(),
                outcome(m),
            ]);
        }
        if plan.is_empty() {
            println!("the leaders are already balanced: nothing to move");
        } else {
            print_table(&table);
        }
        let line = |c: &BTreeMap<u64, usize>| -> String {
            c.iter()
                .map(|(n, k)| format!("node {n}: {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("leaders per node before: {}", line(&before));
        let after_label = if dry_run { "planned:" } else { "after: " };
        println!("leaders per node {after_label} {}", line(&after));
        if !leaderless.is_empty() {
            println!(
                "groups without a leader (left alone): {}",
                ids(&leaderless.iter().map(|g| g.0).collect::<Vec<_>>())
            );
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("{} of {} transfer(s) failed", failed.len(), plan.len())
    }
}
