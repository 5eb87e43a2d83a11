//! Network partitions between the nodes of a run: each node in its own
//! network namespace, joined by a veth pair to one bridge in the root
//! namespace (where the harness's clients live), and cut from chosen peers
//! by `blackhole` routes inside its namespace (this machine has no iptables;
//! a blackhole route drops what the node sends to that peer, and both ends
//! get one, so the link is cut both ways while the clients still reach
//! every node).
//!
//! Safety of the host: before anything is created, an `unreachable` route
//! for the run's /24 goes into the root namespace, and it is removed last,
//! so if the bridge or a namespace vanishes mid-run the clients' packets
//! fail with "no route" instead of leaving the machine by the default
//! route. The bridge's own address is a /25 inside it (more specific, so it
//! wins while it exists). Only what [`Network::create`] made is removed, on
//! drop: also on a panic, and `coraft-chaos` turns Ctrl-C into a normal end
//! of the run.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::RunError;

/// The /16 the runs' /24s are taken from.
const SUBNET_PREFIX: [u8; 2] = [10, 213];
/// Third octets tried for a run's /24 (one not in use by another run).
const THIRD_OCTETS: std::ops::Range<u8> = 10..250;
/// The bridge's host part in the run's /24.
const BRIDGE_HOST: u8 = 126;

fn ip(args: &[&str]) -> Result<(), RunError> {
    let output = Command::new("ip").args(args).output().map_err(|source| RunError::Io {
        what: format!("running `ip {}`", args.join(" ")),
        source,
    })?;
    if !output.status.success() {
        return Err(RunError::Setup(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// The rate of a slowed link (`tc tbf rate`).
pub const SLOW_LINK_RATE: &str = "1mbit";
/// The bucket of a slowed link (`tc tbf burst`).
const SLOW_LINK_BURST: &str = "16kb";
/// How long a packet may wait in a slowed link's queue before it is
/// dropped (`tc tbf latency`).
pub const SLOW_LINK_LATENCY: &str = "200ms";

fn tc(args: &[&str]) -> Result<(), RunError> {
    let output = Command::new("tc").args(args).output().map_err(|source| RunError::Io {
        what: format!(
            "running `tc {}` (iproute2's tc is needed for slow links)",
            args.join(" ")
        ),
        source,
    })?;
    if !output.status.success() {
        return Err(RunError::Setup(format!(
            "`tc {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The namespaces, veths, bridge and route of one run.
pub struct Network {
    third_octet: u8,
    namespaces: Vec<String>,
    bridge: Option<String>,
    route: Option<String>,
    /// (from, to) node pairs currently cut.
    cut: Vec<(usize, usize)>,
    /// Whether the links are rate-limited now.
    slowed: bool,
}

impl Network {
    /// Whether this process may create namespaces: it runs as root and
    /// `ip netns` works.
    pub fn available() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() == 0 };
        root && Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Creates a namespace per node, the bridge and the veths; the
    /// unreachable route first. On any error, what was made is removed.
    pub fn create(nodes: usize) -> Result<Network, RunError> {
        if !Network::available() {
            return Err(RunError::Setup(
                "partitions need root and iproute2's `ip netns` (network namespaces, routes); run without partition faults"
                    .into(),
            ));
        }
        let routes = ip_output(&["route", "show", "table", "all"]);
        let third_octet = THIRD_OCTETS
            .clone()
            .find(|o| !routes.contains(&format!("{}.{}.{o}.", SUBNET_PREFIX[0], SUBNET_PREFIX[1])))
            .ok_or_else(|| RunError::Setup("no free /24 in 10.213.0.0/16 for the run's network".into()))?;
        let mut network = Network {
            third_octet,
            namespaces: Vec::new(),
            bridge: None,
            route: None,
            cut: Vec::new(),
            slowed: false,
        };
        let subnet = format!("{}.{}.{third_octet}.0/24", SUBNET_PREFIX[0], SUBNET_PREFIX[1]);
        ip(&["route", "add", "unreachable", &subnet])?;
        network.route = Some(subnet);
        let bridge = format!("cch{third_octet}br");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        network.bridge = Some(bridge.clone());
        let bridge_address = format!("{}/25", network.address(BRIDGE_HOST));
        ip(&["addr", "add", &bridge_address, "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for index in 0..nodes {
            let namespace = format!("cchaos-{third_octet}-{}", index + 1);
            ip(&["netns", "add", &namespace])?;
            network.namespaces.push(namespace.clone());
            let host_end = format!("cch{third_octet}n{}", index + 1);
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
            ])?;
            ip(&["link", "set", &host_end, "master", &bridge, "up"])?;
            let address = format!("{}/25", network.node_address(index));
            ip(&["-n", &namespace, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    fn address(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], self.third_octet, host)
    }

    /// Node `index`'s (0-based) address.
    pub fn node_address(&self, index: usize) -> Ipv4Addr {
        self.address(index as u8 + 1)
    }

    /// Node `index`'s namespace.
    pub fn namespace(&self, index: usize) -> &str {
        &self.namespaces[index]
    }

    /// Whether the harness's own links are all still there (the bridge and
    /// every namespace); a run aborts if not.
    pub fn intact(&self) -> bool {
        let namespaces = ip_output(&["netns", "list"]);
        let bridge_up = self
            .bridge
            .as_ref()
            .is_some_and(|b| !ip_output(&["link", "show", "dev", b]).is_empty());
        bridge_up
            && self
                .namespaces
                .iter()
                .all(|n| namespaces.lines().any(|l| l.split_whitespace().next() == Some(n)))
    }

    /// Cuts every pair of nodes that share no group (both ways); heals
    /// the previous partition first.
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> Result<(), RunError> {
        self.heal()?;
        let nodes = self.namespaces.len();
        for from in 0..nodes {
            for to in 0..nodes {
                let together = groups.iter().any(|g| g.contains(&from) && g.contains(&to));
                if from != to && !together {
                    let peer = format!("{}/32", self.node_address(to));
                    ip(&["-n", &self.namespaces[from], "route", "add", "blackhole", &peer])?;
                    self.cut.push((from, to));
                }
            }
        }
        Ok(())
    }

    /// Cuts what node `from` sends to each of `to` (a blackhole route in
    /// its namespace only: the others still reach it); heals the previous
    /// partition first.
    pub fn cut_one_way(&mut self, from: usize, to: &[usize]) -> Result<(), RunError> {
        self.heal()?;
        for &peer_index in to {
            let peer = format!("{}/32", self.node_address(peer_index));
            ip(&["-n", &self.namespaces[from], "route", "add", "blackhole", &peer])?;
            self.cut.push((from, peer_index));
        }
        Ok(())
    }

    /// Rate-limits (`slow`) or restores every node's link: a `tc tbf`
    /// qdisc on the namespace's `eth0` (what the node sends: to its peers
    /// and its clients), [`SLOW_LINK_RATE`] with [`SLOW_LINK_LATENCY`] of
    /// queue.
    pub fn slow_links(&mut self, slow: bool) -> Result<(), RunError> {
        for namespace in &self.namespaces {
            if slow {
                tc(&[
                    "-n",
                    namespace,
                    "qdisc",
                    "replace",
                    "dev",
                    "eth0",
                    "root",
                    "tbf",
                    "rate",
                    SLOW_LINK_RATE,
                    "burst",
                    SLOW_LINK_BURST,
                    "latency",
                    SLOW_LINK_LATENCY,
                ])?;
            } else {
                // A namespace without the qdisc (never slowed) is fine.
                let _ = tc(&["-n", namespace, "qdisc", "del", "dev", "eth0", "root"]);
            }
        }
        self.slowed = slow;
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), RunError> {
        while let Some((from, to)) = self.cut.pop() {
            let peer = format!("{}/32", self.node_address(to));
            ip(&["-n", &self.namespaces[from], "route", "del", "blackhole", &peer])?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the host end.
        for namespace in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &namespace]) {
                eprintln!("coraft-chaos: removing namespace {namespace}: {e}");
            }
        }
        if let Some(bridge) = self.bridge.take() {
            if let Err(e) = ip(&["link", "del", &bridge]) {
                eprintln!("coraft-chaos: removing bridge {bridge}: {e}");
            }
        }
        // Last, so nothing of the run's subnet is ever routed elsewhere.
        if let Some(subnet) = self.route.take() {
            if let Err(e) = ip(&["route", "del", "unreachable", &subnet]) {
                eprintln!("coraft-chaos: removing route unreachable {subnet}: {e}");
            }
        }
    }
}
