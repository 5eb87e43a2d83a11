//! The handshake: the first frame each way on every connection.
//!
//! The connecting side sends a [`Hello`] (who it is, whom it wants); the
//! accepting side checks it against its own [`LocalIdentity`] and answers a
//! [`HelloReply`] that accepts or names the refusal. Both bodies are fixed
//! little-endian layouts, not rkyv archives, so that two builds of different
//! wire versions can still read each other's handshake and refuse with a
//! reason instead of failing on an unreadable archive. Sans I/O: the socket
//! side lives in `listener`, `outbound` and `blocking`.

use std::fmt;

use crate::error::NetError;
use crate::frame::WIRE_VERSION;

/// Bytes of a [`Hello`] body.
pub const HELLO_BYTES: usize = 40;
/// Bytes of a [`HelloReply`] body.
pub const HELLO_REPLY_BYTES: usize = 32;

/// The client protocol version this build speaks: which answers a client
/// connection can read, announced in [`Hello::client_protocol`]. It moves
/// apart from [`WIRE_VERSION`] (the frame layout, which peers share), so a
/// node keeps serving clients of older versions and they keep serving each
/// other's nodes.
///
/// Version 0 is every client from before the field (its hello has zeros
/// there). Version 1 reads
/// [`ClientError::ResultTooLarge`](crate::schema::ClientError::ResultTooLarge);
/// a node answers a client of version 0 `Storage` instead, as it always
/// did, and an older node never sends it, so neither side sees a variant it
/// cannot read.
pub const CLIENT_PROTOCOL_VERSION: u16 = 1;

/// The oldest client protocol version that reads
/// [`ClientError::ResultTooLarge`](crate::schema::ClientError::ResultTooLarge).
pub const CLIENT_RESULT_TOO_LARGE_VERSION_MIN: u16 = 1;

/// Who this side is: the identity a listener checks handshakes against and
/// an outbound connection announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalIdentity {
    /// The cluster; a peer of another cluster is refused.
    pub cluster_id: u64,
    /// This node.
    pub node_id: u64,
    /// This shard (executor) of the node.
    pub shard_id: u32,
}

/// What the connecting side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Another node's shard: sends Raft frames.
    Peer,
    /// A client or tool: sends requests, receives responses on the same connection.
    Client,
}

impl Role {
    fn to_byte(self) -> u8 {
        match self {
            Role::Peer => 1,
            Role::Client => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Role> {
        match byte {
            1 => Some(Role::Peer),
            2 => Some(Role::Client),
            _ => None,
        }
    }
}

/// The validated identity of the remote side of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The remote node (a client's own id for [`Role::Client`]).
    pub node_id: u64,
    /// The remote shard.
    pub shard_id: u32,
    /// What the remote side is.
    pub role: Role,
    /// The client protocol version the remote side announced
    /// ([`CLIENT_PROTOCOL_VERSION`]; 0 for peers and older clients).
    pub client_protocol: u16,
}

/// The connecting side's handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The sender's cluster.
    pub cluster_id: u64,
    /// The sender's node (or client id).
    pub node_id: u64,
    /// The sender's shard.
    pub shard_id: u32,
    /// The shard the sender wants to reach.
    pub target_shard_id: u32,
    /// The node the sender wants to reach; 0 means any (clients, tools).
    pub target_node_id: u64,
    /// What the sender is.
    pub role: Role,
    /// For a [`Role::Client`], the client protocol version it reads
    /// ([`CLIENT_PROTOCOL_VERSION`]); 0 for a peer. Older builds send 0
    /// (the bytes were reserved) and ignore it.
    pub client_protocol: u16,
}

impl Hello {
    /// The body's bytes (layout in `docs/wire.md`).
    pub fn to_bytes(&self) -> [u8; HELLO_BYTES] {
        let mut bytes = [0u8; HELLO_BYTES];
        bytes[0..8].copy_from_slice(&self.cluster_id.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.node_id.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.shard_id.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.target_shard_id.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.target_node_id.to_le_bytes());
        bytes[32] = self.role.to_byte();
        bytes[34..36].copy_from_slice(&self.client_protocol.to_le_bytes());
        bytes
    }

    /// Parses a body; any length but [`HELLO_BYTES`] or an unknown role is malformed.
    pub fn parse(body: &[u8]) -> Result<Hello, NetError> {
        let bytes: &[u8; HELLO_BYTES] = body.try_into().map_err(|_| NetError::BadHandshake {
            reason: "hello body has the wrong length",
        })?;
        let role = Role::from_byte(bytes[32]).ok_or(NetError::BadHandshake {
            reason: "hello names an unknown role",
        })?;
        Ok(Hello {
            cluster_id: u64_at(bytes, 0),
            node_id: u64_at(bytes, 8),
            shard_id: u32_at(bytes, 16),
            target_shard_id: u32_at(bytes, 20),
            target_node_id: u64_at(bytes, 24),
            role,
            client_protocol: u16::from_le_bytes([bytes[34], bytes[35]]),
        })
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Why a handshake was refused. The accepting side logs it and counts it;
/// the connecting side gets it back in the [`HelloReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer belongs to another cluster.
    ForeignCluster {
        /// The accepting side's cluster.
        expected: u64,
        /// The peer's cluster.
        found: u64,
    },
    /// The peer speaks another wire version.
    IncompatibleVersion {
        /// The accepting side's version.
        expected: u16,
        /// The peer's version.
        found: u16,
    },
    /// The peer wanted another node.
    WrongNode {
        /// The accepting node.
        expected: u64,
        /// The node the peer asked for.
        found: u64,
    },
    /// The peer wanted another shard.
    WrongShard {
        /// The accepting shard.
        expected: u32,
        /// The shard the peer asked for.
        found: u32,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ForeignCluster { expected, found } => {
                write!(f, "foreign cluster {found} (this is cluster {expected})")
            }
            Refusal::IncompatibleVersion { expected, found } => {
                write!(f, "incompatible wire version {found} (this side speaks {expected})")
            }
            Refusal::WrongNode { expected, found } => {
                write!(f, "addressed to node {found} but this is node {expected}")
            }
            Refusal::WrongShard { expected, found } => {
                write!(f, "addressed to shard {found} but this is shard {expected}")
            }
        }
    }
}

/// The accepting side's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloReply {
    /// `None` when accepted.
    pub refusal: Option<Refusal>,
    /// The accepting side's identity.
    pub identity: LocalIdentity,
}

impl HelloReply {
    /// The body's bytes (layout in `docs/wire.md`).
    pub fn to_bytes(&self) -> [u8; HELLO_REPLY_BYTES] {
        let mut bytes = [0u8; HELLO_REPLY_BYTES];
        let (status, found) = match self.refusal {
            None => (0u8, 0u64),
            Some(Refusal::ForeignCluster { found, .. }) => (1, found),
            Some(Refusal::IncompatibleVersion { found, .. }) => (2, u64::from(found)),
            Some(Refusal::WrongNode { found, .. }) => (3, found),
            Some(Refusal::WrongShard { found, .. }) => (4, u64::from(found)),
        };
        bytes[0] = status;
        bytes[4..8].copy_from_slice(&self.identity.shard_id.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.identity.node_id.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.identity.cluster_id.to_le_bytes());
        bytes[24..32].copy_from_slice(&found.to_le_bytes());
        bytes
    }

    /// Parses a body; `version` is the reply header's wire version.
    pub fn parse(body: &[u8], version: u16) -> Result<HelloReply, NetError> {
        let bytes: &[u8; HELLO_REPLY_BYTES] = body.try_into().map_err(|_| NetError::BadHandshake {
            reason: "hello reply body has the wrong length",
        })?;
        let identity = LocalIdentity {
            shard_id: u32_at(bytes, 4),
            node_id: u64_at(bytes, 8),
            cluster_id: u64_at(bytes, 16),
        };
        let found = u64_at(bytes, 24);
        let truncated = |reason| NetError::BadHandshake { reason };
        let refusal = match bytes[0] {
            0 => None,
            1 => Some(Refusal::ForeignCluster {
                expected: identity.cluster_id,
                found,
            }),
            2 => Some(Refusal::IncompatibleVersion {
                expected: version,
                found: u16::try_from(found).map_err(|_| truncated("version out of range"))?,
            }),
            3 => Some(Refusal::WrongNode {
                expected: identity.node_id,
                found,
            }),
            4 => Some(Refusal::WrongShard {
                expected: identity.shard_id,
                found: u32::try_from(found).map_err(|_| truncated("shard out of range"))?,
            }),
            _ => return Err(truncated("hello reply has an unknown status")),
        };
        Ok(HelloReply { refusal, identity })
    }
}

/// The accepting side's decision on a [`Hello`] that arrived in a frame of
/// wire version `version`.
pub fn check_hello(local: &LocalIdentity, version: u16, hello: &Hello) -> Result<PeerIdentity, Refusal> {
    if hello.cluster_id != local.cluster_id {
        return Err(Refusal::ForeignCluster {
            expected: local.cluster_id,
            found: hello.cluster_id,
        });
    }
    if version != WIRE_VERSION {
        return Err(Refusal::IncompatibleVersion {
            expected: WIRE_VERSION,
            found: version,
        });
    }
    if hello.target_node_id != 0 && hello.target_node_id != local.node_id {
        return Err(Refusal::WrongNode {
            expected: local.node_id,
            found: hello.target_node_id,
        });
    }
    if hello.target_shard_id != local.shard_id {
        return Err(Refusal::WrongShard {
            expected: local.shard_id,
            found: hello.target_shard_id,
        });
    }
    Ok(PeerIdentity {
        node_id: hello.node_id,
        shard_id: hello.shard_id,
        role: hello.role,
        client_protocol: hello.client_protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: LocalIdentity = LocalIdentity {
        cluster_id: 10,
        node_id: 1,
        shard_id: 2,
    };

    fn hello() -> Hello {
        Hello {
            cluster_id: 10,
            node_id: 3,
            shard_id: 4,
            target_shard_id: 2,
            target_node_id: 1,
            role: Role::Client,
            client_protocol: CLIENT_PROTOCOL_VERSION,
        }
    }

    #[test]
    fn hello_and_reply_round_trip_through_their_fixed_layouts() {
        assert_eq!(Hello::parse(&hello().to_bytes()).unwrap(), hello());
        let refusals = [
            None,
            Some(Refusal::ForeignCluster {
                expected: 10,
                found: 11,
            }),
            Some(Refusal::IncompatibleVersion {
                expected: WIRE_VERSION,
                found: 9,
            }),
            Some(Refusal::WrongNode { expected: 1, found: 5 }),
            Some(Refusal::WrongShard { expected: 2, found: 7 }),
        ];
        for refusal in refusals {
            let reply = HelloReply {
                refusal,
                identity: LOCAL,
            };
            assert_eq!(HelloReply::parse(&reply.to_bytes(), WIRE_VERSION).unwrap(), reply);
        }
    }

    #[test]
    fn a_hello_of_a_client_from_before_the_client_protocol_reads_as_version_0() {
        // Bytes 33..40 were reserved and zero.
        let mut bytes = hello().to_bytes();
        bytes[33..].fill(0);
        let old = Hello::parse(&bytes).unwrap();
        assert_eq!(old.client_protocol, 0);
        assert_eq!(check_hello(&LOCAL, WIRE_VERSION, &old).unwrap().client_protocol, 0);
        // And a new one announces its version where an old node never looks.
        assert_eq!(&hello().to_bytes()[34..36], &CLIENT_PROTOCOL_VERSION.to_le_bytes());
    }

    #[test]
    fn malformed_hellos_are_errors_not_panics() {
        assert!(Hello::parse(&[0u8; HELLO_BYTES - 1]).is_err());
        let mut bytes = hello().to_bytes();
        bytes[32] = 9;
        assert!(Hello::parse(&bytes).is_err());
        let mut reply = [0u8; HELLO_REPLY_BYTES];
        reply[0] = 200;
        assert!(HelloReply::parse(&reply, WIRE_VERSION).is_err());
    }

    #[test]
    fn accepting_side_checks_cluster_then_version_then_address() {
        let peer = check_hello(&LOCAL, WIRE_VERSION, &hello()).unwrap();
        assert_eq!(
            peer,
            PeerIdentity {
                node_id: 3,
                shard_id: 4,
                role: Role::Client,
                client_protocol: CLIENT_PROTOCOL_VERSION,
            }
        );
        let foreign = Hello {
            cluster_id: 11,
            ..hello()
        };
        assert_eq!(
            check_hello(&LOCAL, WIRE_VERSION + 1, &foreign),
            Err(Refusal::ForeignCluster {
                expected: 10,
                found: 11
            })
        );
        assert!(matches!(
            check_hello(&LOCAL, WIRE_VERSION + 1, &hello()),
            Err(Refusal::IncompatibleVersion { .. })
        ));
        let any_node = Hello {
            target_node_id: 0,
            ..hello()
        };
        assert!(check_hello(&LOCAL, WIRE_VERSION, &any_node).is_ok());
        let other_node = Hello {
            target_node_id: 8,
            ..hello()
        };
        assert_eq!(
            check_hello(&LOCAL, WIRE_VERSION, &other_node),
            Err(Refusal::WrongNode { expected: 1, found: 8 })
        );
    }
}
