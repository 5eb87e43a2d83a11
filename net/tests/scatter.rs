//! The scatter encoder puts exactly the bytes of the contiguous encoder on
//! the wire, without copying large payloads (those it copies, it copies in
//! the pass that computes the CRC), and its frames decode.

use coraft_net::frame::{ScatterEncoder, COPY_WITH_CRC_MIN_BYTES, SCATTER_MIN_BYTES};
use coraft_net::schema::{
    entry_kind, AppendEntries, ArchivedRaftBody, Configuration, Entry, Envelope, Heartbeat, InstallSnapshot, RaftBatch,
    RaftBatchRef, RaftBody,
};
use coraft_net::{decode_all, FrameEncoder};
use proptest::prelude::*;

fn append(index: u64, sizes: &[usize]) -> Envelope {
    Envelope {
        group: index,
        from: 1,
        to: 2,
        term: 3,
        body: RaftBody::AppendEntries(AppendEntries {
            prev_log_index: index,
            prev_log_term: 3,
            leader_commit: index,
            entries: sizes
                .iter()
                .enumerate()
                .map(|(at, &size)| Entry {
                    term: 3,
                    index: index + at as u64 + 1,
                    kind: entry_kind::NORMAL,
                    data: (0..size).map(|byte| (byte * 7 + at) as u8).collect::<Vec<u8>>().into(),
                })
                .collect(),
        }),
    }
}

fn message(index: u64, sizes: Vec<usize>) -> Envelope {
    match index % 3 {
        0 => append(index, &sizes),
        1 => Envelope {
            group: index,
            from: 1,
            to: 2,
            term: 3,
            body: RaftBody::InstallSnapshot(InstallSnapshot {
                snapshot_index: index,
                snapshot_term: 2,
                configuration: Configuration {
                    voters: vec![1, 2, 3],
                    learners: vec![],
                    outgoing_voters: vec![4],
                },
                offset: 0,
                data: vec![0x5a; sizes.first().copied().unwrap_or(0)].into(),
                done: false,
            }),
        },
        _ => Envelope {
            group: index,
            from: 1,
            to: 2,
            term: 3,
            body: RaftBody::Heartbeat(Heartbeat {
                commit_index: index,
                read_context: 0,
            }),
        },
    }
}

fn scattered_bytes(messages: &[Envelope]) -> (Vec<u8>, usize) {
    let mut encoder = ScatterEncoder::new();
    let batch = RaftBatchRef { messages };
    let frame = encoder.encode(&batch).unwrap();
    let bytes: Vec<u8> = frame.slices().flatten().copied().collect();
    assert_eq!(bytes.len(), frame.len());
    (bytes, frame.copied_bytes())
}

fn contiguous_bytes(messages: &[Envelope]) -> Vec<u8> {
    let mut encoder = FrameEncoder::new();
    encoder
        .encode(&RaftBatch {
            messages: messages.to_vec(),
        })
        .unwrap();
    encoder.as_bytes().to_vec()
}

#[test]
fn large_payloads_are_sent_in_place_and_the_bytes_match() {
    let messages: Vec<Envelope> = (0..4)
        .map(|index| append(index, &[SCATTER_MIN_BYTES, 64, 2 * SCATTER_MIN_BYTES]))
        .collect();
    let (bytes, copied) = scattered_bytes(&messages);
    assert_eq!(bytes, contiguous_bytes(&messages));
    assert!(
        copied < 4 * 1024,
        "{copied} bytes copied: payloads were not left in place"
    );
    let frames = decode_all(&bytes).unwrap();
    let batch = frames[0].raft().unwrap();
    assert_eq!(batch.messages.len(), 4);
    for (archived, original) in batch.messages.iter().zip(&messages) {
        let (ArchivedRaftBody::AppendEntries(archived), RaftBody::AppendEntries(original)) =
            (&archived.body, &original.body)
        else {
            panic!("not an append");
        };
        for (archived, original) in archived.entries.iter().zip(&original.entries) {
            assert_eq!(archived.data.as_slice(), &original.data[..]);
        }
    }
}

#[test]
fn smaller_payloads_are_copied_into_the_frame_with_the_same_bytes_and_checksum() {
    let sizes = [
        COPY_WITH_CRC_MIN_BYTES - 1,
        COPY_WITH_CRC_MIN_BYTES,
        4096,
        4096 + 77,
        SCATTER_MIN_BYTES - 1,
    ];
    let messages: Vec<Envelope> = (0..16).map(|index| append(index, &sizes)).collect();
    let (bytes, copied) = scattered_bytes(&messages);
    assert_eq!(bytes, contiguous_bytes(&messages));
    assert_eq!(copied, bytes.len(), "one contiguous frame");
    let frames = decode_all(&bytes).unwrap();
    assert_eq!(frames[0].raft().unwrap().messages.len(), 16);
}

#[test]
fn a_payload_shared_by_many_messages_of_a_frame_is_sent_in_place_each_time() {
    let shared = coraft_net::bytes::Bytes::from(vec![0x3c; SCATTER_MIN_BYTES]);
    let messages: Vec<Envelope> = (0..8)
        .map(|index| {
            let mut message = append(index, &[0]);
            if let RaftBody::AppendEntries(append) = &mut message.body {
                append.entries[0].data = shared.clone();
            }
            message
        })
        .collect();
    let (bytes, copied) = scattered_bytes(&messages);
    assert_eq!(bytes, contiguous_bytes(&messages));
    assert!(copied < 4096, "{copied} bytes copied: the shared payload was copied");
}

proptest! {
    #[test]
    fn scattered_frames_equal_contiguous_frames(
        sizes in prop::collection::vec(
            prop::collection::vec(
                prop_oneof![
                    4 => 0usize..3 * COPY_WITH_CRC_MIN_BYTES,
                    1 => SCATTER_MIN_BYTES - 300..SCATTER_MIN_BYTES + 300,
                ],
                0..4,
            ),
            0..24,
        )
    ) {
        let messages: Vec<Envelope> = sizes
            .into_iter()
            .enumerate()
            .map(|(index, sizes)| message(index as u64, sizes))
            .collect();
        let (bytes, _) = scattered_bytes(&messages);
        prop_assert_eq!(&bytes, &contiguous_bytes(&messages));
        prop_assert_eq!(decode_all(&bytes).unwrap().len(), 1);
    }
}
