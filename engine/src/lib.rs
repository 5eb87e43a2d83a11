//! coraft: a thread-per-core Raft replication engine.
//!
//! Embed it by writing a [`StateMachine`](api::StateMachine), starting a
//! [`Node`](runtime::Node) on each machine of the cluster, and talking to a
//! group through its [`GroupHandle`](runtime::GroupHandle). A one-node
//! cluster, with a real WAL (fdatasync) and a real listening socket:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use coraft::api::{Command, StateMachine};
//! use coraft::raft::{GroupId, NodeId};
//! use coraft::runtime::{Node, NodeOptions, PeerSpec, StateMachineFactory};
//!
//! /// Adds up the numbers it is sent.
//! #[derive(Default)]
//! struct Sum(i64);
//!
//! impl StateMachine for Sum {
//!     fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
//!         commands
//!             .map(|c| {
//!                 self.0 += i64::from_le_bytes(c.data.try_into().unwrap_or([0; 8]));
//!                 self.0.to_le_bytes().to_vec()
//!             })
//!             .collect()
//!     }
//!     fn on_query(&self, _query: &[u8]) -> Vec<u8> {
//!         self.0.to_le_bytes().to_vec()
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let wal = tempfile::tempdir()?;
//! let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
//! // Every field not set here takes its default (`NodeOptions::new`).
//! let options = NodeOptions {
//!     groups: vec![GroupId(1)],
//!     wal_segment_bytes: 8 << 20,
//!     ..NodeOptions::new(
//!         1,
//!         NodeId(1),
//!         vec![PeerSpec { id: NodeId(1), shard_addresses: vec![address] }],
//!         wal.path(),
//!     )
//! };
//! let factory: StateMachineFactory = Arc::new(|_group| Box::new(Sum::default()));
//! let node = Node::start(options, factory)?;
//! let sum = node.group(GroupId(1));
//! // The lone voter elects itself within an election timeout or two.
//! let result = loop {
//!     match futures_lite::future::block_on(sum.apply(5i64.to_le_bytes().to_vec())) {
//!         Err(coraft::api::Error::NotLeader { .. }) => std::thread::sleep(Duration::from_millis(20)),
//!         other => break other?,
//!     }
//! };
//! assert_eq!(result, 5i64.to_le_bytes());
//! let read = futures_lite::future::block_on(sum.read(Vec::new()))?;   // linearizable
//! assert_eq!(read, 5i64.to_le_bytes());
//! node.shutdown();
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod admin;
pub mod api;
pub mod client;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
/// Free loopback addresses for tests and local clusters (`coraft_net::ports`).
pub use coraft_net::ports;
pub mod raft;
pub mod runtime;
pub mod sim;
