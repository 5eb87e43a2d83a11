//! Unit tests of membership removal (`membership.rs`), on the harness of
//! `tests.rs`.

use super::tests::{ids, payload, Cluster};
use super::*;

#[test]
fn a_removed_follower_receives_its_removal_and_never_campaigns() {
    // Thesis §4.2.2: the leader replicates to a node being removed until the
    // configuration removing it is committed, so the node knows.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster
        .get(1)
        .propose_conf_change(&[ConfChange::Remove(NodeId(3))])
        .unwrap();
    cluster.settle();
    assert!(!cluster.get(1).configuration().contains(NodeId(3)));
    assert!(
        !cluster.get(3).configuration().contains(NodeId(3)),
        "the removed node appended the entry that removed it"
    );
    assert!(
        !cluster.get(1).progress().contains_key(&NodeId(3)),
        "once the removal is committed the leader stops replicating to it"
    );
    // Alone and silent for many timeouts, it still does not campaign.
    cluster.isolated = ids(3);
    let term = cluster.get(3).term();
    for _ in 0..100 {
        cluster.get(3).tick();
        let ready = cluster.get(3).take_ready();
        assert!(
            ready.messages.is_empty(),
            "a removed node sends nothing: {:?}",
            ready.messages
        );
    }
    assert_eq!(cluster.get(3).role(), Role::Follower);
    assert_eq!(cluster.get(3).term(), term);
}

#[test]
fn a_leader_that_removes_itself_hands_leadership_to_a_caught_up_voter() {
    // Thesis §4.2.2, §3.10: after the removal commits the old leader sends
    // TimeoutNow, so the group need not wait out an election timeout.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.get(1).propose(payload("x")).unwrap();
    cluster.settle();
    cluster
        .get(1)
        .propose_conf_change(&[ConfChange::Remove(NodeId(1))])
        .unwrap();
    // No tick: only TimeoutNow can start the next election.
    cluster.settle();
    assert_eq!(cluster.get(1).role(), Role::Follower);
    let leaders: Vec<NodeId> = [2, 3]
        .into_iter()
        .filter(|&n| cluster.get(n).role() == Role::Leader)
        .map(NodeId)
        .collect();
    assert_eq!(leaders.len(), 1, "one of the remaining voters leads at once");
    let leader = leaders[0].0;
    assert!(!cluster.get(leader).configuration().contains(NodeId(1)));
    cluster.get(leader).propose(payload("y")).unwrap();
    cluster.settle();
    let other = if leader == 2 { 3 } else { 2 };
    assert_eq!(cluster.get(other).last_index(), cluster.get(leader).last_index());
}
