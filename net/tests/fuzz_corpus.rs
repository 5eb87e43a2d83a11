//! Replays the fuzz target's seed corpus (`fuzz/corpus/decode/`) on stable, so
//! every input the fuzzer keeps as a seed runs in CI. With
//! `CORAFT_WRITE_FUZZ_SEEDS=1` the first test rewrites the seed files.

use std::path::PathBuf;

use coraft_net::frame::FRAME_HEADER_BYTES;
use coraft_net::fuzzing::exercise_decoder;
use coraft_net::schema::*;
use coraft_net::{FrameEncoder, FrameKind, Hello, Role, WIRE_VERSION};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode")
}

/// Valid streams of every frame kind, and a few classic broken ones.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let append = RaftBatch {
        messages: vec![
            Envelope {
                group: 1,
                from: 1,
                to: 2,
                term: 3,
                body: RaftBody::AppendEntries(AppendEntries {
                    prev_log_index: 4,
                    prev_log_term: 3,
                    leader_commit: 4,
                    entries: vec![Entry {
                        term: 3,
                        index: 5,
                        kind: entry_kind::NORMAL,
                        data: coraft_net::bytes::Bytes::from_static(b"hello"),
                    }],
                }),
            },
            Envelope {
                group: 0,
                from: 1,
                to: 2,
                term: 3,
                body: RaftBody::CoalescedHeartbeat(CoalescedHeartbeat {
                    groups: vec![GroupHeartbeat {
                        group: 9,
                        term: 3,
                        commit_index: 1,
                    }],
                }),
            },
            Envelope {
                group: 2,
                from: 1,
                to: 2,
                term: 3,
                body: RaftBody::InstallSnapshot(InstallSnapshot {
                    snapshot_index: 10,
                    snapshot_term: 2,
                    configuration: Configuration {
                        voters: vec![1, 2, 3],
                        learners: vec![],
                        outgoing_voters: vec![],
                    },
                    offset: 0,
                    data: vec![7; 40].into(),
                    done: true,
                }),
            },
        ],
    };
    let requests = ClientRequestBatch {
        requests: vec![
            ClientRequest::Read {
                client_id: 1,
                request_id: 2,
                group: 3,
                payload: b"k".to_vec(),
                consistency: ReadConsistency::Stale,
            },
            ClientRequest::RegisterSession {
                client_id: 1,
                request_id: 3,
                group: 3,
                session: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
            },
            ClientRequest::Propose {
                client_id: 1,
                session: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
                sequence: 1,
                lowest_unanswered: 1,
                group: 3,
                payload: b"v".to_vec(),
            },
        ],
    };
    let responses = ClientResponseBatch {
        responses: vec![
            ClientResponse {
                client_id: 1,
                request_id: 2,
                group: 3,
                leader_hint: Some(2),
                result: Err(ClientError::NotLeader { leader_hint: Some(2) }),
            },
            ClientResponse {
                client_id: 1,
                request_id: 1,
                group: 3,
                leader_hint: Some(2),
                result: Err(ClientError::StaleSequence),
            },
        ],
    };
    let hello = Hello {
        cluster_id: 1,
        node_id: 2,
        shard_id: 0,
        target_shard_id: 0,
        target_node_id: 1,
        role: Role::Peer,
        client_protocol: 0,
    };
    let mut encoder = FrameEncoder::new();
    encoder
        .encode_raw(FrameKind::Hello, WIRE_VERSION, &hello.to_bytes())
        .unwrap();
    encoder.encode(&append).unwrap();
    encoder.encode(&requests).unwrap();
    encoder.encode(&responses).unwrap();
    let all = encoder.as_bytes().to_vec();
    let with_split = |split: u8, bytes: &[u8]| [&[split][..], bytes].concat();
    let mut bad_crc = all.clone();
    bad_crc[FRAME_HEADER_BYTES + 60] ^= 1;
    vec![
        ("all_kinds_one_read", with_split(0, &all)),
        ("all_kinds_reads_of_7", with_split(7, &all)),
        ("truncated", with_split(0, &all[..all.len() - 5])),
        ("bad_crc", with_split(0, &bad_crc)),
        ("bad_magic", with_split(3, b"GET / HTTP/1.1\r\n\r\n")),
    ]
}

#[test]
fn seed_corpus_is_current() {
    let dir = corpus_dir();
    if std::env::var_os("CORAFT_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(format!("seed_{name}")), bytes).unwrap();
        }
    }
    for (name, bytes) in seeds() {
        let on_disk = std::fs::read(dir.join(format!("seed_{name}"))).unwrap();
        assert_eq!(
            on_disk, bytes,
            "seed {name} is stale: rerun with CORAFT_WRITE_FUZZ_SEEDS=1"
        );
    }
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    let mut inputs = 0;
    let mut frames = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        frames += exercise_decoder(&bytes).frames;
        inputs += 1;
    }
    assert!(inputs >= 5, "the seed corpus is missing");
    assert!(frames >= 8, "valid seeds must decode");
}

#[test]
fn valid_seed_decodes_every_frame_and_bad_seeds_fail() {
    for (name, bytes) in seeds() {
        let outcome = exercise_decoder(&bytes);
        match name {
            "all_kinds_one_read" | "all_kinds_reads_of_7" => {
                assert!(outcome.error.is_none(), "{name}: {:?}", outcome.error);
                assert_eq!(outcome.frames, 4);
            }
            _ => assert!(outcome.error.is_some(), "{name} must fail"),
        }
    }
}
