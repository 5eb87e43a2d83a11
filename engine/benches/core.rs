//! Proposals per second committed by a 3-node cluster of cores with no I/O
//! cost: persistence is instant and messages are handed over in memory. This
//! is the ceiling the consensus logic itself puts on the engine.

use std::collections::BTreeMap;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use coraft::raft::{Configuration, GroupId, InitialState, Message, NodeId, RaftConfig, RaftCore, Role};

struct Cluster {
    cores: BTreeMap<NodeId, RaftCore>,
    inbox: Vec<Message>,
    leader: NodeId,
}

impl Cluster {
    fn new() -> Cluster {
        let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let cores = voters
            .iter()
            .map(|&id| {
                let initial = InitialState {
                    configuration: Configuration::with_voters(voters.clone()),
                    ..Default::default()
                };
                (
                    id,
                    RaftCore::new(RaftConfig::new(id, GroupId(1)), initial).expect("valid"),
                )
            })
            .collect();
        let mut cluster = Cluster {
            cores,
            inbox: Vec::new(),
            leader: NodeId(0),
        };
        for _ in 0..1000 {
            for core in cluster.cores.values_mut() {
                core.tick();
            }
            cluster.settle();
            if let Some(core) = cluster.cores.values().find(|c| c.role() == Role::Leader) {
                cluster.leader = core.id();
                return cluster;
            }
        }
        panic!("no leader elected within 1000 ticks")
    }

    fn settle(&mut self) {
        loop {
            for core in self.cores.values_mut() {
                while core.has_ready() {
                    let ready = core.take_ready();
                    if let Some(last) = ready.entries.last() {
                        core.on_persisted(last.index, last.term);
                    }
                    self.inbox.extend(ready.messages);
                    self.inbox.extend(ready.persisted_messages);
                }
            }
            if self.inbox.is_empty() {
                return;
            }
            for message in std::mem::take(&mut self.inbox) {
                if let Some(core) = self.cores.get_mut(&message.to) {
                    core.step(message);
                }
            }
        }
    }
}

fn commit_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_commit_3_nodes");
    for batch in [1usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            let mut cluster = Cluster::new();
            let payloads: Vec<Bytes> = (0..batch).map(|_| Bytes::from_static(&[7u8; 16])).collect();
            b.iter(|| {
                let leader = cluster.cores.get_mut(&cluster.leader).expect("leader");
                leader.propose(payloads.clone()).expect("leader accepts");
                cluster.settle();
                // Keep memory flat: snapshot and compact what is applied.
                let leader = cluster.cores.get_mut(&cluster.leader).expect("leader");
                if leader.applied_index().0 % 4096 < batch as u64 {
                    let applied = leader.applied_index();
                    for core in cluster.cores.values_mut() {
                        let at = applied.min(core.applied_index());
                        if core.snapshot_created(at).is_some() {
                            core.compact(at);
                        }
                    }
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, commit_throughput);
criterion_main!(benches);
