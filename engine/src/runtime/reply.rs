//! Where the outcome of a request goes: back to an embedding caller on
//! another thread, or into a client connection's response queue.

use std::cell::RefCell;

use coraft_net::admin::AdminResponseFrame;
use coraft_net::schema::{ClientError, ClientResponse};
use glommio::channels::local_channel::LocalSender;

use super::forward::ClientRoute;
use crate::api::Error;
use crate::raft::NodeId;

/// Bound on responses queued for one client connection before its writer
/// sends them.
pub const CLIENT_RESPONSES_QUEUED_MAX: usize = 1 << 16;

/// A client connection's outgoing responses and the bell that wakes its writer.
pub(crate) struct ClientOutbox {
    pub responses: RefCell<Vec<ClientResponse>>,
    /// Answers to admin requests (at most one per queued request:
    /// `admin::ADMIN_REQUESTS_QUEUED_MAX` bounds them).
    pub admin: RefCell<Vec<AdminResponseFrame>>,
    pub doorbell: LocalSender<()>,
}

impl ClientOutbox {
    pub fn new(doorbell: LocalSender<()>) -> ClientOutbox {
        ClientOutbox {
            responses: RefCell::new(Vec::new()),
            admin: RefCell::new(Vec::new()),
            doorbell,
        }
    }

    pub fn push_admin(&self, response: AdminResponseFrame) {
        self.admin.borrow_mut().push(response);
        let _ = self.doorbell.try_send(());
    }

    pub fn push(&self, response: ClientResponse) {
        let mut responses = self.responses.borrow_mut();
        if responses.len() < CLIENT_RESPONSES_QUEUED_MAX {
            responses.push(response);
        }
        drop(responses);
        let _ = self.doorbell.try_send(());
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
                });
                route.push(ClientResponse {
                    client_id,
                    request_id,
                    group,
                    leader_hint: leader_hint.map(|n| n.0),
                    result,
                });
            }
        }
    }
}
