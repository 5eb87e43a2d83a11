//! Every message kind survives encode -> frame -> decode -> deserialize, for
//! arbitrary field values, and payloads come back as slices of the frame.

use coraft_net::bytes::Bytes;
use coraft_net::schema::*;
use coraft_net::{decode_all, FrameEncoder, FrameKind};
use proptest::collection::vec;
use proptest::prelude::*;
use rkyv::rancor;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..300)
}

fn entry() -> impl Strategy<Value = Entry> {
    (any::<u64>(), any::<u64>(), any::<u8>(), bytes()).prop_map(|(term, index, kind, data)| Entry {
        term,
        index,
        kind,
        data: data.into(),
    })
}

fn configuration() -> impl Strategy<Value = Configuration> {
    (
        vec(any::<u64>(), 0..7),
        vec(any::<u64>(), 0..4),
        vec(any::<u64>(), 0..7),
    )
        .prop_map(|(voters, learners, outgoing_voters)| Configuration {
            voters,
            learners,
            outgoing_voters,
        })
}

fn raft_body() -> impl Strategy<Value = RaftBody> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u64>(), vec(entry(), 0..5)).prop_map(|(a, b, c, entries)| {
            RaftBody::AppendEntries(AppendEntries {
                prev_log_index: a,
                prev_log_term: b,
                leader_commit: c,
                entries,
            })
        }),
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(reject, index, hint, term)| {
            RaftBody::AppendEntriesResponse(AppendEntriesResponse {
                reject,
                index,
                reject_hint_index: hint,
                reject_hint_term: term,
            })
        }),
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(pre_vote, index, term, transfer)| {
            RaftBody::RequestVote(RequestVote {
                pre_vote,
                last_log_index: index,
                last_log_term: term,
                leadership_transfer: transfer,
            })
        }),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| RaftBody::RequestVoteResponse(RequestVoteResponse { pre_vote, granted })),
        (any::<u64>(), any::<u64>()).prop_map(|(commit_index, read_context)| RaftBody::Heartbeat(Heartbeat {
            commit_index,
            read_context
        })),
        any::<u64>().prop_map(|read_context| RaftBody::HeartbeatResponse(HeartbeatResponse { read_context })),
        vec((any::<u64>(), any::<u64>(), any::<u64>()), 0..20).prop_map(|lines| {
            RaftBody::CoalescedHeartbeat(CoalescedHeartbeat {
                groups: lines
                    .into_iter()
                    .map(|(group, term, commit_index)| GroupHeartbeat {
                        group,
                        term,
                        commit_index,
                    })
                    .collect(),
            })
        }),
        vec((any::<u64>(), any::<u64>()), 0..20).prop_map(|lines| {
            RaftBody::CoalescedHeartbeatResponse(CoalescedHeartbeatResponse {
                groups: lines
                    .into_iter()
                    .map(|(group, term)| GroupHeartbeatAck { group, term })
                    .collect(),
            })
        }),
        Just(RaftBody::TimeoutNow),
        any::<u64>().prop_map(|context| RaftBody::ReadIndex(ReadIndex { context })),
        (any::<u64>(), any::<u64>())
            .prop_map(|(context, index)| RaftBody::ReadIndexResponse(ReadIndexResponse { context, index })),
        (
            any::<u64>(),
            any::<u64>(),
            configuration(),
            any::<u64>(),
            bytes(),
            any::<bool>()
        )
            .prop_map(|(snapshot_index, snapshot_term, configuration, offset, data, done)| {
                RaftBody::InstallSnapshot(InstallSnapshot {
                    snapshot_index,
                    snapshot_term,
                    configuration,
                    offset,
                    data: data.into(),
                    done,
                })
            }),
        (any::<u64>(), any::<bool>()).prop_map(|(next_offset, rejected)| {
            RaftBody::InstallSnapshotResponse(InstallSnapshotResponse { next_offset, rejected })
        }),
        (
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            any::<u64>(),
            bytes(),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(
                |((snapshot_index, snapshot_term, metadata_bytes, total_bytes), offset, data, crc, last)| {
                    RaftBody::SnapshotChunk(SnapshotChunk {
                        snapshot_index,
                        snapshot_term,
                        metadata_bytes,
                        total_bytes,
                        offset,
                        data: data.into(),
                        crc,
                        last,
                    })
                }
            ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(snapshot_index, snapshot_term, chunk_offset, next_offset, refused, complete)| {
                    RaftBody::SnapshotChunkAck(SnapshotChunkAck {
                        snapshot_index,
                        snapshot_term,
                        chunk_offset,
                        next_offset,
                        refused,
                        complete,
                    })
                }
            ),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), raft_body()).prop_map(|(group, from, to, term, body)| {
        Envelope {
            group,
            from,
            to,
            term,
            body,
        }
    })
}

fn client_error() -> impl Strategy<Value = ClientError> {
    prop_oneof![
        proptest::option::of(any::<u64>()).prop_map(|leader_hint| ClientError::NotLeader { leader_hint }),
        Just(ClientError::Busy),
        Just(ClientError::Timeout),
        Just(ClientError::Shutdown),
        Just(ClientError::Storage),
        Just(ClientError::UnknownGroup),
        Just(ClientError::SessionExpired),
        Just(ClientError::StaleSequence),
    ]
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u128>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            bytes()
        )
            .prop_map(|(client_id, session, sequence, lowest_unanswered, group, payload)| {
                ClientRequest::Propose {
                    client_id,
                    session,
                    sequence,
                    lowest_unanswered,
                    group,
                    payload,
                }
            }),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u128>()).prop_map(
            |(client_id, request_id, group, session)| ClientRequest::RegisterSession {
                client_id,
                request_id,
                group,
                session,
            }
        ),
        (any::<u64>(), any::<u64>(), any::<u64>(), bytes(), any::<bool>()).prop_map(
            |(client_id, request_id, group, payload, stale)| ClientRequest::Read {
                client_id,
                request_id,
                group,
                payload,
                consistency: if stale {
                    ReadConsistency::Stale
                } else {
                    ReadConsistency::Linearizable
                },
            }
        ),
    ]
}

fn client_response() -> impl Strategy<Value = ClientResponse> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        prop_oneof![bytes().prop_map(Ok), client_error().prop_map(Err)],
    )
        .prop_map(|(client_id, request_id, group, leader_hint, result)| ClientResponse {
            client_id,
            request_id,
            group,
            leader_hint,
            result,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn raft_batches_of_every_message_kind_round_trip(messages in vec(envelope(), 0..12)) {
        let batch = RaftBatch { messages };
        let mut encoder = FrameEncoder::new();
        encoder.encode(&batch).unwrap();
        let frames = decode_all(encoder.as_bytes()).unwrap();
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(frames[0].kind(), FrameKind::Raft);
        let archived = frames[0].raft().unwrap();
        let decoded: RaftBatch = rkyv::deserialize::<_, rancor::Error>(archived).unwrap();
        prop_assert_eq!(decoded, batch);
    }

    #[test]
    fn client_requests_and_responses_round_trip(
        requests in vec(client_request(), 0..12),
        responses in vec(client_response(), 0..12),
    ) {
        let requests = ClientRequestBatch { requests };
        let responses = ClientResponseBatch { responses };
        let mut encoder = FrameEncoder::new();
        encoder.encode(&requests).unwrap();
        encoder.encode(&responses).unwrap();
        let frames = decode_all(encoder.as_bytes()).unwrap();
        prop_assert_eq!(frames.len(), 2);
        let decoded: ClientRequestBatch =
            rkyv::deserialize::<_, rancor::Error>(frames[0].client_requests().unwrap()).unwrap();
        prop_assert_eq!(decoded, requests);
        let decoded: ClientResponseBatch =
            rkyv::deserialize::<_, rancor::Error>(frames[1].client_responses().unwrap()).unwrap();
        prop_assert_eq!(decoded, responses);
        prop_assert!(frames[0].raft().is_none());
    }

    #[test]
    fn frames_split_at_any_byte_decode_the_same(messages in vec(envelope(), 1..6), cut in any::<prop::sample::Index>()) {
        let batch = RaftBatch { messages };
        let mut encoder = FrameEncoder::new();
        encoder.encode(&batch).unwrap();
        encoder.encode(&batch).unwrap();
        let bytes = encoder.as_bytes();
        let cut = cut.index(bytes.len());
        let mut decoder = coraft_net::FrameDecoder::new();
        let mut frames = Vec::new();
        for part in [&bytes[..cut], &bytes[cut..]] {
            decoder.feed(part).unwrap();
            while let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        decoder.finish().unwrap();
        prop_assert_eq!(frames.len(), 2);
        for frame in &frames {
            let decoded: RaftBatch = rkyv::deserialize::<_, rancor::Error>(frame.raft().unwrap()).unwrap();
            prop_assert_eq!(&decoded, &batch);
        }
    }
}

#[test]
fn entry_payloads_are_borrowed_from_the_frame_body() {
    let batch = RaftBatch {
        messages: vec![Envelope {
            group: 7,
            from: 1,
            to: 2,
            term: 3,
            body: RaftBody::AppendEntries(AppendEntries {
                prev_log_index: 9,
                prev_log_term: 3,
                leader_commit: 8,
                entries: vec![Entry {
                    term: 3,
                    index: 10,
                    kind: entry_kind::NORMAL,
                    data: Bytes::from_static(b"payload bytes"),
                }],
            }),
        }],
    };
    let mut encoder = FrameEncoder::new();
    encoder.encode(&batch).unwrap();
    let frames = decode_all(encoder.as_bytes()).unwrap();
    let body = frames[0].body().as_ptr_range();
    let ArchivedRaftBody::AppendEntries(append) = &frames[0].raft().unwrap().messages[0].body else {
        panic!("expected AppendEntries");
    };
    let data = append.entries[0].data.as_slice();
    assert_eq!(data, b"payload bytes");
    assert!(body.contains(&data.as_ptr()), "payload must point into the frame body");
}

#[test]
fn encoded_bytes_max_bounds_the_archived_size() {
    let envelope = Envelope {
        group: u64::MAX,
        from: 1,
        to: 2,
        term: 3,
        body: RaftBody::InstallSnapshot(InstallSnapshot {
            snapshot_index: 1,
            snapshot_term: 1,
            configuration: Configuration {
                voters: vec![1, 2, 3],
                learners: vec![4],
                outgoing_voters: vec![5, 6, 7],
            },
            offset: 0,
            data: vec![1; 1000].into(),
            done: true,
        }),
    };
    let many = RaftBatch {
        messages: vec![envelope.clone(); 50],
    };
    let archived = rkyv::to_bytes::<rancor::Error>(&many).unwrap();
    assert!(archived.len() <= 50 * envelope.encoded_bytes_max() + 64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The outbound queue counts `encoded_bytes_max`; a full queue must fit a
    /// frame, so the bound must hold for every message.
    #[test]
    fn encoded_bytes_max_is_an_upper_bound_for_every_message(messages in vec(envelope(), 1..8)) {
        let bound: usize = messages.iter().map(Envelope::encoded_bytes_max).sum();
        let archived = rkyv::to_bytes::<rancor::Error>(&RaftBatch { messages }).unwrap();
        prop_assert!(archived.len() <= bound + 16, "{} > {}", archived.len(), bound);
    }
}

/// [`Entry`] as wire version 1 first declared it, with an owned `Vec<u8>`
/// payload: the shared `Bytes` payload must archive to the same bytes.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct EntryWithVec {
    term: u64,
    index: u64,
    kind: u8,
    data: Vec<u8>,
}

/// [`InstallSnapshot`] as wire version 1 first declared it.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct InstallSnapshotWithVec {
    snapshot_index: u64,
    snapshot_term: u64,
    configuration: Configuration,
    offset: u64,
    data: Vec<u8>,
    done: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn shared_payloads_archive_exactly_as_owned_vectors_did(
        entries in vec(entry(), 0..6),
        chunk in (any::<u64>(), any::<u64>(), configuration(), any::<u64>(), bytes(), any::<bool>()),
    ) {
        let owned: Vec<EntryWithVec> = entries
            .iter()
            .map(|entry| EntryWithVec {
                term: entry.term,
                index: entry.index,
                kind: entry.kind,
                data: entry.data.to_vec(),
            })
            .collect();
        let (shared_bytes, owned_bytes) = (
            rkyv::to_bytes::<rancor::Error>(&entries).unwrap(),
            rkyv::to_bytes::<rancor::Error>(&owned).unwrap(),
        );
        prop_assert_eq!(shared_bytes.as_slice(), owned_bytes.as_slice());
        let (snapshot_index, snapshot_term, configuration, offset, data, done) = chunk;
        let shared = InstallSnapshot {
            snapshot_index,
            snapshot_term,
            configuration: configuration.clone(),
            offset,
            data: Bytes::from(data.clone()),
            done,
        };
        let owned = InstallSnapshotWithVec { snapshot_index, snapshot_term, configuration, offset, data, done };
        let (shared_bytes, owned_bytes) = (
            rkyv::to_bytes::<rancor::Error>(&shared).unwrap(),
            rkyv::to_bytes::<rancor::Error>(&owned).unwrap(),
        );
        prop_assert_eq!(shared_bytes.as_slice(), owned_bytes.as_slice());
    }
}
