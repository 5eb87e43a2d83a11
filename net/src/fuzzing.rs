//! Support shared by the cargo-fuzz target (`fuzz/fuzz_targets/decode.rs`) and
//! the corpus replay test, so CI on stable runs exactly what the fuzzer runs.

use crate::admin::{ArchivedAdminError, ArchivedAdminReply, ArchivedAdminRequest};
use crate::decoder::{Frame, FrameDecoder};
use crate::error::NetError;
use crate::frame::FrameKind;
use crate::handshake::{Hello, HelloReply};
use crate::schema::{ArchivedClientError, ArchivedClientRequest, ArchivedRaftBody};

/// What [`exercise_decoder`] saw.
#[derive(Debug, Default)]
pub struct DecodeOutcome {
    /// Frames that validated.
    pub frames: usize,
    /// Payload and data bytes reachable from them (forces every access).
    pub payload_bytes: u64,
    /// The error that ended the stream, if any.
    pub error: Option<NetError>,
}

/// Feeds `data` to a decoder as a connection would: the first byte picks the
/// size of each "read" (so splits at every offset get exercised), the rest
/// is the stream. Reads every frame through its accessors.
pub fn exercise_decoder(data: &[u8]) -> DecodeOutcome {
    let mut outcome = DecodeOutcome::default();
    let Some((&split, stream)) = data.split_first() else {
        return outcome;
    };
    let read_bytes = if split == 0 { usize::MAX } else { usize::from(split) };
    // The smallest standing buffer: cheap per input, and frames cross
    // buffer changes often.
    let mut decoder = FrameDecoder::with_buffer_bytes(0);
    let mut rest = stream;
    let result = (|| -> Result<(), NetError> {
        loop {
            while let Some(frame) = decoder.next_frame()? {
                outcome.frames += 1;
                outcome.payload_bytes += walk_frame(&frame);
            }
            if rest.is_empty() {
                return decoder.finish();
            }
            let buf = decoder.read_buf()?;
            let n = buf.len().min(rest.len()).min(read_bytes);
            buf[..n].copy_from_slice(&rest[..n]);
            decoder.advance(n);
            rest = &rest[n..];
        }
    })();
    outcome.error = result.err();
    outcome
}

/// Touches everything a receiver would read; returns the payload bytes seen.
pub fn walk_frame(frame: &Frame) -> u64 {
    let mut bytes = 0u64;
    match frame.kind() {
        FrameKind::Hello => bytes += Hello::parse(frame.body()).map_or(0, |hello| hello.node_id & 1),
        FrameKind::HelloReply => {
            bytes += HelloReply::parse(frame.body(), frame.version()).map_or(0, |reply| reply.identity.node_id & 1)
        }
        FrameKind::Raft => {
            for message in frame.raft().into_iter().flat_map(|batch| batch.messages.iter()) {
                bytes += match &message.body {
                    ArchivedRaftBody::AppendEntries(append) => {
                        append.entries.iter().map(|entry| entry.data.len() as u64).sum()
                    }
                    ArchivedRaftBody::InstallSnapshot(chunk) => {
                        chunk.data.len() as u64 + chunk.configuration.voters.len() as u64
                    }
                    ArchivedRaftBody::SnapshotChunk(chunk) => chunk.data.len() as u64,
                    ArchivedRaftBody::CoalescedHeartbeat(beat) => beat.groups.len() as u64,
                    _ => 1,
                };
            }
        }
        FrameKind::ClientRequests => {
            for request in frame
                .client_requests()
                .into_iter()
                .flat_map(|batch| batch.requests.iter())
            {
                bytes += match request {
                    ArchivedClientRequest::Propose { payload, .. } => payload.len() as u64,
                    ArchivedClientRequest::Read { payload, .. } => payload.len() as u64,
                    ArchivedClientRequest::RegisterSession { session, .. } => (session.to_native() & 1) as u64,
                };
            }
        }
        FrameKind::ClientResponses => {
            for response in frame
                .client_responses()
                .into_iter()
                .flat_map(|batch| batch.responses.iter())
            {
                bytes += match &response.result {
                    rkyv::result::ArchivedResult::Ok(payload) => payload.len() as u64,
                    rkyv::result::ArchivedResult::Err(ArchivedClientError::NotLeader { leader_hint }) => {
                        leader_hint.as_ref().map_or(0, |hint| hint.to_native() & 1)
                    }
                    rkyv::result::ArchivedResult::Err(_) => 1,
                };
            }
        }
        FrameKind::AdminRequest => {
            bytes += frame
                .admin_request()
                .and_then(Result::ok)
                .map_or(0, |request| match &request.request {
                    ArchivedAdminRequest::Status { groups } => groups.len() as u64,
                    _ => 1,
                })
        }
        FrameKind::AdminResponse => {
            bytes += frame.admin_response().map_or(0, |response| match &response.result {
                rkyv::result::ArchivedResult::Ok(ArchivedAdminReply::Status(report)) => report
                    .groups
                    .iter()
                    .map(|group| group.peers.len() as u64 + group.voters.len() as u64)
                    .sum(),
                rkyv::result::ArchivedResult::Ok(_) => 1,
                rkyv::result::ArchivedResult::Err(error) => match error {
                    ArchivedAdminError::BadRequest { reason } | ArchivedAdminError::Failed { reason } => {
                        reason.len() as u64
                    }
                    _ => 1,
                },
            })
        }
    }
    bytes
}
