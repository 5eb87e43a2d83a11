//! `coraft-admin`: looks at and changes a running coraft cluster through the
//! admin protocol every node serves on its listen address
//! (`docs/operations.md` walks through it).
//!
//! ```text
//! coraft-admin --node 127.0.0.1:7001 --cluster-id 9 status
//! coraft-admin --config node-1.toml transfer --group 3 --to 2
//! coraft-admin --config node-1.toml rebalance
//! coraft-admin --config node-1.toml create-group --group 100
//! coraft-admin --config node-1.toml remove-group --group 100
//! ```
//! Tables for people by default, `--json` for scripts. Exit status 0 when
//! everything asked for was done, 1 otherwise (with the reason on stderr),
//! 2 for a command line it cannot parse.

mod groups;
mod leaders;
mod membership;
mod show;

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use coraft::admin::{AdminCallError, AdminClient, AdminRequest, MemberSpec};
use coraft::raft::{GroupId, NodeId};

use groups::{create_group, remove_group};
use leaders::{rebalance, transfer};
use membership::{member, on_leaders, reset_peers};
use show::{ids, snapshot, status};

/// Looks at and changes a running coraft cluster (status, leadership,
/// snapshots, membership, groups) through the admin protocol of its nodes.
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
        /// Groups per answer: a node's status comes in answers of at most
        /// this many groups (1 to 1024), so a node of any number of groups
        /// answers.
        #[arg(long, value_name = "N", default_value_t = coraft::admin::ADMIN_STATUS_PAGE_GROUPS_MAX,
              value_parser = clap::value_parser!(u32).range(1..=coraft::admin::ADMIN_STATUS_PAGE_GROUPS_MAX as i64))]
        page_groups: u32,
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
    /// waits for them. Every node must be given and reachable. A transfer
    /// not done within 2 s is asked for again (a leader drops one its
    /// target did not complete within an election timeout).
    Rebalance {
        /// How long to wait for all transfers, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 30000)]
        wait_ms: u64,
        /// Print the plan without transferring anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Adds a node to groups as a learner (it receives the log, does not
    /// vote). Start it first with `coraft-node --join`.
    AddLearner {
        #[command(flatten)]
        change: ChangeArgs,
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// The new node's listen address (shard s on its port + s).
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        address: SocketAddr,
    },
    /// Makes a learner a voter.
    Promote {
        #[command(flatten)]
        change: ChangeArgs,
        /// The learner's node id.
        #[arg(long)]
        id: u64,
    },
    /// Adds a node as a voter safely: as a learner first, promoted once it
    /// has caught up. Start it first with `coraft-node --join`.
    AddVoter {
        #[command(flatten)]
        change: ChangeArgs,
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// The new node's listen address (shard s on its port + s).
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        address: SocketAddr,
    },
    /// Removes a node (voter or learner) from groups; removing the leader
    /// hands leadership to another voter first.
    Remove {
        #[command(flatten)]
        change: ChangeArgs,
        /// The node id to remove.
        #[arg(long)]
        id: u64,
    },
    /// Makes the given nodes the voters of groups, through joint consensus
    /// when more than one voter changes.
    Change {
        #[command(flatten)]
        change: ChangeArgs,
        /// The new voters' node ids, separated by commas.
        #[arg(long, value_name = "IDS", value_delimiter = ',', required = true)]
        voters: Vec<u64>,
        /// The listen address of a voter new to the group, as ID=ADDR;
        /// repeatable. Default: none (members already known need none).
        #[arg(long = "address", value_name = "ID=ADDR", value_parser = parse_member_address)]
        addresses: Vec<(u64, SocketAddr)>,
    },
    /// Creates a group at run time on each node given that is among its
    /// voters (needs nodes of admin protocol 6). It is durable on each node
    /// (back after a restart) and elects a leader once a majority of its
    /// voters hosts it.
    CreateGroup {
        /// The new group's id (not one of the groups a node was started
        /// with, nor one removed from it).
        #[arg(short, long)]
        group: u64,
        /// Its voters' node ids, separated by commas. Default: every node
        /// given.
        #[arg(long, value_name = "IDS", value_delimiter = ',')]
        voters: Vec<u64>,
    },
    /// Removes a group created at run time from each node given (needs
    /// nodes of admin protocol 6): its state machine, snapshots and log go,
    /// a restart does not bring it back, and its id is not created again on
    /// those nodes. Its membership is not changed: to retire the group,
    /// remove it on every member.
    RemoveGroup {
        /// The group.
        #[arg(short, long)]
        group: u64,
    },
    /// UNSAFE: forces the voters of groups on every node given (the
    /// survivors) without consensus, to bring back a group whose majority
    /// is gone for good. It can lose acknowledged writes.
    ResetPeers {
        #[command(flatten)]
        change: ChangeArgs,
        /// The surviving voters' node ids, separated by commas.
        #[arg(long, value_name = "IDS", value_delimiter = ',', required = true)]
        voters: Vec<u64>,
        /// Confirms that acknowledged writes may be lost.
        #[arg(long)]
        yes_i_know_this_can_lose_data: bool,
    },
}

/// The options every membership command shares.
#[derive(clap::Args, Debug)]
pub(crate) struct ChangeArgs {
    /// The group to change; repeat or separate with commas. Default: every
    /// group the nodes host.
    #[arg(short, long = "group", value_name = "GROUP", value_delimiter = ',')]
    pub(crate) groups: Vec<u64>,
    /// How long to wait for each group's change, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 60000)]
    pub(crate) wait_ms: u64,
}

fn parse_member_address(text: &str) -> Result<(u64, SocketAddr), String> {
    let (id, address) = text.split_once('=').ok_or_else(|| format!("`{text}` is not ID=ADDR"))?;
    let id = id
        .parse()
        .map_err(|e| format!("`{id}` in `{text}` is not a node id: {e}"))?;
    Ok((id, parse_address(address)?))
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
pub(crate) struct Target {
    pub(crate) cluster_id: u64,
    pub(crate) addresses: Vec<SocketAddr>,
    pub(crate) timeout: Duration,
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
    pub(crate) fn connect_all(&self) -> Vec<(SocketAddr, Result<AdminClient, AdminCallError>)> {
        self.addresses.iter().map(|&a| (a, self.connect(a))).collect()
    }

    /// A connection to every address; the first that fails fails all.
    pub(crate) fn connect_every(&self) -> Result<Vec<AdminClient>> {
        self.connect_all()
            .into_iter()
            .map(|(_, c)| c.map_err(anyhow::Error::from))
            .collect()
    }
}

fn run(cli: &Cli) -> Result<()> {
    let target = Target::from_cli(cli)?;
    match &cli.command {
        Command::Status { groups, page_groups } => status(&target, groups, *page_groups, cli.json),
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
        Command::AddLearner { change, id, address } => {
            let what = format!("node {id} added as a learner");
            let member = member(*id, Some(*address));
            on_leaders(&target, change, &what, cli.json, |group| AdminRequest::AddLearner {
                group,
                member: member.clone(),
            })
        }
        Command::Promote { change, id } => {
            let what = format!("learner {id} promoted to voter");
            on_leaders(&target, change, &what, cli.json, |group| AdminRequest::Promote {
                group,
                node: *id,
            })
        }
        Command::AddVoter { change, id, address } => {
            let what = format!("node {id} added as a voter");
            let member = member(*id, Some(*address));
            on_leaders(&target, change, &what, cli.json, |group| AdminRequest::AddVoter {
                group,
                member: member.clone(),
            })
        }
        Command::Remove { change, id } => {
            let what = format!("node {id} removed");
            on_leaders(&target, change, &what, cli.json, |group| AdminRequest::Remove {
                group,
                node: *id,
            })
        }
        Command::Change {
            change,
            voters,
            addresses,
        } => {
            let specs: Vec<MemberSpec> = voters
                .iter()
                .map(|&v| member(v, addresses.iter().find(|(id, _)| *id == v).map(|(_, a)| *a)))
                .collect();
            if let Some((id, _)) = addresses.iter().find(|(id, _)| !voters.contains(id)) {
                bail!("--address names node {id}, which is not among --voters");
            }
            let what = format!("voters are now {}", ids(voters));
            on_leaders(&target, change, &what, cli.json, |group| AdminRequest::Change {
                group,
                voters: specs.clone(),
            })
        }
        Command::CreateGroup { group, voters } => create_group(&target, *group, voters, cli.json),
        Command::RemoveGroup { group } => remove_group(&target, *group, cli.json),
        Command::ResetPeers {
            change,
            voters,
            yes_i_know_this_can_lose_data,
        } => reset_peers(&target, change, voters, *yes_i_know_this_can_lose_data, cli.json),
    }
}

/// The reachable nodes among those given; an error if none is.
pub(crate) fn reachable(target: &Target) -> Result<Vec<AdminClient>> {
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
    Ok(clients)
}
