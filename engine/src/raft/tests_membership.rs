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
fn a_removed_follower_that_missed_its_removal_still_receives_it_after_the_commit() {
    // The removal commits on the remaining voters while node 3 hears
    // nothing; the leader keeps replicating to it until it holds the entry.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.isolated = ids(3)[2..].to_vec();
    cluster
        .get(1)
        .propose_conf_change(&[ConfChange::Remove(NodeId(3))])
        .unwrap();
    cluster.settle();
    assert!(!cluster.get(1).configuration().contains(NodeId(3)));
    assert!(
        cluster.get(3).configuration().contains(NodeId(3)),
        "cut off, node 3 has not seen its removal"
    );
    cluster.isolated.clear();
    let heartbeat = cluster.get(1).config().heartbeat_interval_ticks;
    cluster.tick_all(heartbeat + 1);
    assert!(
        !cluster.get(3).configuration().contains(NodeId(3)),
        "the leader replicated the removal to node 3 after it committed"
    );
    assert!(
        !cluster.get(1).progress().contains_key(&NodeId(3)),
        "once node 3 holds its removal the leader lets it go"
    );
}

#[test]
fn a_removed_follower_that_stays_silent_is_let_go_after_an_election_timeout() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.isolated = ids(3)[2..].to_vec();
    cluster
        .get(1)
        .propose_conf_change(&[ConfChange::Remove(NodeId(3))])
        .unwrap();
    cluster.settle();
    assert!(cluster.get(1).progress().contains_key(&NodeId(3)), "it lingers");
    let timeout = cluster.get(1).config().election_timeout_ticks;
    for _ in 0..2 * timeout + 1 {
        cluster.get(1).tick();
        cluster.settle();
    }
    assert!(
        !cluster.get(1).progress().contains_key(&NodeId(3)),
        "a silent removed node is dropped after a check round"
    );
    assert_eq!(cluster.get(1).role(), Role::Leader);
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
