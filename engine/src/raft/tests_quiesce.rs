//! Unit tests of quiescence (`quiesce.rs`), on the harness of `tests.rs`.

use super::tests::{message, payload, Cluster};
use super::*;

fn quiet_cluster(tune: impl Fn(&mut RaftConfig)) -> Cluster {
    let mut cluster = Cluster::new(3, |c| {
        c.quiesce = true;
        tune(c);
    });
    cluster.elect(1);
    // Commit the no-op, then one heartbeat interval to notice the idleness.
    cluster.tick_all(6);
    cluster
}

fn all_quiet(cluster: &mut Cluster) -> bool {
    cluster.cores.values().all(|c| c.is_quiesced())
}

#[test]
fn idle_group_goes_quiet_and_ticks_then_send_nothing() {
    let mut cluster = quiet_cluster(|_| {});
    assert!(all_quiet(&mut cluster), "leader and followers are quiet once idle");
    for _ in 0..100 {
        for core in cluster.cores.values_mut() {
            core.tick();
            assert!(!core.has_ready(), "a quiet core's tick does nothing");
        }
    }
    assert_eq!(cluster.get(1).role(), Role::Leader, "nobody campaigned");
}

#[test]
fn proposal_wakes_the_group_commits_and_it_goes_quiet_again() {
    let mut cluster = quiet_cluster(|_| {});
    let (index, _) = cluster.get(1).propose(payload("x")).unwrap();
    assert!(!cluster.get(1).is_quiesced());
    cluster.settle();
    assert!(
        cluster.cores.values().all(|c| c.last_index() >= index),
        "the followers woke on the append"
    );
    cluster.tick_all(4);
    assert!(
        cluster.cores.values().all(|c| c.commit_index() >= index),
        "the write commits everywhere (the heartbeats carry the commit index)"
    );
    assert!(all_quiet(&mut cluster));
}

#[test]
fn group_with_a_lagging_follower_does_not_go_quiet() {
    let mut cluster = Cluster::new(3, |c| c.quiesce = true);
    cluster.elect(1);
    cluster.isolated = vec![NodeId(3)];
    cluster.get(1).propose(payload("y")).unwrap();
    cluster.settle();
    cluster.tick_all(6);
    assert!(!cluster.get(1).is_quiesced(), "node 3 lacks an entry");
    cluster.isolated.clear();
    cluster.tick_all(8);
    assert!(all_quiet(&mut cluster), "quiet once node 3 caught up");
}

#[test]
fn quiet_follower_told_its_leader_is_unreachable_elects_a_new_one() {
    let mut cluster = quiet_cluster(|_| {});
    cluster.isolated = vec![NodeId(1)];
    for _ in 0..100 {
        for id in [2, 3] {
            cluster.get(id).tick();
        }
        cluster.settle();
    }
    assert_eq!(cluster.get(2).role(), Role::Follower, "quiet followers wait forever");
    assert_eq!(cluster.get(3).role(), Role::Follower);
    for id in [2, 3] {
        cluster.get(id).leader_unreachable(NodeId(1));
    }
    for _ in 0..60 {
        for id in [2, 3] {
            cluster.get(id).tick();
        }
        cluster.settle();
    }
    let leaders: Vec<u64> = [2, 3]
        .into_iter()
        .filter(|&id| cluster.get(id).role() == Role::Leader)
        .collect();
    assert_eq!(leaders.len(), 1, "one of the followers took over");
}

#[test]
fn leader_unreachable_is_ignored_by_an_awake_core_and_for_another_node() {
    let mut cluster = quiet_cluster(|_| {});
    cluster.get(2).leader_unreachable(NodeId(3));
    assert!(cluster.get(2).is_quiesced(), "node 3 is not its leader");
    let mut awake = Cluster::new(3, |c| c.quiesce = true);
    awake.elect(1);
    awake.get(2).leader_unreachable(NodeId(1));
    awake.settle();
    let next_term = awake.get(2).term().0 + 1;
    awake.get(2).step(message(
        3,
        2,
        next_term,
        MessageBody::RequestVote {
            pre_vote: true,
            last_log_index: LogIndex(9),
            last_log_term: Term(9),
            leadership_transfer: false,
        },
    ));
    let ready = awake.get(2).take_ready();
    assert!(
        ready.messages.is_empty(),
        "an awake follower that hears its leader still ignores votes (thesis §4.2.3)"
    );
}

#[test]
fn quiet_leader_holds_no_lease_and_confirms_reads_with_a_round() {
    // Thesis §6.4.1: a lease is measured in ticks; a quiet leader's ticks
    // stop, so it must not answer from a lease.
    let mut cluster = quiet_cluster(|c| c.read_mode = ReadMode::Lease);
    assert!(all_quiet(&mut cluster));
    assert!(!cluster.get(1).lease_valid());
    cluster.isolated = vec![NodeId(2), NodeId(3)];
    cluster.get(1).read_index(5).unwrap();
    cluster.settle();
    assert!(
        cluster.reads.get(&NodeId(1)).is_none_or(|r| r.is_empty()),
        "no quorum round, no read"
    );
    cluster.isolated.clear();
    cluster.tick_all(2);
    let reads = &cluster.reads[&NodeId(1)];
    assert_eq!(reads.iter().map(|r| r.context).collect::<Vec<_>>(), vec![5]);
}

#[test]
fn vote_from_the_followed_leader_is_not_refused_as_from_a_live_leader() {
    // A leader that restarted asks for votes: the follower that still
    // follows it must not hold out for it.
    let mut cluster = quiet_cluster(|_| {});
    let term = cluster.get(2).term();
    let (last_index, last_term) = (cluster.get(2).last_index(), term);
    cluster.get(2).step(message(
        1,
        2,
        term.0 + 1,
        MessageBody::RequestVote {
            pre_vote: true,
            last_log_index: last_index,
            last_log_term: last_term,
            leadership_transfer: false,
        },
    ));
    let ready = cluster.get(2).take_ready();
    assert!(
        matches!(
            ready.messages[..],
            [Message {
                body: MessageBody::RequestVoteResponse { granted: true, .. },
                ..
            }]
        ),
        "{:?}",
        ready.messages
    );
}

#[test]
fn quiesce_is_off_by_default() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.tick_all(10);
    assert!(cluster.cores.values().all(|c| !c.is_quiesced()));
}
