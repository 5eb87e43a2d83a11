//! The simulated network: every message is delayed, and may be dropped,
//! duplicated or reordered; directed links can be cut (partitions, one-way
//! partitions) and healed.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::rc::Rc;

use crate::raft::{Message, NodeId, SeededRng};

use super::node::StateMachine;

/// Bound on messages in flight in the whole simulated network; beyond it new
/// messages are dropped (a real network also drops under overload).
pub const IN_FLIGHT_MESSAGES_MAX: usize = 100_000;

/// A message on the wire, with the snapshot data an InstallSnapshot carries.
#[derive(Clone, Debug)]
pub struct Packet {
    /// The Raft message.
    pub message: Message,
    /// Snapshot data travelling beside an InstallSnapshot.
    pub snapshot: Option<Rc<StateMachine>>,
}

/// How hostile the network is.
#[derive(Clone, Copy, Debug)]
pub struct NetworkFaults {
    /// Per-mille chance a message is dropped.
    pub drop_per_mille: u64,
    /// Per-mille chance a message is delivered twice.
    pub duplicate_per_mille: u64,
    /// Per-mille chance a message is delayed far longer (reordering).
    pub long_delay_per_mille: u64,
}

impl NetworkFaults {
    /// A reliable network (still with variable delay).
    pub const NONE: NetworkFaults = NetworkFaults {
        drop_per_mille: 0,
        duplicate_per_mille: 0,
        long_delay_per_mille: 0,
    };
}

/// Messages in flight, ordered by delivery tick then by a random tiebreak.
#[derive(Default)]
pub struct Network {
    queue: BinaryHeap<Reverse<(u64, u64, u64)>>,
    packets: std::collections::HashMap<u64, Packet>,
    next_id: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    /// Puts a packet on the wire at tick `now`.
    pub fn send(&mut self, now: u64, packet: Packet, faults: NetworkFaults, rng: &mut SeededRng) {
        if self.packets.len() >= IN_FLIGHT_MESSAGES_MAX || rng.chance(faults.drop_per_mille, 1000) {
            return;
        }
        let copies = if rng.chance(faults.duplicate_per_mille, 1000) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if rng.chance(faults.long_delay_per_mille, 1000) {
                rng.range(4, 25)
            } else {
                rng.range(1, 3)
            };
            let id = self.next_id;
            self.next_id += 1;
            self.queue.push(Reverse((now + delay, rng.next_u64(), id)));
            self.packets.insert(id, packet.clone());
        }
    }

    /// The next packet due at or before `now` whose link is not cut; packets
    /// over cut links are lost.
    pub fn next_due(&mut self, now: u64) -> Option<Packet> {
        while let Some(&Reverse((at, _, id))) = self.queue.peek() {
            if at > now {
                return None;
            }
            self.queue.pop();
            let packet = self.packets.remove(&id).expect("queued packet is stored");
            if !self.cut.contains(&(packet.message.from, packet.message.to)) {
                return Some(packet);
            }
        }
        None
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Whether the link from `from` to `to` is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Number of cut links.
    pub fn cut_links(&self) -> usize {
        self.cut.len()
    }
}
