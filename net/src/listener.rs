//! The accepting side, on a glommio shard: listener, handshake, frame reader.
//!
//! The engine's shard loop calls [`Listener::accept`], spawns a task per
//! [`Handshaking`] connection (a slow or hostile peer never holds up the
//! accept loop), and reads validated frames with [`InboundConnection::recv`].
//! Every refusal and every connection closed for bad input is logged with its
//! reason and counted in the listener's [`NetStats`]; the listener itself
//! keeps serving. A listener holds at most [`INBOUND_CONNECTIONS_MAX`]
//! connections open at once (handshaking or served): one more is closed as
//! soon as it is accepted and counted as [`Counter::RefusedOverLimit`], so
//! that a peer or client opening connections in a loop cannot take every
//! file descriptor and task of the shard.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::config::NetConfig;
use crate::decoder::{Frame, FrameDecoder};
use crate::error::NetError;
use crate::frame::{FrameBody, FrameEncoder, FrameKind, FRAME_BODY_MAX_BYTES, WIRE_VERSION};
use crate::handshake::{check_hello, Hello, HelloReply, PeerIdentity, Role, HELLO_BYTES};
use crate::socket::tune_stream;
use crate::stats::{Counter, NetStats};

fn glommio_io(context: &'static str) -> impl FnOnce(glommio::GlommioError<()>) -> NetError {
    move |error| NetError::Io {
        context,
        source: error.into(),
    }
}

/// Bound on the connections one listener holds open at once, handshaking or
/// served (see [`Listener::set_connections_max`]).
pub const INBOUND_CONNECTIONS_MAX: usize = 4096;

/// A bound listening socket of one shard.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    config: NetConfig,
    stats: Rc<NetStats>,
    open: Rc<Cell<usize>>,
    connections_max: Cell<usize>,
}

/// One open connection of a listener: counted while it lives.
#[derive(Debug)]
struct ConnectionSlot {
    open: Rc<Cell<usize>>,
}

impl ConnectionSlot {
    fn take(open: &Rc<Cell<usize>>) -> ConnectionSlot {
        open.set(open.get() + 1);
        ConnectionSlot { open: Rc::clone(open) }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.set(self.open.get() - 1);
    }
}

impl Listener {
    /// Binds `address` (port 0 picks a free one). Must run on a glommio executor.
    pub fn bind(address: SocketAddr, config: NetConfig) -> Result<Listener, NetError> {
        config.validate()?;
        let listener = TcpListener::bind(address).map_err(glommio_io("bind listener"))?;
        Ok(Listener {
            listener,
            config,
            stats: Rc::new(NetStats::new()),
            open: Rc::new(Cell::new(0)),
            connections_max: Cell::new(INBOUND_CONNECTIONS_MAX),
        })
    }

    /// Changes the bound on open connections (at least 1; default
    /// [`INBOUND_CONNECTIONS_MAX`]). Connections already open stay.
    pub fn set_connections_max(&self, connections_max: usize) {
        self.connections_max.set(connections_max.max(1));
    }

    /// The bound on open connections.
    pub fn connections_max(&self) -> usize {
        self.connections_max.get()
    }

    /// Connections open now (handshaking or served).
    pub fn connections_open(&self) -> usize {
        self.open.get()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The counters shared by this listener's connections.
    pub fn stats(&self) -> Rc<NetStats> {
        Rc::clone(&self.stats)
    }

    /// Waits for the next TCP connection; its handshake is still to be done.
    /// While [`connections_max`](Self::connections_max) connections are
    /// open, each new one is closed at once and counted as
    /// [`Counter::RefusedOverLimit`].
    pub async fn accept(&self) -> Result<Handshaking, NetError> {
        loop {
            let stream = self.listener.accept().await.map_err(glommio_io("accept"))?;
            if self.open.get() >= self.connections_max.get() {
                self.stats.add(Counter::RefusedOverLimit, 1);
                let refused = self.stats.get(Counter::RefusedOverLimit);
                // Logged at the 1st, 2nd, 4th, 8th... refusal: a flood of
                // connections cannot flood the log.
                if refused.is_power_of_two() {
                    log::warn!(
                        "closed a connection from {:?}: {} connections are open, the bound ({refused} refused so far)",
                        stream.peer_addr().ok(),
                        self.open.get()
                    );
                }
                drop(stream);
                continue;
            }
            self.stats.add(Counter::ConnectionsAccepted, 1);
            return Ok(Handshaking {
                stream,
                config: self.config,
                stats: Rc::clone(&self.stats),
                slot: ConnectionSlot::take(&self.open),
            });
        }
    }
}

/// An accepted connection whose handshake has not run yet.
#[derive(Debug)]
pub struct Handshaking {
    stream: TcpStream,
    config: NetConfig,
    stats: Rc<NetStats>,
    slot: ConnectionSlot,
}

impl Handshaking {
    /// Runs the handshake (bounded by the configured timeout): reads the
    /// peer's [`Hello`], checks it, answers. A refusal is logged, counted,
    /// answered with its reason, and returned as [`NetError::Refused`].
    pub async fn handshake(self) -> Result<InboundConnection, NetError> {
        let stats = Rc::clone(&self.stats);
        let peer_address = self.stream.peer_addr().ok();
        let timeout = self.config.handshake_timeout;
        let deadline = async {
            glommio::timer::sleep(timeout).await;
            Err(NetError::HandshakeTimeout {
                millis: timeout.as_millis() as u64,
            })
        };
        let result = futures_lite::future::or(self.exchange(), deadline).await;
        match &result {
            Ok(connection) => {
                stats.add(Counter::HandshakesAccepted, 1);
                log::debug!("accepted {:?} from {peer_address:?}", connection.peer);
            }
            Err(NetError::Refused { refusal }) => {
                stats.record_refusal(refusal);
                log::warn!("refused handshake from {peer_address:?}: {refusal}");
            }
            Err(error) => {
                stats.add(Counter::HandshakesFailed, 1);
                log::warn!("handshake with {peer_address:?} failed: {error}");
            }
        }
        result
    }

    async fn exchange(mut self) -> Result<InboundConnection, NetError> {
        tune_stream(self.stream.as_raw_fd(), self.config.dead_peer_timeout).map_err(NetError::io("tune socket"))?;
        let mut decoder = FrameDecoder::new();
        decoder.set_body_max_bytes(HELLO_BYTES);
        let frame = read_frame(&mut self.stream, &mut decoder)
            .await?
            .ok_or(NetError::BadHandshake {
                reason: "connection closed before the hello",
            })?;
        if frame.kind() != FrameKind::Hello {
            return Err(NetError::UnexpectedFrame {
                kind: frame.kind(),
                context: "expected a hello",
            });
        }
        let hello = Hello::parse(frame.body())?;
        let identity = self.config.identity;
        let verdict = check_hello(&identity, frame.version(), &hello);
        let reply = HelloReply {
            refusal: verdict.err(),
            identity,
        };
        let mut encoder = FrameEncoder::new();
        encoder.encode_raw(FrameKind::HelloReply, WIRE_VERSION, &reply.to_bytes())?;
        self.stream
            .write_all(encoder.as_bytes())
            .await
            .map_err(NetError::io("send hello reply"))?;
        let peer = verdict.map_err(|refusal| NetError::Refused { refusal })?;
        decoder.set_body_max_bytes(FRAME_BODY_MAX_BYTES);
        let fd = self.stream.as_raw_fd();
        let (reader, writer) = futures_lite::io::split(self.stream);
        let responses = (peer.role == Role::Client).then(|| ResponseWriter {
            writer,
            encoder: FrameEncoder::new(),
        });
        Ok(InboundConnection {
            fd,
            reader,
            decoder,
            peer,
            responses,
            stats: self.stats,
            closed: false,
            _slot: self.slot,
        })
    }
}

/// Reads until one frame is complete; `None` at a clean end of stream.
pub(crate) async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    decoder: &mut FrameDecoder,
) -> Result<Option<Frame>, NetError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(Some(frame));
        }
        let buf = decoder.read_buf()?;
        let received = reader.read(buf).await.map_err(NetError::io("receive"))?;
        if received == 0 {
            decoder.finish()?;
            return Ok(None);
        }
        decoder.advance(received);
    }
}

/// Receives into `buf` with a non-blocking `recv(2)`: `None` when nothing is
/// waiting (then the caller waits through glommio).
fn try_recv(fd: RawFd, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
    loop {
        // SAFETY: `fd` is a socket the caller keeps open for the call; the
        // kernel writes at most `buf.len()` bytes into the live `buf`.
        let received = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if received >= 0 {
            return Some(Ok(received as usize));
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock => return None,
            _ => return Some(Err(error)),
        }
    }
}

/// [`read_frame`] for a connected stream: while bytes are waiting they are
/// received directly, and glommio is asked to wait only when none are. A
/// glommio read that did not fill its buffer arms a readiness poll, and the
/// next read waits for that poll's completion to come back through the
/// ring even when the bytes are already there; on a busy stream that is a
/// ring round trip per read.
async fn read_frame_direct<R: futures_lite::AsyncRead + Unpin>(
    fd: RawFd,
    reader: &mut R,
    decoder: &mut FrameDecoder,
) -> Result<Option<Frame>, NetError> {
    let mut yielded = false;
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(Some(frame));
        }
        if !yielded {
            // More bytes are needed: first let the tasks the last frame woke
            // run (the writer of a reply, above all), so that a reply leaves
            // before this task makes its receive calls rather than after.
            futures_lite::future::yield_now().await;
            yielded = true;
        }
        let received = match try_recv(fd, decoder.read_buf()?) {
            Some(result) => result,
            None => reader.read(decoder.read_buf()?).await,
        }
        .map_err(NetError::io("receive"))?;
        if received == 0 {
            decoder.finish()?;
            return Ok(None);
        }
        decoder.advance(received);
    }
}

/// A connection that passed the handshake: a source of validated frames.
#[derive(Debug)]
pub struct InboundConnection {
    /// The socket `reader` reads from (kept open by `reader`).
    fd: RawFd,
    reader: ReadHalf<TcpStream>,
    decoder: FrameDecoder,
    peer: PeerIdentity,
    responses: Option<ResponseWriter>,
    stats: Rc<NetStats>,
    closed: bool,
    /// Counts the connection against the listener's bound until dropped.
    _slot: ConnectionSlot,
}

impl InboundConnection {
    /// Who is on the other side.
    pub fn peer(&self) -> PeerIdentity {
        self.peer
    }

    /// For a [`Role::Client`] connection, the writer for its responses (once).
    pub fn take_response_writer(&mut self) -> Option<ResponseWriter> {
        self.responses.take()
    }

    /// The next validated frame: [`FrameKind::Raft`] from peers,
    /// [`FrameKind::ClientRequests`] or [`FrameKind::AdminRequest`] from
    /// clients (an admin request's archive is checked when read,
    /// [`Frame::admin_request`]). `Ok(None)` when the peer
    /// closed cleanly. Any error closes the connection for good: it is
    /// logged with the peer and reason, and counted.
    pub async fn recv(&mut self) -> Result<Option<Frame>, NetError> {
        if self.closed {
            return Err(NetError::Closed);
        }
        let result = read_frame_direct(self.fd, &mut self.reader, &mut self.decoder).await;
        let expected = |kind: FrameKind| match self.peer.role {
            Role::Peer => kind == FrameKind::Raft,
            Role::Client => matches!(kind, FrameKind::ClientRequests | FrameKind::AdminRequest),
        };
        let result = match result {
            Ok(Some(frame)) if !expected(frame.kind()) => Err(NetError::UnexpectedFrame {
                kind: frame.kind(),
                context: "after the handshake",
            }),
            other => other,
        };
        match &result {
            Ok(Some(frame)) => {
                self.stats.add(Counter::FramesReceived, 1);
                self.stats.add(Counter::BytesReceived, frame.wire_bytes() as u64);
            }
            Ok(None) => {
                self.closed = true;
                self.stats.add(Counter::ClosedCleanly, 1);
            }
            Err(error) => {
                self.closed = true;
                self.stats.record_close(error);
                log::warn!("closing connection from {:?}: {error}", self.peer);
            }
        }
        result
    }
}

/// Sends client responses back on the connection the requests came in on.
#[derive(Debug)]
pub struct ResponseWriter {
    writer: WriteHalf<TcpStream>,
    encoder: FrameEncoder,
}

impl ResponseWriter {
    /// Encodes and writes one frame of responses (a [`crate::schema::ClientResponseBatch`]
    /// or an admin answer).
    pub async fn send<B: FrameBody>(&mut self, responses: &B) -> Result<(), NetError> {
        self.encoder.clear();
        self.encoder.encode(responses)?;
        self.writer
            .write_all(self.encoder.as_bytes())
            .await
            .map_err(NetError::io("send client responses"))
    }
}
