//! Where the outcome of a request goes: back to an embedding caller on
//! another thread, or into a client connection's response queue.

use std::cell::RefCell;

use coraft_net::admin::AdminResponseFrame;
use coraft_net::frame::FrameBody;
use coraft_net::schema::{ArchivedClientResponseBatch, BytesRef, ClientError, ClientResponse, ClientResponseRef};
use glommio::channels::local_channel::LocalSender;

use super::forward::ClientRoute;
use crate::api::Error;
use crate::raft::NodeId;

/// Bound on responses queued for one client connection before its writer
/// sends them.
pub const CLIENT_RESPONSES_QUEUED_MAX: usize = 1 << 16;

/// Bound on the result bytes of the responses one frame carries: the
/// writer cuts a longer queue into several frames (a result is at most
/// `APPLY_RESULT_BYTES_MAX`, a quarter of a frame, so one always fits).
pub const CLIENT_RESPONSE_FRAME_BYTES_MAX: usize = coraft_net::frame::FRAME_BODY_MAX_BYTES / 2;

/// Result bytes whose room a [`ResponseQueue`] keeps after its writer sent
/// them; a larger queue gives the rest back.
pub const CLIENT_RESPONSE_BYTES_RETAINED_MAX: usize = 1 << 20;

/// A queued response; its result bytes lie in its queue's buffer.
struct QueuedResponse {
    client_id: u64,
    request_id: u64,
    group: u64,
    leader_hint: Option<u64>,
    /// `(start, len)` of the result bytes.
    result: Result<(usize, usize), ClientError>,
}

/// A connection's responses waiting for its writer: the result bytes of
/// all of them in one buffer, so queueing a response allocates nothing
/// once the buffers have grown (the writer swaps two queues).
#[derive(Default)]
pub(crate) struct ResponseQueue {
    responses: Vec<QueuedResponse>,
    bytes: Vec<u8>,
}

impl ResponseQueue {
    pub fn len(&self) -> usize {
        self.responses.len()
    }

    fn push(
        &mut self,
        client_id: u64,
        request_id: u64,
        group: u64,
        leader_hint: Option<u64>,
        result: Result<&[u8], ClientError>,
    ) {
        let result = result.map(|bytes| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(bytes);
            (start, bytes.len())
        });
        self.responses.push(QueuedResponse {
            client_id,
            request_id,
            group,
            leader_hint,
            result,
        });
    }

    /// Empties it, keeping room up to [`CLIENT_RESPONSE_BYTES_RETAINED_MAX`]
    /// bytes and [`CLIENT_RESPONSES_QUEUED_MAX`] responses.
    pub fn clear(&mut self) {
        self.responses.clear();
        self.bytes.clear();
        if self.bytes.capacity() > CLIENT_RESPONSE_BYTES_RETAINED_MAX {
            self.bytes.shrink_to(CLIENT_RESPONSE_BYTES_RETAINED_MAX);
        }
        if self.responses.capacity() > CLIENT_RESPONSES_QUEUED_MAX {
            self.responses.shrink_to(CLIENT_RESPONSES_QUEUED_MAX);
        }
    }

    /// The queue cut into frames of at most
    /// [`CLIENT_RESPONSE_FRAME_BYTES_MAX`] result bytes each (a response
    /// larger alone gets a frame of its own).
    pub fn frames(&self) -> impl Iterator<Item = ResponseFrame<'_>> {
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= self.responses.len() {
                return None;
            }
            let mut end = start;
            let mut bytes = 0;
            while end < self.responses.len() {
                let len = self.responses[end].result.as_ref().map_or(0, |&(_, len)| len);
                if end > start && bytes + len > CLIENT_RESPONSE_FRAME_BYTES_MAX {
                    break;
                }
                bytes += len;
                end += 1;
            }
            let frame = ResponseFrame {
                queue: self,
                range: start..end,
            };
            start = end;
            Some(frame)
        })
    }
}

/// Some of a [`ResponseQueue`]'s responses, encoded as the
/// `ClientResponseBatch` a client reads, from the queue's buffer.
pub(crate) struct ResponseFrame<'a> {
    queue: &'a ResponseQueue,
    range: std::ops::Range<usize>,
}

impl ResponseFrame<'_> {
    fn responses(&self) -> impl ExactSizeIterator<Item = ClientResponseRef<'_>> + Clone + '_ {
        self.queue.responses[self.range.clone()]
            .iter()
            .map(|queued| ClientResponseRef {
                client_id: queued.client_id,
                request_id: queued.request_id,
                group: queued.group,
                leader_hint: queued.leader_hint,
                result: match &queued.result {
                    Ok((start, len)) => Ok(BytesRef(&self.queue.bytes[*start..start + len])),
                    Err(error) => Err(error.clone()),
                },
            })
    }
}

impl rkyv::Archive for ResponseFrame<'_> {
    type Archived = ArchivedClientResponseBatch;
    type Resolver = rkyv::vec::VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        // As `#[derive(Archive)]` resolves the field of `ClientResponseBatch`.
        // SAFETY: `responses` is a field of the archived struct `out` points to.
        let field = unsafe { core::ptr::addr_of_mut!((*out.ptr()).responses) };
        // SAFETY: `field` points into `out`'s place, as this requires.
        let field_out = unsafe { rkyv::Place::from_field_unchecked(out, field) };
        rkyv::vec::ArchivedVec::resolve_from_len(self.range.len(), resolver, field_out);
    }
}

impl<S> rkyv::Serialize<S> for ResponseFrame<'_>
where
    S: rkyv::rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
    for<'b> ClientResponseRef<'b>: rkyv::Serialize<S, Archived = coraft_net::schema::ArchivedClientResponse>,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        rkyv::vec::ArchivedVec::serialize_from_iter::<ClientResponseRef<'_>, _, _>(self.responses(), serializer)
    }
}

impl FrameBody for ResponseFrame<'_> {
    const KIND: coraft_net::frame::FrameKind = coraft_net::frame::FrameKind::ClientResponses;
}

/// A client connection's outgoing responses and the bell that wakes its writer.
pub(crate) struct ClientOutbox {
    pub responses: RefCell<ResponseQueue>,
    /// Answers to admin requests (at most one per queued request:
    /// `admin::ADMIN_REQUESTS_QUEUED_MAX` bounds them).
    pub admin: RefCell<Vec<AdminResponseFrame>>,
    pub doorbell: LocalSender<()>,
    /// The client protocol version the connection's hello announced
    /// (`coraft_net::CLIENT_PROTOCOL_VERSION`): which errors it can read.
    client_protocol: u16,
}

impl ClientOutbox {
    pub fn new(doorbell: LocalSender<()>, client_protocol: u16) -> ClientOutbox {
        ClientOutbox {
            responses: RefCell::new(ResponseQueue::default()),
            admin: RefCell::new(Vec::new()),
            doorbell,
            client_protocol,
        }
    }

    pub fn push_admin(&self, response: AdminResponseFrame) {
        self.admin.borrow_mut().push(response);
        let _ = self.doorbell.try_send(());
    }

    pub fn push(&self, response: ClientResponse) {
        self.push_ref(
            response.client_id,
            response.request_id,
            response.group,
            response.leader_hint,
            response.result.as_deref().map_err(Clone::clone),
        );
    }

    /// Queues a response whose result is copied from `result`.
    pub fn push_ref(
        &self,
        client_id: u64,
        request_id: u64,
        group: u64,
        leader_hint: Option<u64>,
        result: Result<&[u8], ClientError>,
    ) {
        let result = result.map_err(|error| downgrade(error, self.client_protocol));
        let mut responses = self.responses.borrow_mut();
        if responses.len() < CLIENT_RESPONSES_QUEUED_MAX {
            responses.push(client_id, request_id, group, leader_hint, result);
        }
        drop(responses);
        let _ = self.doorbell.try_send(());
    }
}

/// `error` as a client of `client_protocol` can read it: a client from
/// before [`ClientError::ResultTooLarge`] gets `Storage`, as it always did.
fn downgrade(error: ClientError, client_protocol: u16) -> ClientError {
    match error {
        ClientError::ResultTooLarge if client_protocol < coraft_net::CLIENT_RESULT_TOO_LARGE_VERSION_MIN => {
            ClientError::Storage
        }
        error => error,
    }
}

/// Where one request's outcome goes.
pub(crate) enum Reply {
    /// An embedding caller, waiting on another thread.
    Api(flume::Sender<Result<Vec<u8>, Error>>),
    /// A client connection (on this shard or another).
    Client {
        route: ClientRoute,
        client_id: u64,
        request_id: u64,
        group: u64,
    },
}

impl Reply {
    pub fn send(self, result: Result<Vec<u8>, Error>, leader_hint: Option<NodeId>) {
        match self {
            Reply::Api(sender) => {
                let _ = sender.send(result);
            }
            client => client.send_bytes(result.as_deref().map_err(Clone::clone), leader_hint),
        }
    }

    /// Sends a result borrowed from the buffer that holds it: a client
    /// connection's queue copies the bytes into its own buffer (no vector
    /// per result); an embedding caller gets a vector.
    pub fn send_bytes(self, result: Result<&[u8], Error>, leader_hint: Option<NodeId>) {
        match self {
            Reply::Api(sender) => {
                let _ = sender.send(result.map(<[u8]>::to_vec));
            }
            Reply::Client {
                route,
                client_id,
                request_id,
                group,
            } => {
                let result = result.map_err(|error| match error {
                    Error::NotLeader { leader_hint } => ClientError::NotLeader {
                        leader_hint: leader_hint.map(|n| n.0),
                    },
                    Error::TermMismatch { .. } => ClientError::NotLeader { leader_hint: None },
                    // The wire has no "too large" answer yet: the client
                    // sees Busy; the embedding API gets the precise error.
                    Error::Busy { .. } | Error::TooLarge { .. } => ClientError::Busy,
                    // Membership answers never reach a client's write.
                    Error::ChangeInProgress | Error::InvalidChange(_) => ClientError::Busy,
                    Error::Timeout => ClientError::Timeout,
                    Error::Shutdown => ClientError::Shutdown,
                    // The wire has no "removed" answer: to a client, the
                    // node does not host the group.
                    Error::UnknownGroup(_) | Error::GroupRemoved(_) => ClientError::UnknownGroup,
                    Error::SessionExpired => ClientError::SessionExpired,
                    Error::StaleSequence => ClientError::StaleSequence,
                    Error::Storage(_) | Error::Config(_) | Error::Network(_) | Error::Snapshot { .. } => {
                        ClientError::Storage
                    }
                    // Applied, but not answerable (not Busy, which would
                    // invite a blind retry); the outbox says `Storage` to a
                    // client too old to read it.
                    Error::ResultTooLarge { .. } => ClientError::ResultTooLarge,
                });
                route.push_ref(client_id, request_id, group, leader_hint.map(|n| n.0), result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coraft_net::schema::ClientResponseBatch;

    #[test]
    fn only_a_client_too_old_to_read_result_too_large_gets_storage_instead() {
        assert_eq!(downgrade(ClientError::ResultTooLarge, 0), ClientError::Storage);
        assert_eq!(
            downgrade(ClientError::ResultTooLarge, coraft_net::CLIENT_PROTOCOL_VERSION),
            ClientError::ResultTooLarge
        );
        assert_eq!(downgrade(ClientError::Busy, 0), ClientError::Busy);
    }

    fn owned(i: u64) -> ClientResponse {
        ClientResponse {
            client_id: i,
            request_id: i * 10,
            group: 3,
            leader_hint: i.is_multiple_of(2).then_some(i),
            result: match i % 3 {
                0 => Err(ClientError::NotLeader { leader_hint: Some(2) }),
                1 => Ok(vec![i as u8; i as usize]),
                _ => Ok(Vec::new()),
            },
        }
    }

    #[test]
    fn a_frame_from_the_queues_buffer_encodes_as_the_owned_batch_does() {
        let responses: Vec<ClientResponse> = (0..20).map(owned).collect();
        let mut queue = ResponseQueue::default();
        for r in &responses {
            queue.push(
                r.client_id,
                r.request_id,
                r.group,
                r.leader_hint,
                r.result.as_deref().map_err(Clone::clone),
            );
        }
        let frames: Vec<_> = queue.frames().collect();
        assert_eq!(frames.len(), 1);
        let ours = rkyv::to_bytes::<rkyv::rancor::Error>(&frames[0]).unwrap();
        let theirs = rkyv::to_bytes::<rkyv::rancor::Error>(&ClientResponseBatch { responses }).unwrap();
        assert_eq!(ours.as_slice(), theirs.as_slice());
    }

    #[test]
    fn a_long_queue_is_cut_into_frames_within_the_bound() {
        let mut queue = ResponseQueue::default();
        let result = vec![1u8; CLIENT_RESPONSE_FRAME_BYTES_MAX / 3 + 1];
        for i in 0..5 {
            queue.push(i, i, 1, None, Ok(&result));
        }
        let sizes: Vec<usize> = queue.frames().map(|f| f.range.len()).collect();
        // Two results fit under the bound, a third would not.
        assert_eq!(sizes, vec![2, 2, 1]);
        queue.clear();
        assert_eq!(queue.frames().count(), 0);
        assert!(queue.bytes.capacity() <= CLIENT_RESPONSE_BYTES_RETAINED_MAX);
    }
}
