//! The decoder refuses every kind of bad input with the matching error, before
//! allocating anything the peer sized, and never panics.

use coraft_net::decoder::{READ_BUFFER_BYTES, SHRINK_AFTER_SMALL_FRAMES};
use coraft_net::frame::{FrameHeader, FRAME_HEADER_BYTES};
use coraft_net::schema::*;
use coraft_net::{decode_all, FrameDecoder, FrameEncoder, FrameKind, NetError, FRAME_BODY_MAX_BYTES, WIRE_VERSION};

fn one_heartbeat_frame() -> Vec<u8> {
    let batch = RaftBatch {
        messages: vec![Envelope {
            group: 1,
            from: 1,
            to: 2,
            term: 5,
            body: RaftBody::Heartbeat(Heartbeat {
                commit_index: 4,
                read_context: 0,
            }),
        }],
    };
    let mut encoder = FrameEncoder::new();
    encoder.encode(&batch).unwrap();
    encoder.as_bytes().to_vec()
}

#[test]
fn bad_magic_is_refused() {
    let mut bytes = one_heartbeat_frame();
    bytes[0] ^= 0xff;
    assert!(matches!(decode_all(&bytes), Err(NetError::BadMagic { .. })));
}

#[test]
fn data_frame_of_another_wire_version_is_refused() {
    let mut bytes = one_heartbeat_frame();
    bytes[4..6].copy_from_slice(&(WIRE_VERSION + 1).to_le_bytes());
    assert!(matches!(
        decode_all(&bytes),
        Err(NetError::UnsupportedVersion { found, .. }) if found == WIRE_VERSION + 1
    ));
}

#[test]
fn unknown_kind_and_nonzero_flags_are_refused() {
    let mut bytes = one_heartbeat_frame();
    bytes[6] = 99;
    assert!(matches!(decode_all(&bytes), Err(NetError::UnknownKind { kind: 99 })));
    let mut bytes = one_heartbeat_frame();
    bytes[7] = 1;
    assert!(matches!(decode_all(&bytes), Err(NetError::BadFlags { flags: 1 })));
}

#[test]
fn oversized_frame_is_refused_from_its_header_alone() {
    let header = FrameHeader {
        version: WIRE_VERSION,
        kind: FrameKind::Raft,
        body_bytes: FRAME_BODY_MAX_BYTES,
        body_crc: 0,
    };
    let mut bytes = header.to_bytes();
    bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut decoder = FrameDecoder::new();
    decoder.feed(&bytes).unwrap();
    // The next read is where a buffer would be sized from the header: refused.
    assert!(matches!(
        decoder.read_buf(),
        Err(NetError::Oversized { body_bytes, .. }) if body_bytes == u32::MAX as usize
    ));
    assert!(matches!(decoder.next_frame(), Err(NetError::Oversized { .. })));
}

#[test]
fn frame_at_the_size_limit_gets_a_buffer_only_after_its_header_validates() {
    let header = FrameHeader {
        version: WIRE_VERSION,
        kind: FrameKind::Raft,
        body_bytes: FRAME_BODY_MAX_BYTES,
        body_crc: 0,
    };
    let mut decoder = FrameDecoder::new();
    decoder.feed(&header.to_bytes()).unwrap();
    let room = decoder.read_buf().unwrap().len();
    assert!((FRAME_BODY_MAX_BYTES..=FRAME_BODY_MAX_BYTES + READ_BUFFER_BYTES).contains(&room));
}

#[test]
fn bad_checksum_is_refused() {
    let mut bytes = one_heartbeat_frame();
    bytes[FRAME_HEADER_BYTES + 3] ^= 0x40;
    assert!(matches!(decode_all(&bytes), Err(NetError::BadChecksum { .. })));
}

#[test]
fn truncated_frame_is_reported_at_end_of_stream() {
    let bytes = one_heartbeat_frame();
    for cut in [1, FRAME_HEADER_BYTES - 1, FRAME_HEADER_BYTES, bytes.len() - 1] {
        assert!(
            matches!(decode_all(&bytes[..cut]), Err(NetError::Truncated { buffered, .. }) if buffered == cut),
            "cut at {cut}"
        );
    }
}

#[test]
fn garbage_body_with_a_valid_checksum_is_an_invalid_archive() {
    let body = [0xffu8; 64];
    let mut encoder = FrameEncoder::new();
    encoder.encode_raw(FrameKind::Raft, WIRE_VERSION, &body).unwrap();
    assert!(matches!(
        decode_all(encoder.as_bytes()),
        Err(NetError::InvalidArchive {
            kind: FrameKind::Raft,
            ..
        })
    ));
    let mut encoder = FrameEncoder::new();
    encoder
        .encode_raw(FrameKind::ClientRequests, WIRE_VERSION, &[])
        .unwrap();
    assert!(matches!(
        decode_all(encoder.as_bytes()),
        Err(NetError::InvalidArchive { .. })
    ));
}

#[test]
fn frames_held_by_the_reader_do_not_change_while_decoding_continues() {
    let frame = one_heartbeat_frame();
    let mut stream = Vec::new();
    // Enough frames to wrap the receive buffer several times.
    while stream.len() < 3 * READ_BUFFER_BYTES {
        stream.extend_from_slice(&frame);
    }
    let mut decoder = FrameDecoder::new();
    let mut held = Vec::new();
    for part in stream.chunks(7919) {
        decoder.feed(part).unwrap();
        while let Some(frame) = decoder.next_frame().unwrap() {
            held.push(frame);
        }
    }
    decoder.finish().unwrap();
    assert_eq!(held.len(), stream.len() / frame.len());
    for frame in &held {
        let message = &frame.raft().unwrap().messages[0];
        assert_eq!(message.term.to_native(), 5);
    }
}

#[test]
fn every_truncation_and_bit_flip_of_a_valid_stream_fails_cleanly() {
    let mut encoder = FrameEncoder::new();
    encoder
        .encode(&ClientRequestBatch {
            requests: vec![ClientRequest::Propose {
                client_id: 1,
                session: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
                sequence: 2,
                lowest_unanswered: 2,
                group: 3,
                payload: b"abc".to_vec(),
            }],
        })
        .unwrap();
    let bytes = encoder.as_bytes().to_vec();
    for cut in 0..bytes.len() {
        let _ = decode_all(&bytes[..cut]);
    }
    for at in 0..bytes.len() {
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[at] ^= 1 << bit;
            // Padding bytes are not covered by the checksum; anything else
            // must be refused.
            let result = decode_all(&flipped);
            if at < FRAME_HEADER_BYTES + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize {
                assert!(result.is_err(), "flip of bit {bit} at byte {at} went unnoticed");
            }
        }
    }
}

#[test]
fn a_buffer_grown_for_large_frames_shrinks_back_once_small_frames_are_the_rule() {
    let chunk = RaftBatch {
        messages: vec![Envelope {
            group: 1,
            from: 1,
            to: 2,
            term: 1,
            body: RaftBody::InstallSnapshot(InstallSnapshot {
                snapshot_index: 1,
                snapshot_term: 1,
                configuration: Configuration::default(),
                offset: 0,
                data: vec![3; 2 * 1024 * 1024].into(),
                done: true,
            }),
        }],
    };
    let mut encoder = FrameEncoder::new();
    encoder.encode(&chunk).unwrap();
    let mut decoder = FrameDecoder::new();
    decoder.feed(encoder.as_bytes()).unwrap();
    let frame = decoder.next_frame().unwrap().expect("whole frame fed");
    assert!(frame.body().len() > 2 * 1024 * 1024);
    drop(frame);
    // Another large frame may follow: the buffer stays.
    assert!(decoder.read_buf().unwrap().len() > READ_BUFFER_BYTES);
    let small = one_heartbeat_frame();
    for _ in 0..SHRINK_AFTER_SMALL_FRAMES {
        decoder.feed(&small).unwrap();
        assert!(decoder.next_frame().unwrap().is_some());
    }
    assert!(decoder.read_buf().unwrap().len() <= READ_BUFFER_BYTES);
}

fn heartbeats_frame(messages: usize) -> Vec<u8> {
    let batch = RaftBatch {
        messages: (0..messages as u64)
            .map(|group| Envelope {
                group,
                from: 1,
                to: 2,
                term: 5,
                body: RaftBody::Heartbeat(Heartbeat {
                    commit_index: 4,
                    read_context: 0,
                }),
            })
            .collect(),
    };
    let mut encoder = FrameEncoder::new();
    encoder.encode(&batch).unwrap();
    encoder.as_bytes().to_vec()
}

#[test]
fn a_read_stops_at_the_end_of_a_frame_when_no_second_one_would_fit_behind_it() {
    let frame = heartbeats_frame(400);
    assert!(frame.len() > 16 * 1024, "a frame larger than the smallest buffer");
    let buffer_bytes = 3 * frame.len() / 2;
    let mut decoder = FrameDecoder::with_buffer_bytes(buffer_bytes);
    decoder.feed(&frame[..FRAME_HEADER_BYTES]).unwrap();
    // Room for the rest of this frame only: a longer read would start the
    // next frame where it cannot be completed in place.
    assert_eq!(decoder.read_buf().unwrap().len(), frame.len() - FRAME_HEADER_BYTES);
    decoder.feed(&frame[FRAME_HEADER_BYTES..]).unwrap();
    assert!(decoder.next_frame().unwrap().is_some());
    assert_eq!(decoder.buffered_bytes(), 0);
    // Before the next header is in, the last frame's size is the guess.
    let room = decoder.read_buf().unwrap().len();
    assert_eq!(room, frame.len());
    // A stream of such frames in reads of any size decodes whole.
    let stream: Vec<u8> = (0..5).flat_map(|_| frame.iter().copied()).collect();
    let mut decoder = FrameDecoder::with_buffer_bytes(buffer_bytes);
    let (mut decoded, mut rest) = (0, &stream[..]);
    for read_bytes in [7usize, 1000, 4096, 33].iter().cycle() {
        while decoder.next_frame().unwrap().is_some() {
            decoded += 1;
        }
        if rest.is_empty() {
            break;
        }
        let buf = decoder.read_buf().unwrap();
        let n = buf.len().min(rest.len()).min(*read_bytes);
        buf[..n].copy_from_slice(&rest[..n]);
        decoder.advance(n);
        rest = &rest[n..];
    }
    assert_eq!(decoded, 5);
    decoder.finish().unwrap();
}

#[test]
fn a_read_consistency_outside_its_variants_is_an_invalid_archive() {
    let body = |consistency: ReadConsistency| {
        let batch = ClientRequestBatch {
            requests: vec![ClientRequest::Read {
                client_id: 1,
                request_id: 2,
                group: 3,
                payload: b"q".to_vec(),
                consistency,
            }],
        };
        rkyv::to_bytes::<rkyv::rancor::Error>(&batch).unwrap().to_vec()
    };
    let linearizable = body(ReadConsistency::Linearizable);
    let stale = body(ReadConsistency::Stale);
    // The two archives differ in the consistency tag alone.
    let differing: Vec<usize> = (0..stale.len()).filter(|&i| stale[i] != linearizable[i]).collect();
    assert_eq!(differing.len(), 1, "{linearizable:?} vs {stale:?}");
    for tag in [2u8, 0x7f, 0xff] {
        let mut bad = stale.clone();
        bad[differing[0]] = tag;
        let mut encoder = FrameEncoder::new();
        encoder
            .encode_raw(FrameKind::ClientRequests, WIRE_VERSION, &bad)
            .unwrap();
        assert!(
            matches!(
                decode_all(encoder.as_bytes()),
                Err(NetError::InvalidArchive {
                    kind: FrameKind::ClientRequests,
                    ..
                })
            ),
            "tag {tag}"
        );
    }
    let mut encoder = FrameEncoder::new();
    encoder
        .encode_raw(FrameKind::ClientRequests, WIRE_VERSION, &stale)
        .unwrap();
    let frames = decode_all(encoder.as_bytes()).unwrap();
    let request = &frames[0].client_requests().unwrap().requests[0];
    let ArchivedClientRequest::Read { consistency, .. } = request else {
        panic!("{request:?}");
    };
    assert_eq!(*consistency, ArchivedReadConsistency::Stale);
}
