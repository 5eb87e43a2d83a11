//! The receiving side of the codec: untrusted bytes in, validated frames out.
//!
//! A connection's reader receives straight into [`FrameDecoder::read_buf`], an
//! aligned buffer, and [`FrameDecoder::next_frame`] cuts frames out of it. A
//! frame is checked in this order, each step before anything depends on it:
//! header (magic, version, kind, flags, announced length against
//! [`FRAME_BODY_MAX_BYTES`]), then — only once every byte has arrived — the
//! body's CRC32, then the archive's structure (bytecheck). Only then is a
//! [`Frame`] handed out, and its accessors read the archive in place: entry
//! payloads are slices of the receive buffer. Frames share the buffer through
//! an `Arc`; the decoder writes into a buffer only while no frame holds it and
//! otherwise moves on to a fresh one, so a held frame never changes.
//!
//! A peer cannot make the decoder allocate more than
//! `max(READ_BUFFER_BYTES, FRAME_HEADER_BYTES + FRAME_BODY_MAX_BYTES)`: the
//! header is validated before a larger buffer is sized from it.

use std::sync::Arc;

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::admin::{ArchivedAdminRequestFrame, ArchivedAdminResponseFrame};
use crate::error::NetError;
use crate::frame::{padded, FrameHeader, FrameKind, FRAME_ALIGN_BYTES, FRAME_BODY_MAX_BYTES, FRAME_HEADER_BYTES};
use crate::schema::{ArchivedClientRequestBatch, ArchivedClientResponseBatch, ArchivedRaftBatch};

/// Size of a connection's receive buffer; larger frames get a buffer of
/// their own size (bounded by [`FRAME_BODY_MAX_BYTES`]).
pub const READ_BUFFER_BYTES: usize = 256 * 1024;
/// A read is never offered less free space than this (unless the pending
/// frame needs less), so small reads do not multiply syscalls.
pub const READ_FREE_MIN_BYTES: usize = 16 * 1024;
/// A buffer grown for large frames goes back to the standing size after this
/// many frames in a row that fit the standing size (hysteresis: a stream of
/// large frames keeps its buffer instead of reallocating per frame).
pub const SHRINK_AFTER_SMALL_FRAMES: u32 = 64;

type Chunk = AlignedVec<FRAME_ALIGN_BYTES>;

/// A validated frame: its header was sound, its CRC matched and its body is
/// a valid archive of its kind. Cheap to clone; keeps its buffer alive.
#[derive(Clone)]
pub struct Frame {
    chunk: Arc<Chunk>,
    body_start: usize,
    body_bytes: usize,
    kind: FrameKind,
    version: u16,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &self.kind)
            .field("version", &self.version)
            .field("body_bytes", &self.body_bytes)
            .finish()
    }
}

impl Frame {
    /// What the body holds.
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// The sender's wire version from the header.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The body bytes (without header or padding).
    pub fn body(&self) -> &[u8] {
        &self.chunk[self.body_start..self.body_start + self.body_bytes]
    }

    /// Bytes the frame took on the wire, header and padding included.
    pub fn wire_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + padded(self.body_bytes)
    }

    /// The Raft messages of a [`FrameKind::Raft`] frame, read in place.
    pub fn raft(&self) -> Option<&ArchivedRaftBatch> {
        (self.kind == FrameKind::Raft).then(|| {
            // SAFETY: `FrameDecoder::next_frame` validated these exact bytes
            // as an `ArchivedRaftBatch` (`validate_body`), and a chunk shared
            // with a frame is never written again.
            unsafe { rkyv::access_unchecked::<ArchivedRaftBatch>(self.body()) }
        })
    }

    /// The requests of a [`FrameKind::ClientRequests`] frame, read in place.
    pub fn client_requests(&self) -> Option<&ArchivedClientRequestBatch> {
        (self.kind == FrameKind::ClientRequests).then(|| {
            // SAFETY: validated as this type by `validate_body`; see `raft`.
            unsafe { rkyv::access_unchecked::<ArchivedClientRequestBatch>(self.body()) }
        })
    }

    /// The request of a [`FrameKind::AdminRequest`] frame, validated here
    /// (the decoder leaves admin requests to their reader, so that a body
    /// it cannot read is answered, not a reason to close the connection):
    /// `None` for another kind, an error naming what is wrong otherwise.
    pub fn admin_request(&self) -> Option<Result<&ArchivedAdminRequestFrame, NetError>> {
        (self.kind == FrameKind::AdminRequest).then(|| {
            rkyv::access::<ArchivedAdminRequestFrame, rancor::Error>(self.body()).map_err(|error| {
                NetError::InvalidArchive {
                    kind: self.kind,
                    reason: error.to_string(),
                }
            })
        })
    }

    /// The answer of a [`FrameKind::AdminResponse`] frame, read in place.
    pub fn admin_response(&self) -> Option<&ArchivedAdminResponseFrame> {
        (self.kind == FrameKind::AdminResponse).then(|| {
            // SAFETY: validated as this type by `validate_body`; see `raft`.
            unsafe { rkyv::access_unchecked::<ArchivedAdminResponseFrame>(self.body()) }
        })
    }

    /// The responses of a [`FrameKind::ClientResponses`] frame, read in place.
    pub fn client_responses(&self) -> Option<&ArchivedClientResponseBatch> {
        (self.kind == FrameKind::ClientResponses).then(|| {
            // SAFETY: validated as this type by `validate_body`; see `raft`.
            unsafe { rkyv::access_unchecked::<ArchivedClientResponseBatch>(self.body()) }
        })
    }
}

/// Checks that `body` is a valid archive of the type `kind` announces.
/// Handshake bodies are fixed layouts, parsed by [`crate::handshake`];
/// admin requests are checked by [`Frame::admin_request`].
fn validate_body(kind: FrameKind, body: &[u8]) -> Result<(), NetError> {
    let result = match kind {
        FrameKind::Raft => rkyv::access::<ArchivedRaftBatch, rancor::Error>(body).map(|_| ()),
        FrameKind::ClientRequests => rkyv::access::<ArchivedClientRequestBatch, rancor::Error>(body).map(|_| ()),
        FrameKind::ClientResponses => rkyv::access::<ArchivedClientResponseBatch, rancor::Error>(body).map(|_| ()),
        FrameKind::AdminResponse => rkyv::access::<ArchivedAdminResponseFrame, rancor::Error>(body).map(|_| ()),
        // Checked when read (`Frame::admin_request`), so a bad one is answered.
        FrameKind::AdminRequest => Ok(()),
        FrameKind::Hello | FrameKind::HelloReply => Ok(()),
    };
    result.map_err(|error| NetError::InvalidArchive {
        kind,
        reason: error.to_string(),
    })
}

/// Cuts validated frames out of a byte stream (sans I/O).
pub struct FrameDecoder {
    chunk: Arc<Chunk>,
    /// First byte not yet consumed; always a multiple of the frame alignment.
    start: usize,
    /// One past the last byte received.
    end: usize,
    /// Size of the standing receive buffer.
    buffer_bytes: usize,
    /// Frames in a row that fit the standing buffer.
    small_frames_in_a_row: u32,
    /// The largest body accepted now: [`FRAME_BODY_MAX_BYTES`], or less
    /// while a handshake is expected.
    body_max_bytes: usize,
    /// Bytes of the last frame cut out (0 before the first): the guess for
    /// the next one's size while its header is still to come.
    last_frame_bytes: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &self.buffered_bytes())
            .finish()
    }
}

fn zeroed_chunk(bytes: usize) -> Chunk {
    let mut chunk = Chunk::with_capacity(bytes);
    chunk.resize(bytes, 0);
    chunk
}

impl FrameDecoder {
    /// A decoder with an empty receive buffer of [`READ_BUFFER_BYTES`].
    pub fn new() -> FrameDecoder {
        FrameDecoder::with_buffer_bytes(READ_BUFFER_BYTES)
    }

    /// A decoder whose standing receive buffer holds `bytes` (rounded up to
    /// the frame alignment, at least [`READ_FREE_MIN_BYTES`]). Small buffers
    /// suit tools and fuzzing (more buffer changes per input).
    pub fn with_buffer_bytes(bytes: usize) -> FrameDecoder {
        let buffer_bytes = padded(bytes.max(READ_FREE_MIN_BYTES));
        FrameDecoder {
            chunk: Arc::new(zeroed_chunk(buffer_bytes)),
            buffer_bytes,
            small_frames_in_a_row: 0,
            start: 0,
            end: 0,
            body_max_bytes: FRAME_BODY_MAX_BYTES,
            last_frame_bytes: 0,
        }
    }

    /// Lowers (or restores) the largest body accepted, at most
    /// [`FRAME_BODY_MAX_BYTES`]; connections lower it while they expect a
    /// fixed-size handshake frame.
    pub fn set_body_max_bytes(&mut self, bytes: usize) {
        self.body_max_bytes = bytes.min(FRAME_BODY_MAX_BYTES);
    }

    fn parse_header(&self) -> Result<FrameHeader, NetError> {
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        bytes.copy_from_slice(&self.chunk[self.start..self.start + FRAME_HEADER_BYTES]);
        let header = FrameHeader::parse(&bytes)?;
        if header.body_bytes > self.body_max_bytes {
            return Err(NetError::Oversized {
                body_bytes: header.body_bytes,
                max_bytes: self.body_max_bytes,
            });
        }
        Ok(header)
    }

    /// Bytes received and not yet cut into frames.
    pub fn buffered_bytes(&self) -> usize {
        self.end - self.start
    }

    /// Bytes the frame at the front needs in all, once its header is in;
    /// a bad header is reported here, before any buffer is sized from it.
    fn pending_frame_bytes(&self) -> Result<usize, NetError> {
        if self.buffered_bytes() < FRAME_HEADER_BYTES {
            return Ok(FRAME_HEADER_BYTES);
        }
        Ok(self.parse_header()?.frame_bytes())
    }

    /// Free space to receive into; call [`FrameDecoder::advance`] with the
    /// number of bytes written. Never empty.
    pub fn read_buf(&mut self) -> Result<&mut [u8], NetError> {
        let needed = self.pending_frame_bytes()?;
        let buffered = self.buffered_bytes();
        let target = self.buffer_bytes.max(needed);
        // A buffer grown for large frames is given back once small frames
        // are the rule again, so a connection holds only the standing size.
        let oversized = self.chunk.len() > 2 * target
            && buffered <= self.buffer_bytes / 2
            && self.small_frames_in_a_row >= SHRINK_AFTER_SMALL_FRAMES;
        let reusable = !oversized && Arc::get_mut(&mut self.chunk).is_some_and(|chunk| chunk.len() >= target);
        if reusable {
            let chunk_bytes = self.chunk.len();
            let free = chunk_bytes - self.end;
            let pending_fits = self.start + needed <= chunk_bytes;
            let free_min = READ_FREE_MIN_BYTES.min(needed.saturating_sub(buffered)).max(1);
            if free < free_min || !pending_fits {
                let chunk = Arc::get_mut(&mut self.chunk).expect("checked unique above");
                chunk.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = buffered;
            }
        }
        if !(reusable && self.end < self.chunk.len()) {
            self.replace_chunk(target, buffered);
        }
        let end = self.end;
        let limit = self.read_limit(needed);
        let chunk = Arc::get_mut(&mut self.chunk).expect("chunk is unique here");
        Ok(&mut chunk[end..limit])
    }

    /// Where a read into the buffer should stop. Normally its end; but when
    /// the frame being received would leave less room behind it than it
    /// takes itself, the read stops at that frame's end. Otherwise the read
    /// would run into the next frame, which would not fit and would have to
    /// be moved to the front of the buffer (a copy of up to a whole frame
    /// per buffer's worth); stopping there instead lets the buffer start
    /// over empty once the frame is consumed. Before a frame's header is in,
    /// the previous frame's size stands in for it (streams repeat sizes); a
    /// wrong guess costs a shorter read, never a copy or a wrong frame.
    fn read_limit(&self, needed: usize) -> usize {
        let chunk_bytes = self.chunk.len();
        let frame_bytes = if self.buffered_bytes() >= FRAME_HEADER_BYTES {
            needed
        } else {
            self.last_frame_bytes
        };
        let frame_end = self.start + frame_bytes;
        let room_behind = chunk_bytes.saturating_sub(frame_end);
        if frame_end > self.end && frame_end <= chunk_bytes && room_behind < frame_bytes.max(READ_FREE_MIN_BYTES) {
            frame_end
        } else {
            chunk_bytes
        }
    }

    /// Moves the unconsumed bytes to a fresh buffer with room to spare (the
    /// old one is held by frames, too small, or full of unconsumed frames).
    fn replace_chunk(&mut self, target: usize, buffered: usize) {
        let mut fresh = zeroed_chunk(target.max(padded(buffered + READ_FREE_MIN_BYTES)));
        fresh[..buffered].copy_from_slice(&self.chunk[self.start..self.end]);
        self.chunk = Arc::new(fresh);
        self.start = 0;
        self.end = buffered;
    }

    /// Records that `bytes` were written at the front of [`FrameDecoder::read_buf`].
    pub fn advance(&mut self, bytes: usize) {
        assert!(self.end + bytes <= self.chunk.len(), "advance past the read buffer");
        self.end += bytes;
    }

    /// Copies `bytes` in (for byte-slice sources: tests, fuzzing, tools).
    /// Stops early and returns the first error a bad header causes.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), NetError> {
        while !bytes.is_empty() {
            let buf = self.read_buf()?;
            let n = buf.len().min(bytes.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            self.advance(n);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// The next complete, validated frame, `None` if more bytes are needed.
    /// After an error the stream is unusable: close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, NetError> {
        let buffered = self.buffered_bytes();
        if buffered < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let header = self.parse_header()?;
        debug_assert!(header.body_bytes <= FRAME_BODY_MAX_BYTES);
        let frame_bytes = header.frame_bytes();
        if buffered < frame_bytes {
            return Ok(None);
        }
        let body_start = self.start + FRAME_HEADER_BYTES;
        let body = &self.chunk[body_start..body_start + header.body_bytes];
        let computed = crc32fast::hash(body);
        if computed != header.body_crc {
            return Err(NetError::BadChecksum {
                expected: header.body_crc,
                computed,
            });
        }
        validate_body(header.kind, body)?;
        let frame = Frame {
            chunk: Arc::clone(&self.chunk),
            body_start,
            body_bytes: header.body_bytes,
            kind: header.kind,
            version: header.version,
        };
        self.start += frame_bytes;
        self.last_frame_bytes = frame_bytes;
        self.small_frames_in_a_row = if frame_bytes <= self.buffer_bytes {
            self.small_frames_in_a_row.saturating_add(1)
        } else {
            0
        };
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(frame))
    }

    /// Called at end of stream: an error if a frame was cut short.
    pub fn finish(&self) -> Result<(), NetError> {
        let buffered = self.buffered_bytes();
        if buffered == 0 {
            return Ok(());
        }
        let needed = self.pending_frame_bytes()?;
        Err(NetError::Truncated { buffered, needed })
    }
}

/// Decodes a complete byte string into frames: every frame must be whole and
/// valid. What the fuzz target and the corpus test exercise.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, NetError> {
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut rest = bytes;
    loop {
        while let Some(frame) = decoder.next_frame()? {
            frames.push(frame);
        }
        if rest.is_empty() {
            break;
        }
        let buf = decoder.read_buf()?;
        let n = buf.len().min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        decoder.advance(n);
        rest = &rest[n..];
    }
    decoder.finish()?;
    Ok(frames)
}
