//! The sending side, on a glommio shard: one connection per (local shard,
//! remote node, remote shard), with a byte-bounded queue.
//!
//! The engine queues [`Envelope`]s with [`OutboundConnection::try_send`]
//! (an error when full) or [`OutboundConnection::send`] (waits for room).
//! A writer task per connection takes *everything* queued, cuts it into
//! frames of about [`FRAME_SPLIT_BYTES`], and hands each frame to the kernel
//! in one `sendmsg` (header, archive and payloads under 64 KiB from the
//! encoder's buffer, larger payloads in place:
//! [`crate::frame::ScatterEncoder`]); while that write is in progress new
//! messages pile up for the next frames. So batches form
//! from what is already queued and a lone message leaves at once: no timer.
//! [`OutboundConnection::send`] lets a runnable writer go first once a
//! frame's worth is queued, so frames leave while their payloads are in cache.
//! The bound counts queued and in-flight bytes, so a slow peer costs at most
//! that much memory and never blocks the senders to other peers.
//!
//! The writer task connects, handshakes, and after any failure reconnects
//! with jittered exponential backoff. Messages queued while disconnected wait
//! (within the bound) for the next connection; the batch being written when a
//! connection breaks is lost, which Raft tolerates (counted as dropped).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

use crate::config::NetConfig;
use crate::decoder::{FrameDecoder, READ_BUFFER_BYTES};
use crate::error::NetError;
use crate::frame::{FrameEncoder, FrameKind, ScatterEncoder, WIRE_VERSION};
use crate::handshake::{Hello, HelloReply, Role, HELLO_REPLY_BYTES};
use crate::listener::read_frame;
use crate::schema::{Envelope, RaftBatchRef};
use crate::socket::{tune_stream, Backoff};

/// An encoder buffer that grew past this many times the queue bound is
/// released once idle (it never should: a frame is at most the queue bound).
/// The buffer holds a whole frame but its payloads of
/// [`crate::frame::SCATTER_MIN_BYTES`] or more: about [`FRAME_FILL_MAX_BYTES`]
/// for frames of many messages, and up to one message's size (at most the
/// queue bound) after a message of many smaller entries; that is kept for
/// the next frames rather than reallocated.
pub const ENCODER_RETAIN_QUEUE_MULTIPLE: usize = 2;

/// A writer cuts what it took from the queue into frames of about this many
/// accounted bytes ([`Envelope::encoded_bytes_max`]), written one by one:
/// small enough that a frame stays in cache from encoding to the kernel's
/// copy and fits the peer's standing receive buffer
/// ([`crate::decoder::READ_BUFFER_BYTES`]), large enough that per-frame
/// costs (a `sendmsg`, a header, the receiver's wake-up and reads) stay
/// small. With 4 KiB messages, 192 KiB frames cost both sides ~15 % less CPU
/// per byte than 128 KiB ones did (docs/journal/benchmarks.md, "## Net").
pub const FRAME_SPLIT_BYTES: usize = 192 * 1024;

/// A frame takes no further message once its accounted bytes would pass
/// this, so a frame of several messages always fits the peer's standing
/// receive buffer ([`READ_BUFFER_BYTES`]); a message too large for it still
/// gets a frame of its own. The margin covers the header, the archive's root
/// and padding, which accounted bytes do not.
pub const FRAME_FILL_MAX_BYTES: usize = READ_BUFFER_BYTES - 1024;

/// Where the frame that starts at `taken[start]` ends (exclusive), and its
/// accounted bytes: messages join it until it holds [`FRAME_SPLIT_BYTES`],
/// or until the next would take it past [`FRAME_FILL_MAX_BYTES`]; the first
/// message always joins.
fn frame_end(taken: &[Envelope], start: usize) -> (usize, usize) {
    let mut end = start;
    let mut frame_accounted = 0;
    while let Some(message) = taken.get(end) {
        let message_bytes = message.encoded_bytes_max();
        let full = frame_accounted >= FRAME_SPLIT_BYTES || frame_accounted + message_bytes > FRAME_FILL_MAX_BYTES;
        if end > start && full {
            break;
        }
        frame_accounted += message_bytes;
        end += 1;
    }
    (end, frame_accounted)
}

/// Where an outbound connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddress {
    /// The remote node.
    pub node_id: u64,
    /// The remote shard.
    pub shard_id: u32,
    /// Its listener's address.
    pub address: SocketAddr,
}

/// Where an outbound connection's writer task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connecting or handshaking.
    Connecting,
    /// Connected: queued messages are being sent.
    Connected,
    /// Waiting before the next attempt.
    Backoff,
    /// Closed by [`OutboundConnection::close`].
    Closed,
}

/// Counters of one outbound connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundStats {
    /// Successful handshakes.
    pub connects: u64,
    /// Handshakes the peer refused.
    pub refusals: u64,
    /// Failed attempts and broken connections.
    pub failures: u64,
    /// Frames written.
    pub frames_sent: u64,
    /// Messages written.
    pub messages_sent: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Messages lost with a broken connection.
    pub messages_dropped: u64,
}

#[derive(Debug, Default)]
struct Queue {
    messages: Vec<Envelope>,
    queued_bytes: usize,
    in_flight_bytes: usize,
    writer: Option<Waker>,
    /// The writer was woken for queued messages and has not taken them yet.
    writer_runnable: bool,
    waiting_senders: Vec<Waker>,
}

#[derive(Debug)]
struct Shared {
    queue: RefCell<Queue>,
    bytes_max: usize,
    state: Cell<ConnectionState>,
    stats: Cell<OutboundStats>,
}

impl Shared {
    fn update_stats(&self, update: impl FnOnce(&mut OutboundStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }

    fn closed(&self) -> bool {
        self.state.get() == ConnectionState::Closed
    }

    /// Whether a message of `message_bytes` fits now.
    fn check_room(&self, message_bytes: usize) -> Result<(), NetError> {
        if self.closed() {
            return Err(NetError::Closed);
        }
        let queue = self.queue.borrow();
        let used = queue.queued_bytes + queue.in_flight_bytes;
        if used + message_bytes > self.bytes_max {
            return Err(NetError::QueueFull {
                queued_bytes: used,
                message_bytes,
                limit_bytes: self.bytes_max,
            });
        }
        Ok(())
    }

    /// Queues a message that [`Shared::check_room`] just found room for.
    /// Inlined so the message moves once, from the caller into the queue
    /// (a `memcpy` of the whole envelope per move).
    #[inline(always)]
    fn push(&self, message: Envelope, message_bytes: usize) {
        let mut queue = self.queue.borrow_mut();
        queue.messages.push(message);
        queue.queued_bytes += message_bytes;
        if let Some(writer) = queue.writer.take() {
            writer.wake();
            queue.writer_runnable = true;
        }
    }

    /// Frees `bytes` of the in-flight bytes once their write ended (well or not).
    fn release_in_flight(&self, bytes: usize) {
        let mut queue = self.queue.borrow_mut();
        queue.in_flight_bytes = queue.in_flight_bytes.saturating_sub(bytes);
        for sender in queue.waiting_senders.drain(..) {
            sender.wake();
        }
    }
}

/// A connection to one peer shard with its queue and writer task.
/// Dropping it (or [`OutboundConnection::close`]) stops the writer task.
#[derive(Debug)]
pub struct OutboundConnection {
    shared: Rc<Shared>,
    peer: PeerAddress,
    task: Option<JoinHandle<()>>,
}

impl OutboundConnection {
    /// Starts the writer task on the current glommio executor; it connects
    /// in the background. `config` must be valid ([`NetConfig::validate`]).
    pub fn spawn(config: NetConfig, peer: PeerAddress) -> Result<OutboundConnection, NetError> {
        config.validate()?;
        let shared = Rc::new(Shared {
            queue: RefCell::new(Queue::default()),
            bytes_max: config.outbound_queue_bytes_max,
            state: Cell::new(ConnectionState::Connecting),
            stats: Cell::new(OutboundStats::default()),
        });
        let task = glommio::spawn_local(run_writer(Rc::clone(&shared), config, peer)).detach();
        Ok(OutboundConnection {
            shared,
            peer,
            task: Some(task),
        })
    }

    /// The peer this connection goes to.
    pub fn peer(&self) -> PeerAddress {
        self.peer
    }

    /// Queues a message, or fails at once with [`NetError::QueueFull`]
    /// (back-pressure), [`NetError::MessageTooLarge`] or [`NetError::Closed`].
    pub fn try_send(&self, message: Envelope) -> Result<(), NetError> {
        let message_bytes = self.accounted_bytes(&message)?;
        self.shared.check_room(message_bytes)?;
        self.shared.push(message, message_bytes);
        Ok(())
    }

    /// Queues a message, waiting while the queue is full. Once a frame's
    /// worth ([`FRAME_SPLIT_BYTES`]) is queued for a writer that has not run
    /// yet, it also yields once so that the writer sends it.
    pub async fn send(&self, message: Envelope) -> Result<(), NetError> {
        let message_bytes = self.accounted_bytes(&message)?;
        if self.shared.check_room(message_bytes).is_err() {
            poll_fn(|cx| match self.shared.check_room(message_bytes) {
                Err(NetError::QueueFull { .. }) => {
                    self.shared.queue.borrow_mut().waiting_senders.push(cx.waker().clone());
                    Poll::Pending
                }
                other => Poll::Ready(other),
            })
            .await?;
        }
        // No await since the check: the room is still there.
        self.shared.push(message, message_bytes);
        // A frame's worth is waiting for a writer that has not run yet: let
        // it run now, so the frame is encoded and sent while its payloads
        // are still in cache and the peer starts on it, instead of after the
        // whole queue has filled.
        let frame_waiting = {
            let queue = self.shared.queue.borrow();
            queue.writer_runnable && queue.queued_bytes >= FRAME_SPLIT_BYTES
        };
        if frame_waiting {
            futures_lite::future::yield_now().await;
        }
        Ok(())
    }

    fn accounted_bytes(&self, message: &Envelope) -> Result<usize, NetError> {
        let message_bytes = message.encoded_bytes_max();
        if message_bytes > self.shared.bytes_max {
            return Err(NetError::MessageTooLarge {
                message_bytes,
                limit_bytes: self.shared.bytes_max,
            });
        }
        Ok(message_bytes)
    }

    /// Bytes held: queued plus being written.
    pub fn held_bytes(&self) -> usize {
        let queue = self.shared.queue.borrow();
        queue.queued_bytes + queue.in_flight_bytes
    }

    /// Where the writer task is.
    pub fn state(&self) -> ConnectionState {
        self.shared.state.get()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> OutboundStats {
        self.shared.stats.get()
    }

    /// Waits until everything queued so far was written (or the connection
    /// closed). For tests, tools and orderly shutdown; the hot path never waits.
    pub async fn flushed(&self) {
        loop {
            if self.held_bytes() == 0 || self.shared.closed() {
                return;
            }
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Stops the writer task; queued messages are dropped.
    pub async fn close(mut self) {
        self.shutdown();
        if let Some(task) = self.task.take() {
            task.cancel();
            let _ = task.await;
        }
    }

    fn shutdown(&self) {
        self.shared.state.set(ConnectionState::Closed);
        let mut queue = self.shared.queue.borrow_mut();
        queue.messages.clear();
        queue.queued_bytes = 0;
        if let Some(writer) = queue.writer.take() {
            writer.wake();
        }
        for sender in queue.waiting_senders.drain(..) {
            sender.wake();
        }
    }
}

impl Drop for OutboundConnection {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(task) = self.task.take() {
            task.cancel();
        }
    }
}

async fn run_writer(shared: Rc<Shared>, config: NetConfig, peer: PeerAddress) {
    let identity = config.identity;
    let seed = identity.node_id.rotate_left(32) ^ u64::from(identity.shard_id) ^ peer.node_id ^ 0x9e37_79b9_7f4a_7c15;
    let mut backoff = Backoff::new(config.reconnect_backoff_min, config.reconnect_backoff_max, seed);
    let mut encoder = ScatterEncoder::new();
    while !shared.closed() {
        shared.state.set(ConnectionState::Connecting);
        let attempt = futures_lite::future::or(connect(&config, &peer), async {
            glommio::timer::sleep(config.handshake_timeout).await;
            Err(NetError::HandshakeTimeout {
                millis: config.handshake_timeout.as_millis() as u64,
            })
        })
        .await;
        match attempt {
            Ok(stream) => {
                backoff.reset();
                shared.update_stats(|stats| stats.connects += 1);
                shared.state.set(ConnectionState::Connected);
                let error = write_loop(&shared, stream, &mut encoder).await;
                if shared.closed() {
                    break;
                }
                shared.update_stats(|stats| stats.failures += 1);
                log::warn!("connection to {peer:?} broke: {error}");
            }
            Err(NetError::Refused { refusal }) => {
                shared.update_stats(|stats| stats.refusals += 1);
                log::warn!("{peer:?} refused our handshake: {refusal}");
            }
            Err(error) => {
                shared.update_stats(|stats| stats.failures += 1);
                log::debug!("connecting to {peer:?} failed: {error}");
            }
        }
        if shared.closed() {
            break;
        }
        shared.state.set(ConnectionState::Backoff);
        glommio::timer::sleep(backoff.next_delay()).await;
    }
}

async fn connect(config: &NetConfig, peer: &PeerAddress) -> Result<TcpStream, NetError> {
    let mut stream = TcpStream::connect(peer.address).await.map_err(|error| NetError::Io {
        context: "connect",
        source: error.into(),
    })?;
    tune_stream(stream.as_raw_fd(), config.dead_peer_timeout).map_err(NetError::io("tune socket"))?;
    let hello = Hello {
        cluster_id: config.identity.cluster_id,
        node_id: config.identity.node_id,
        shard_id: config.identity.shard_id,
        target_shard_id: peer.shard_id,
        target_node_id: peer.node_id,
        role: Role::Peer,
        client_protocol: 0,
    };
    let mut encoder = FrameEncoder::new();
    encoder.encode_raw(FrameKind::Hello, WIRE_VERSION, &hello.to_bytes())?;
    stream
        .write_all(encoder.as_bytes())
        .await
        .map_err(NetError::io("send hello"))?;
    let mut decoder = FrameDecoder::new();
    decoder.set_body_max_bytes(HELLO_REPLY_BYTES);
    let frame = read_frame(&mut stream, &mut decoder)
        .await?
        .ok_or(NetError::BadHandshake {
            reason: "connection closed before the hello reply",
        })?;
    if frame.kind() != FrameKind::HelloReply {
        return Err(NetError::UnexpectedFrame {
            kind: frame.kind(),
            context: "expected a hello reply",
        });
    }
    let reply = HelloReply::parse(frame.body(), frame.version())?;
    match reply.refusal {
        Some(refusal) => Err(NetError::Refused { refusal }),
        None => Ok(stream),
    }
}

/// Sends queued messages until the connection breaks or is closed.
///
/// Everything queued is taken at once, then cut into frames of about
/// [`FRAME_SPLIT_BYTES`] ([`frame_end`]: accounted bytes; a larger message gets a frame of
/// its own), each written as soon as it is encoded and its bytes released to
/// the senders at once. So the peer validates one frame while the next is
/// being encoded and copied, the frames stay in cache from encoding to the
/// kernel's copy, and the queue refills while the rest is written. Frames are
/// encoded in place from the queue ([`RaftBatchRef`]) and payloads of 64 KiB
/// or more go to the kernel from where they are ([`ScatterEncoder`],
/// `writev`).
async fn write_loop(shared: &Shared, mut stream: TcpStream, encoder: &mut ScatterEncoder) -> NetError {
    let mut taken = Vec::new();
    loop {
        let has_messages = poll_fn(|cx| {
            if shared.closed() {
                return Poll::Ready(false);
            }
            let mut queue = shared.queue.borrow_mut();
            if queue.messages.is_empty() {
                queue.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            std::mem::swap(&mut queue.messages, &mut taken);
            queue.writer_runnable = false;
            queue.in_flight_bytes = queue.queued_bytes;
            queue.queued_bytes = 0;
            Poll::Ready(true)
        })
        .await;
        if !has_messages {
            return NetError::Closed;
        }
        let mut start = 0;
        while start < taken.len() {
            let (end, frame_accounted) = frame_end(&taken, start);
            let batch = RaftBatchRef {
                messages: &taken[start..end],
            };
            let messages = (end - start) as u64;
            start = end;
            let frame = match encoder.encode(&batch) {
                Ok(frame) => frame,
                Err(error) => {
                    // Cannot happen within the queue bound; drop rather than wedge.
                    shared.release_in_flight(frame_accounted);
                    shared.update_stats(|stats| stats.messages_dropped += messages);
                    log::error!("dropping {messages} messages that failed to encode: {error}");
                    continue;
                }
            };
            let bytes = frame.len() as u64;
            let mut slices: Vec<IoSlice<'_>> = frame.slices().map(IoSlice::new).collect();
            let written = write_all_vectored(&mut stream, &mut slices).await;
            drop(slices);
            shared.release_in_flight(frame_accounted);
            if let Err(error) = written {
                let lost = messages + (taken.len() - start) as u64;
                taken.clear();
                shared.release_in_flight(usize::MAX);
                shared.update_stats(|stats| stats.messages_dropped += lost);
                return NetError::Io {
                    context: "send frame",
                    source: error,
                };
            }
            shared.update_stats(|stats| {
                stats.frames_sent += 1;
                stats.messages_sent += messages;
                stats.bytes_sent += bytes;
            });
        }
        taken.clear();
        debug_assert_eq!(shared.queue.borrow().in_flight_bytes, 0);
        encoder.shrink_to(ENCODER_RETAIN_QUEUE_MULTIPLE * shared.bytes_max);
        if taken.capacity() > 4096 {
            taken = Vec::new();
        }
    }
}

/// Writes every byte of `slices` with as few `sendmsg` calls as the socket
/// buffer allows; when it is full, waits for room through glommio's own
/// write (which sends the first slice once the socket is writable).
async fn write_all_vectored(stream: &mut TcpStream, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    let fd = stream.as_raw_fd();
    while !slices.is_empty() {
        if slices[0].is_empty() {
            slices = &mut std::mem::take(&mut slices)[1..];
            continue;
        }
        let count = slices.len().min(IOV_MAX);
        // SAFETY: an all-zero msghdr is valid (no name, no control data).
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        // `IoSlice` is ABI-compatible with `iovec` on Unix; the kernel only reads them.
        header.msg_iov = slices.as_ptr() as *mut libc::iovec;
        header.msg_iovlen = count as _;
        // SAFETY: `header` points at `count` live slices for the call's duration.
        let sent = unsafe { libc::sendmsg(fd, &header, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            IoSlice::advance_slices(&mut slices, sent as usize);
            continue;
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock => {
                let sent = stream.write(&slices[0]).await?;
                if sent == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                IoSlice::advance_slices(&mut slices, sent);
            }
            _ => return Err(error),
        }
    }
    Ok(())
}

/// The most slices one `sendmsg` takes (Linux `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{entry_kind, AppendEntries, Entry, RaftBody};

    fn append(payload_bytes: usize) -> Envelope {
        Envelope {
            group: 1,
            from: 1,
            to: 2,
            term: 1,
            body: RaftBody::AppendEntries(AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                leader_commit: 0,
                entries: vec![Entry {
                    term: 1,
                    index: 1,
                    kind: entry_kind::NORMAL,
                    data: vec![0; payload_bytes].into(),
                }],
            }),
        }
    }

    /// (messages, accounted bytes) of each frame the writer cuts `taken` into.
    fn split(taken: &[Envelope]) -> Vec<(usize, usize)> {
        let mut frames = Vec::new();
        let mut start = 0;
        while start < taken.len() {
            let (end, accounted) = frame_end(taken, start);
            frames.push((end - start, accounted));
            start = end;
        }
        frames
    }

    #[test]
    fn small_messages_fill_frames_up_to_the_split_size() {
        let taken: Vec<Envelope> = (0..200).map(|_| append(4096)).collect();
        let message_bytes = taken[0].encoded_bytes_max();
        let per_frame = FRAME_SPLIT_BYTES.div_ceil(message_bytes);
        let frames = split(&taken);
        assert_eq!(frames[0], (per_frame, per_frame * message_bytes));
        assert_eq!(frames.iter().map(|&(count, _)| count).sum::<usize>(), 200);
        assert!(frames.iter().all(|&(_, accounted)| accounted <= FRAME_FILL_MAX_BYTES));
    }

    #[test]
    fn a_frame_of_several_messages_never_outgrows_the_receive_buffer() {
        // One of these is under the split size, two would overflow the buffer.
        let taken: Vec<Envelope> = (0..7).map(|_| append(FRAME_SPLIT_BYTES * 3 / 4)).collect();
        let frames = split(&taken);
        assert_eq!(
            frames.iter().map(|&(count, _)| count).collect::<Vec<_>>(),
            [1, 1, 1, 1, 1, 1, 1]
        );
        let taken: Vec<Envelope> = (0..7).map(|_| append(FRAME_SPLIT_BYTES / 3)).collect();
        let frames = split(&taken);
        assert_eq!(frames.iter().map(|&(count, _)| count).collect::<Vec<_>>(), [3, 3, 1]);
        assert!(frames.iter().all(|&(_, accounted)| accounted <= FRAME_FILL_MAX_BYTES));
    }

    #[test]
    fn a_message_larger_than_the_receive_buffer_gets_a_frame_of_its_own() {
        let taken = vec![append(100), append(READ_BUFFER_BYTES), append(100)];
        assert_eq!(
            split(&taken).iter().map(|&(count, _)| count).collect::<Vec<_>>(),
            [1, 1, 1]
        );
    }
}
