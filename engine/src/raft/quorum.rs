//! Majorities of simple and joint configurations (Raft §5.2, thesis §4.3):
//! commit indexes, vote tallies and liveness checks.

use std::collections::{BTreeMap, BTreeSet};

use super::types::{Configuration, NodeId};

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted (of both halves when joint).
    Won,
    /// A majority can no longer be reached.
    Lost,
    /// Not decided yet.
    Pending,
}

/// Up to this many voters, [`majority_value`] sorts their values on the
/// stack; a larger configuration (none in practice) takes a vector. The
/// leader computes it at every acknowledgement, so it allocates nothing.
const MAJORITY_STACK_VOTERS_MAX: usize = 16;

/// The largest value that a majority of `voters` has reached, given each
/// voter's value (missing voters count as 0). Empty sets impose nothing.
fn majority_value(voters: &BTreeSet<NodeId>, value_of: &impl Fn(NodeId) -> u64) -> u64 {
    let count = voters.len();
    if count == 0 {
        return u64::MAX;
    }
    if count <= MAJORITY_STACK_VOTERS_MAX {
        let mut stack = [0u64; MAJORITY_STACK_VOTERS_MAX];
        for (slot, &voter) in stack.iter_mut().zip(voters) {
            *slot = value_of(voter);
        }
        return kth_largest(&mut stack[..count], count / 2);
    }
    let mut values: Vec<u64> = voters.iter().map(|&v| value_of(v)).collect();
    kth_largest(&mut values, count / 2)
}

/// The value at `k` (from 0) of `values` sorted from largest to smallest.
fn kth_largest(values: &mut [u64], k: usize) -> u64 {
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[k]
}

/// The largest value reached by a majority of each half of `configuration`.
pub fn quorum_value(configuration: &Configuration, value_of: impl Fn(NodeId) -> u64) -> u64 {
    majority_value(&configuration.voters, &value_of).min(majority_value(&configuration.outgoing_voters, &value_of))
}

fn majority_vote(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let granted = voters.iter().filter(|v| votes.get(v) == Some(&true)).count();
    let rejected = voters.iter().filter(|v| votes.get(v) == Some(&false)).count();
    let majority = voters.len() / 2 + 1;
    if granted >= majority {
        VoteResult::Won
    } else if voters.len() - rejected < majority {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// Tallies `votes` against both halves of `configuration`.
pub fn vote_result(configuration: &Configuration, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    match (
        majority_vote(&configuration.voters, votes),
        majority_vote(&configuration.outgoing_voters, votes),
    ) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

/// True if the nodes for which `active` holds form a majority of each half.
pub fn has_quorum(configuration: &Configuration, active: impl Fn(NodeId) -> bool) -> bool {
    let votes: BTreeMap<NodeId, bool> = configuration.members().into_iter().map(|n| (n, active(n))).collect();
    vote_result(configuration, &votes) == VoteResult::Won
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[u64], outgoing: &[u64]) -> Configuration {
        Configuration {
            voters: voters.iter().map(|&v| NodeId(v)).collect(),
            outgoing_voters: outgoing.iter().map(|&v| NodeId(v)).collect(),
            ..Configuration::default()
        }
    }

    #[test]
    fn commit_index_is_the_median_of_a_simple_majority() {
        let c = conf(&[1, 2, 3], &[]);
        let matches = |n: NodeId| [0, 5, 3, 9][n.0 as usize];
        assert_eq!(quorum_value(&c, matches), 5);
    }

    #[test]
    fn commit_index_of_many_voters_is_their_median_on_and_off_the_stack() {
        // Both sides of MAJORITY_STACK_VOTERS_MAX: the stack and the vector
        // give the value that a majority has reached.
        for count in [
            1usize,
            2,
            4,
            5,
            MAJORITY_STACK_VOTERS_MAX,
            MAJORITY_STACK_VOTERS_MAX + 1,
            40,
        ] {
            let voters: Vec<u64> = (1..=count as u64).collect();
            let c = conf(&voters, &[]);
            // Voter n has reached 1000 - 7n: voter k+1 of the largest-first
            // order is the one a majority (k + 1 = count / 2 + 1) has reached.
            let value = |n: NodeId| 1000 - 7 * n.0;
            let majority = count / 2 + 1;
            assert_eq!(quorum_value(&c, value), 1000 - 7 * majority as u64, "{count} voters");
        }
    }

    #[test]
    fn joint_commit_needs_both_majorities() {
        // Raft thesis §4.3: agreement needs separate majorities of C_old and C_new.
        let c = conf(&[1, 2, 3], &[1, 4, 5]);
        let matches = |n: NodeId| [0, 9, 9, 9, 1, 2][n.0 as usize];
        assert_eq!(quorum_value(&c, matches), 2);
    }

    #[test]
    fn joint_election_is_lost_when_either_half_rejects() {
        let c = conf(&[1, 2, 3], &[4, 5, 6]);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, false), (5, false)]
            .iter()
            .map(|&(n, g)| (NodeId(n), g))
            .collect();
        assert_eq!(vote_result(&c, &votes), VoteResult::Lost);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, true)]
            .iter()
            .map(|&(n, g)| (NodeId(n), g))
            .collect();
        assert_eq!(vote_result(&c, &votes), VoteResult::Pending);
    }
}
