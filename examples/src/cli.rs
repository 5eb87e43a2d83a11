//! Parsing of the examples' address lists, with errors that name the
//! offending entry (clap puts the flag in front of them).

use std::net::SocketAddr;

use coraft::raft::NodeId;

/// Most nodes a `--peers` or `--cluster` list may name.
pub const NODES_MAX: usize = 64;

/// Nodes of a cluster and their addresses, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeList(pub Vec<(NodeId, SocketAddr)>);

/// Parses `1=127.0.0.1:8081,2=127.0.0.1:8082,...`: every node's id and
/// address. Ids are positive and distinct; so are addresses.
pub fn parse_peers(text: &str) -> Result<NodeList, String> {
    let entries: Vec<&str> = text.split(',').map(str::trim).collect();
    if entries.len() > NODES_MAX {
        return Err(format!("{} nodes listed, at most {NODES_MAX} are taken", entries.len()));
    }
    let mut peers: Vec<(NodeId, SocketAddr)> = Vec::with_capacity(entries.len());
    for entry in entries {
        let (id, address) = entry
            .split_once('=')
            .ok_or_else(|| format!("`{entry}` is not ID=HOST:PORT (e.g. 1=127.0.0.1:8081)"))?;
        let id = parse_id(id).map_err(|e| format!("`{entry}`: {e}"))?;
        let address = parse_address(address).map_err(|e| format!("`{entry}`: {e}"))?;
        check_unique(&peers, id, address)?;
        peers.push((id, address));
    }
    Ok(NodeList(peers))
}

/// Parses a client's `--cluster`: either `HOST:PORT,HOST:PORT,...`, the
/// nodes numbered 1, 2, 3... in the order given (as `counter-server --id`
/// numbers them in the walkthrough), or `ID=HOST:PORT,...` as in `--peers`.
pub fn parse_cluster(text: &str) -> Result<NodeList, String> {
    if text.contains('=') {
        return parse_peers(text);
    }
    let entries: Vec<&str> = text.split(',').map(str::trim).collect();
    if entries.len() > NODES_MAX {
        return Err(format!("{} nodes listed, at most {NODES_MAX} are taken", entries.len()));
    }
    let mut nodes: Vec<(NodeId, SocketAddr)> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let address = parse_address(entry)?;
        let id = NodeId(i as u64 + 1);
        check_unique(&nodes, id, address)?;
        nodes.push((id, address));
    }
    Ok(NodeList(nodes))
}

fn parse_id(text: &str) -> Result<NodeId, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("node ids start at 1".into()),
        Ok(id) => Ok(NodeId(id)),
        Err(_) => Err(format!("node id `{text}` is not a positive integer")),
    }
}

fn parse_address(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{text}` is not an IP address and port (e.g. 127.0.0.1:8081)"))
}

fn check_unique(nodes: &[(NodeId, SocketAddr)], id: NodeId, address: SocketAddr) -> Result<(), String> {
    if nodes.iter().any(|(n, _)| *n == id) {
        return Err(format!("node {id} is listed twice"));
    }
    if let Some((other, _)) = nodes.iter().find(|(_, a)| *a == address) {
        return Err(format!("{address} is listed for node {other} and node {id}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_entries_are_named() {
        let peers = parse_peers("1=127.0.0.1:8081, 2=127.0.0.1:8082").unwrap().0;
        assert_eq!(peers[1], (NodeId(2), "127.0.0.1:8082".parse().unwrap()));
        assert!(parse_peers("127.0.0.1:8081")
            .unwrap_err()
            .contains("`127.0.0.1:8081` is not ID=HOST:PORT"));
        assert!(parse_peers("0=127.0.0.1:8081").unwrap_err().contains("start at 1"));
        assert!(parse_peers("1=localhost").unwrap_err().contains("`1=localhost`"));
        assert!(parse_peers("1=127.0.0.1:1,1=127.0.0.1:2")
            .unwrap_err()
            .contains("node 1 is listed twice"));
        assert!(parse_peers("1=127.0.0.1:1,2=127.0.0.1:1")
            .unwrap_err()
            .contains("node 1 and node 2"));
    }

    #[test]
    fn a_plain_cluster_list_numbers_nodes_in_order() {
        let nodes = parse_cluster("127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083").unwrap().0;
        assert_eq!(nodes.iter().map(|(n, _)| n.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(parse_cluster("3=127.0.0.1:8083").unwrap().0[0].0, NodeId(3));
        assert!(parse_cluster("127.0.0.1:8081,nowhere")
            .unwrap_err()
            .contains("`nowhere`"));
    }
}
