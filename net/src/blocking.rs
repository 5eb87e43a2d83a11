//! A small blocking client over `std::net`, for tools, examples and tests.
//!
//! It speaks the same handshake and frames as the glommio connections but
//! runs on any thread: connect, send batches, receive validated frames.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::config::DEAD_PEER_TIMEOUT;
use crate::decoder::{Frame, FrameDecoder};
use crate::error::NetError;
use crate::frame::{FrameBody, FrameEncoder, FrameKind, FRAME_BODY_MAX_BYTES, WIRE_VERSION};
use crate::handshake::{Hello, HelloReply, LocalIdentity, HELLO_REPLY_BYTES};
use crate::socket::tune_stream;

/// A blocking connection that passed the handshake.
#[derive(Debug)]
pub struct BlockingConnection {
    stream: TcpStream,
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    remote: LocalIdentity,
}

impl BlockingConnection {
    /// Connects to `address`, sends `hello` and waits for the reply, all
    /// within `timeout`. A refusal comes back as [`NetError::Refused`].
    pub fn connect(address: SocketAddr, hello: &Hello, timeout: Duration) -> Result<BlockingConnection, NetError> {
        let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(NetError::io("connect"))?;
        tune_stream(stream.as_raw_fd(), DEAD_PEER_TIMEOUT).map_err(NetError::io("tune socket"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(NetError::io("set read timeout"))?;
        let mut encoder = FrameEncoder::new();
        encoder.encode_raw(FrameKind::Hello, WIRE_VERSION, &hello.to_bytes())?;
        stream
            .write_all(encoder.as_bytes())
            .map_err(NetError::io("send hello"))?;
        encoder.clear();
        let mut decoder = FrameDecoder::new();
        decoder.set_body_max_bytes(HELLO_REPLY_BYTES);
        let frame = read_frame(&mut stream, &mut decoder)?.ok_or(NetError::BadHandshake {
            reason: "connection closed before the hello reply",
        })?;
        if frame.kind() != FrameKind::HelloReply {
            return Err(NetError::UnexpectedFrame {
                kind: frame.kind(),
                context: "expected a hello reply",
            });
        }
        let reply = HelloReply::parse(frame.body(), frame.version())?;
        if let Some(refusal) = reply.refusal {
            return Err(NetError::Refused { refusal });
        }
        stream
            .set_read_timeout(None)
            .map_err(NetError::io("clear read timeout"))?;
        decoder.set_body_max_bytes(FRAME_BODY_MAX_BYTES);
        Ok(BlockingConnection {
            stream,
            decoder,
            encoder,
            remote: reply.identity,
        })
    }

    /// The accepting side's identity, from its reply.
    pub fn remote(&self) -> LocalIdentity {
        self.remote
    }

    /// Encodes `body` as one frame and writes it.
    pub fn send<B: FrameBody>(&mut self, body: &B) -> Result<(), NetError> {
        self.encoder.clear();
        self.encoder.encode(body)?;
        self.stream
            .write_all(self.encoder.as_bytes())
            .map_err(NetError::io("send frame"))
    }

    /// Writes bytes as they are (pre-encoded frames; tests of bad input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), NetError> {
        self.stream.write_all(bytes).map_err(NetError::io("send bytes"))
    }

    /// The next validated frame; `None` when the other side closed.
    pub fn recv(&mut self) -> Result<Option<Frame>, NetError> {
        read_frame(&mut self.stream, &mut self.decoder)
    }

    /// Bounds how long [`BlockingConnection::recv`] waits (`None`: forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), NetError> {
        self.stream
            .set_read_timeout(timeout)
            .map_err(NetError::io("set read timeout"))
    }

    /// The underlying socket (for shutdown or options).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

fn read_frame(stream: &mut TcpStream, decoder: &mut FrameDecoder) -> Result<Option<Frame>, NetError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(Some(frame));
        }
        let buf = decoder.read_buf()?;
        let received = match stream.read(buf) {
            Ok(received) => received,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(NetError::io("receive")(error)),
        };
        if received == 0 {
            decoder.finish()?;
            return Ok(None);
        }
        decoder.advance(received);
    }
}
