//! `coraft-admin`: looks at and changes a running coraft cluster through the
//! admin protocol every node serves on its listen address
//! (`docs/operations.md` walks through it).
//!
//! ```text
//! coraft-admin --node 127.0.0.1:7001 --cluster-id 9 status
//! coraft-admin --config node-1.toml transfer --group 3 --to 2
//! coraft-admin --config node-1.toml rebalance
//! ```
//! Tables for people by default, `--json` for scripts. Exit status 0 when
//! everything asked for was done, 1 otherwise (with the reason on stderr),
//! 2 for a command line it cannot parse.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use coraft::admin::{
    plan_rebalance, AdminCallError, AdminClient, AdminRole, GroupReport, Leadership, Move, NodeReport,
};
use coraft::raft::{GroupId, NodeId};
use serde_json::{json, Value};

/// Looks at and changes a running coraft cluster (status, leadership,
/// snapshots) through the admin protocol of its nodes.
#[derive(Parser, Debug)]
#[command(name = "coraft-admin", version)]
struct Cli {
    /// A node's listen address (host:port); repeat it or separate addresses
    /// with commas. Default: every node of --config.
    #[arg(short, long = "node", value_name = "ADDR", value_delimiter = ',', value_parser = parse_address, global = true)]
    nodes: Vec<SocketAddr>,
    /// A node's TOML config (as coraft-node reads it): gives the cluster id
    /// and the address of every node. Default: none.
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// The cluster's id; a node of another cluster is refused. Default: the
    /// cluster_id of --config (one of the two is required).
    #[arg(long, value_name = "ID", global = true)]
    cluster_id: Option<u64>,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Bound on connecting to a node and on each request, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000, global = true)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every group on each node: role, term, leader, commit/applied/last
    /// index, snapshot index, and (on leaders) each peer's match index and lag.
    Status {
        /// Only this group; repeat or separate with commas. Default: every
        /// group each node hosts.
        #[arg(short, long = "group", value_name = "GROUP", value_delimiter = ',')]
        groups: Vec<u64>,
    },
    /// Hands leadership of a group to another voter and waits until it leads.
    Transfer {
        /// The group.
        #[arg(short, long)]
        group: u64,
        /// The node id to lead it.
        #[arg(long)]
        to: u64,
        /// How long to wait for the new leader, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 10000)]
        wait_ms: u64,
    },
    /// Takes a snapshot of groups on every node given and prints its index.
    Snapshot {
        /// Only this group; repeat or separate with commas. Default: every
        /// group each node hosts.
        #[arg(short, long = "group", value_name = "GROUP", value_delimiter = ',')]
        groups: Vec<u64>,
    },
    /// Spreads the leaders of all groups evenly over the nodes given (each
    /// leads floor or ceil of groups/nodes), by leadership transfers, and
    /// waits for them. Every node must be given and reachable.
    Rebalance {
        /// How long to wait for all transfers, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 30000)]
        wait_ms: u64,
        /// Print the plan without transferring anything.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_address(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("`{text}` is not a host:port address: {e}"))?
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where the cluster is and how to talk to it.
struct Target {
    cluster_id: u64,
    addresses: Vec<SocketAddr>,
    timeout: Duration,
}

impl Target {
    fn from_cli(cli: &Cli) -> Result<Target> {
        let config = match &cli.config {
            Some(path) => Some(
                coraft_tuning::NodeConfig::from_file(path)
                    .with_context(|| format!("reading the node config {}", path.display()))?,
            ),
            None => None,
        };
        let cluster_id = match (cli.cluster_id, &config) {
            (Some(id), _) => id,
            (None, Some(config)) => config.cluster_id,
            (None, None) => bail!("which cluster? give --cluster-id ID or --config FILE"),
        };
        let mut addresses = cli.nodes.clone();
        if addresses.is_empty() {
            if let Some(config) = &config {
                addresses = config
                    .peers
                    .iter()
                    .map(|p| {
                        if p.id == config.node_id {
                            config.listen
                        } else {
                            p.address
                        }
                    })
                    .collect();
            }
        }
        if addresses.is_empty() {
            bail!("which nodes? give --node ADDR (repeatable) or --config FILE");
        }
        let mut seen = BTreeSet::new();
        addresses.retain(|a| seen.insert(*a));
        Ok(Target {
            cluster_id,
            addresses,
            timeout: Duration::from_millis(cli.timeout_ms),
        })
    }

    fn connect(&self, address: SocketAddr) -> Result<AdminClient, AdminCallError> {
        AdminClient::connect(address, self.cluster_id, self.timeout)
    }

    /// A connection to each address, or why there is none.
    fn connect_all(&self) -> Vec<(SocketAddr, Result<AdminClient, AdminCallError>)> {
        self.addresses.iter().map(|&a| (a, self.connect(a))).collect()
    }

    /// A connection to every address; the first that fails fails all.
    fn connect_every(&self) -> Result<Vec<AdminClient>> {
        self.connect_all()
            .into_iter()
            .map(|(_, c)| c.map_err(anyhow::Error::from))
            .collect()
    }
}

fn run(cli: &Cli) -> Result<()> {
    let target = Target::from_cli(cli)?;
    match &cli.command {
        Command::Status { groups } => status(&target, groups, cli.json),
        Command::Transfer { group, to, wait_ms } => transfer(
            &target,
            GroupId(*group),
            NodeId(*to),
            Duration::from_millis(*wait_ms),
            cli.json,
        ),
        Command::Snapshot { groups } => snapshot(&target, groups, cli.json),
        Command::Rebalance { wait_ms, dry_run } => {
            rebalance(&target, Duration::from_millis(*wait_ms), *dry_run, cli.json)
        }
    }
}

fn group_ids(groups: &[u64]) -> Vec<GroupId> {
    groups.iter().map(|&g| GroupId(g)).collect()
}

fn role_name(role: AdminRole) -> &'static str {
    match role {
        AdminRole::Follower => "follower",
        AdminRole::PreCandidate => "pre-candidate",
        AdminRole::Candidate => "candidate",
        AdminRole::Leader => "leader",
    }
}

fn ids(list: &[u64]) -> String {
    if list.is_empty() {
        return "-".into();
    }
    list.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn group_json(group: &GroupReport) -> Value {
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

fn status(target: &Target, groups: &[u64], as_json: bool) -> Result<()> {
    let groups = group_ids(groups);
    let mut reports: Vec<(SocketAddr, NodeReport)> = Vec::new();
    let mut errors: Vec<(SocketAddr, String)> = Vec::new();
    for (address, client) in target.connect_all() {
        match client.and_then(|mut c| c.status(&groups)) {
            Ok(report) => reports.push((address, report)),
            Err(error) => errors.push((address, error.to_string())),
        }
    }
    let leaders = leaders_per_node(reports.iter().map(|(_, r)| r));
    if as_json {
        let nodes: Vec<Value> = reports
            .iter()
            .map(|(address, report)| {
                json!({
                    "node": report.node,
                    "address": address.to_string(),
                    "cluster_id": report.cluster_id,
                    "shards": report.shards,
                    "groups": report.groups.iter().map(group_json).collect::<Vec<_>>(),
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
        print_status_table(&reports);
        let line: Vec<String> = leaders.iter().map(|(n, c)| format!("node {n}: {c}")).collect();
        println!("leaders per node: {}", line.join(", "));
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

fn print_status_table(reports: &[(SocketAddr, NodeReport)]) {
    let mut rows: Vec<(u64, u64, &GroupReport)> = reports
        .iter()
        .flat_map(|(_, r)| r.groups.iter().map(move |g| (g.group, r.node, g)))
        .collect();
    rows.sort_by_key(|&(group, node, _)| (group, node));
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
    for (group, node, report) in rows {
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
            role_name(report.role).to_string(),
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
fn print_table(rows: &[Vec<String>]) {
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
fn leaders_per_node<'a>(reports: impl Iterator<Item = &'a NodeReport>) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for report in reports {
        let led = report.groups.iter().filter(|g| g.role == AdminRole::Leader).count();
        counts.insert(report.node, led);
    }
    counts
}

/// Each group's leader and voters, from the reports of its nodes: the
/// leader of the highest term wins (a deposed leader may not know yet).
fn leaderships(reports: &[NodeReport]) -> Vec<Leadership> {
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

/// The current leader of `group` among the reachable nodes, from their
/// reports; an unknown group anywhere is an error.
fn find_leader(clients: &mut [AdminClient], group: GroupId) -> Result<Option<NodeId>> {
    let mut reports = Vec::new();
    for client in clients.iter_mut() {
        reports.push(client.status(&[group])?);
    }
    Ok(leaderships(&reports).first().and_then(|l| l.leader))
}

fn transfer(target: &Target, group: GroupId, to: NodeId, wait: Duration, as_json: bool) -> Result<()> {
    // A node that is down leads nothing: the reachable ones suffice.
    let mut clients = Vec::new();
    let mut unreachable = Vec::new();
    for (_, client) in target.connect_all() {
        match client {
            Ok(client) => clients.push(client),
            Err(error) => unreachable.push(error),
        }
    }
    if clients.is_empty() {
        let first = unreachable.into_iter().next().expect("at least one address");
        return Err(first.into());
    }
    for error in &unreachable {
        eprintln!("warning: {error} (left out)");
    }
    let leader = find_leader(&mut clients, group)?
        .ok_or_else(|| anyhow!("group {group} has no leader among the nodes given: try again after its election"))?;
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
fn poll_leaders(
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

fn wait_for_leaders(clients: &mut [AdminClient], wanted: &[(GroupId, NodeId)], wait: Duration) -> Result<()> {
    let missing = poll_leaders(clients, wanted, wait)?;
    if let Some((group, to, now)) = missing.first() {
        let now = now.map_or("no node".into(), |n| format!("node {n}"));
        bail!("node {to} did not take over group {group} within {wait:?}; {now} leads it now");
    }
    Ok(())
}

fn snapshot(target: &Target, groups: &[u64], as_json: bool) -> Result<()> {
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

fn rebalance(target: &Target, wait: Duration, dry_run: bool, as_json: bool) -> Result<()> {
    let mut clients = target.connect_every()?;
    let mut reports = Vec::new();
    for client in &mut clients {
        reports.push(client.status(&[])?);
    }
    let nodes: Vec<NodeId> = clients.iter().map(AdminClient::node).collect();
    let before = leaders_per_node(reports.iter());
    let current = leaderships(&reports);
    let leaderless: Vec<GroupId> = current.iter().filter(|l| l.leader.is_none()).map(|l| l.group).collect();
    let plan = plan_rebalance(&nodes, &current);
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
        for (group, to, now) in poll_leaders(&mut clients, &wanted, wait)? {
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
