//! Frames: the unit a connection carries.
//!
//! A frame is a fixed 16-byte header (magic, wire version, kind, flags, body
//! length, CRC32 of the body), the body, and zero padding up to the next
//! multiple of [`FRAME_ALIGN_BYTES`], so that every body starts aligned inside
//! a receive buffer and can be accessed in place. Sending side of the codec:
//! [`FrameEncoder`] appends many frames to one buffer so a writer hands them
//! to the kernel in one call. The receiving side is [`crate::decoder`].
//! The byte layout is documented in `docs/wire.md`.

use rkyv::api::high::HighSerializer;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::Serialize;

use crate::admin::{AdminRequestFrame, AdminResponseFrame};
use crate::checksum;
use crate::error::NetError;
use crate::schema::{ClientRequestBatch, ClientResponseBatch, Envelope, RaftBatch, RaftBatchRef, RaftBody};

/// The first four bytes of every frame: `CRFT` read as a little-endian u32.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"CRFT");
/// The wire version this build speaks: the frame layout and the schema.
pub const WIRE_VERSION: u16 = 4;
/// Bytes of the fixed frame header.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Frames (header and body) start at multiples of this inside buffers.
pub const FRAME_ALIGN_BYTES: usize = 16;
/// The largest body a frame may carry; a larger announced length closes the
/// connection before anything is allocated for it.
pub const FRAME_BODY_MAX_BYTES: usize = 16 * 1024 * 1024;

/// What a frame's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// The connecting side's handshake ([`crate::handshake::Hello`]).
    Hello = 1,
    /// The accepting side's answer ([`crate::handshake::HelloReply`]).
    HelloReply = 2,
    /// A [`RaftBatch`] archive.
    Raft = 3,
    /// A [`ClientRequestBatch`] archive.
    ClientRequests = 4,
    /// A [`ClientResponseBatch`] archive.
    ClientResponses = 5,
    /// An [`AdminRequestFrame`] archive (on a client connection). The
    /// header is not covered by the CRC, so the admin kinds differ from
    /// every other kind (and from each other) in at least two bits: one
    /// flipped bit cannot turn a client frame into an admin request whose
    /// archive, checked only when the node reads it, might still validate.
    AdminRequest = 24,
    /// An [`AdminResponseFrame`] archive.
    AdminResponse = 27,
}

impl FrameKind {
    /// The kind for a header byte, if it names one.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Hello),
            2 => Some(FrameKind::HelloReply),
            3 => Some(FrameKind::Raft),
            4 => Some(FrameKind::ClientRequests),
            5 => Some(FrameKind::ClientResponses),
            24 => Some(FrameKind::AdminRequest),
            27 => Some(FrameKind::AdminResponse),
            _ => None,
        }
    }
}

/// A parsed frame header; only [`FrameHeader::parse`] builds one from bytes,
/// and it has checked every field but the CRC (which needs the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The wire version of the sender.
    pub version: u16,
    /// The body's kind.
    pub kind: FrameKind,
    /// The body's length in bytes, at most [`FRAME_BODY_MAX_BYTES`].
    pub body_bytes: usize,
    /// CRC32 (IEEE) of the body.
    pub body_crc: u32,
}

impl FrameHeader {
    /// Parses and validates a header. The version is checked against
    /// [`WIRE_VERSION`] except for handshake frames, which must stay readable
    /// across versions so that a mismatch can be refused with a reason.
    pub fn parse(bytes: &[u8; FRAME_HEADER_BYTES]) -> Result<FrameHeader, NetError> {
        let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if magic != FRAME_MAGIC {
            return Err(NetError::BadMagic { found: magic });
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        let kind = FrameKind::from_byte(bytes[6]).ok_or(NetError::UnknownKind { kind: bytes[6] })?;
        if bytes[7] != 0 {
            return Err(NetError::BadFlags { flags: bytes[7] });
        }
        let handshake = matches!(kind, FrameKind::Hello | FrameKind::HelloReply);
        if version != WIRE_VERSION && !handshake {
            return Err(NetError::UnsupportedVersion {
                found: version,
                supported: WIRE_VERSION,
            });
        }
        let body_bytes = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        if body_bytes > FRAME_BODY_MAX_BYTES {
            return Err(NetError::Oversized {
                body_bytes,
                max_bytes: FRAME_BODY_MAX_BYTES,
            });
        }
        let body_crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        Ok(FrameHeader {
            version,
            kind,
            body_bytes,
            body_crc,
        })
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        bytes[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        bytes[4..6].copy_from_slice(&self.version.to_le_bytes());
        bytes[6] = self.kind as u8;
        bytes[7] = 0;
        bytes[8..12].copy_from_slice(&(self.body_bytes as u32).to_le_bytes());
        bytes[12..16].copy_from_slice(&self.body_crc.to_le_bytes());
        bytes
    }

    /// Bytes the whole frame occupies on the wire: header, body, padding.
    pub fn frame_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + padded(self.body_bytes)
    }
}

/// `len` rounded up to a multiple of [`FRAME_ALIGN_BYTES`].
pub const fn padded(len: usize) -> usize {
    len.div_ceil(FRAME_ALIGN_BYTES) * FRAME_ALIGN_BYTES
}

/// The serializer rkyv runs when a body is appended to a [`FrameEncoder`].
pub type BodySerializer<'a, 'b> = HighSerializer<&'b mut AlignedVec<FRAME_ALIGN_BYTES>, ArenaHandle<'a>, rancor::Error>;

/// A schema type that is the whole body of one frame kind.
pub trait FrameBody:
    for<'a, 'b> Serialize<BodySerializer<'a, 'b>> + for<'a, 'b> Serialize<ScatterSerializer<'a, 'b>>
{
    /// The kind of frame that carries it.
    const KIND: FrameKind;

    /// Calls `each` with every opaque payload (entry data, snapshot chunk)
    /// of the body, which a [`ScatterEncoder`] may send in place.
    fn payloads<'s>(&'s self, each: &mut dyn FnMut(&'s [u8])) {
        let _ = each;
    }
}

impl FrameBody for RaftBatch {
    const KIND: FrameKind = FrameKind::Raft;

    fn payloads<'s>(&'s self, each: &mut dyn FnMut(&'s [u8])) {
        raft_payloads(&self.messages, each);
    }
}

impl FrameBody for RaftBatchRef<'_> {
    const KIND: FrameKind = FrameKind::Raft;

    fn payloads<'s>(&'s self, each: &mut dyn FnMut(&'s [u8])) {
        raft_payloads(self.messages, each);
    }
}

fn raft_payloads<'s>(messages: &'s [Envelope], each: &mut dyn FnMut(&'s [u8])) {
    for message in messages {
        match &message.body {
            RaftBody::AppendEntries(append) => append.entries.iter().for_each(|entry| each(&entry.data)),
            RaftBody::InstallSnapshot(chunk) => each(&chunk.data),
            RaftBody::SnapshotChunk(chunk) => each(&chunk.data),
            _ => {}
        }
    }
}
impl FrameBody for ClientRequestBatch {
    const KIND: FrameKind = FrameKind::ClientRequests;
}
impl FrameBody for ClientResponseBatch {
    const KIND: FrameKind = FrameKind::ClientResponses;
}
impl FrameBody for AdminRequestFrame {
    const KIND: FrameKind = FrameKind::AdminRequest;
}
impl FrameBody for AdminResponseFrame {
    const KIND: FrameKind = FrameKind::AdminResponse;
}

/// Appends frames to one aligned buffer, ready to be written in one call.
#[derive(Debug, Default)]
pub struct FrameEncoder {
    buffer: AlignedVec<FRAME_ALIGN_BYTES>,
}

impl FrameEncoder {
    /// An empty encoder.
    pub fn new() -> FrameEncoder {
        FrameEncoder::default()
    }

    /// Appends one frame whose body is the archive of `body`.
    ///
    /// On error nothing is appended. A body over [`FRAME_BODY_MAX_BYTES`] is
    /// refused here, so a sender never emits a frame its peer must reject.
    pub fn encode<B: FrameBody>(&mut self, body: &B) -> Result<(), NetError> {
        let start = self.buffer.len();
        debug_assert_eq!(start % FRAME_ALIGN_BYTES, 0);
        self.buffer.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
        let result = rkyv::api::high::to_bytes_in::<_, rancor::Error>(body, &mut self.buffer);
        if let Err(error) = result {
            self.buffer.resize(start, 0);
            return Err(NetError::Encode {
                kind: B::KIND,
                reason: error.to_string(),
            });
        }
        self.finish_frame(start, B::KIND, WIRE_VERSION)
    }

    /// Appends one frame with a raw body (handshake frames, tests).
    pub fn encode_raw(&mut self, kind: FrameKind, version: u16, body: &[u8]) -> Result<(), NetError> {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
        self.buffer.extend_from_slice(body);
        self.finish_frame(start, kind, version)
    }

    fn finish_frame(&mut self, start: usize, kind: FrameKind, version: u16) -> Result<(), NetError> {
        let body_start = start + FRAME_HEADER_BYTES;
        let body_bytes = self.buffer.len() - body_start;
        if body_bytes > FRAME_BODY_MAX_BYTES {
            self.buffer.resize(start, 0);
            return Err(NetError::Oversized {
                body_bytes,
                max_bytes: FRAME_BODY_MAX_BYTES,
            });
        }
        let header = FrameHeader {
            version,
            kind,
            body_bytes,
            body_crc: crc32fast::hash(&self.buffer[body_start..]),
        };
        self.buffer[start..body_start].copy_from_slice(&header.to_bytes());
        let padding = padded(body_bytes) - body_bytes;
        self.buffer.extend_from_slice(&[0u8; FRAME_ALIGN_BYTES][..padding]);
        Ok(())
    }

    /// The encoded frames, back to back.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// Bytes encoded and not yet cleared.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// True when nothing is encoded.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Forgets the encoded frames, keeping the buffer's capacity.
    pub fn clear(&mut self) {
        self.buffer.clear();
    }

    /// Makes room for `bytes` more without reallocating while encoding.
    pub fn reserve(&mut self, bytes: usize) {
        self.buffer.reserve(bytes);
    }

    /// Drops the buffer's memory once it has grown past `bytes_max` (after a
    /// burst), so an idle connection does not pin a large buffer.
    pub fn shrink_to(&mut self, bytes_max: usize) {
        if self.buffer.capacity() > bytes_max && self.buffer.is_empty() {
            self.buffer = AlignedVec::new();
        }
    }
}

/// Writes of at least this many bytes that are payloads of the body being
/// encoded are not copied by a [`ScatterEncoder`]: the frame points at them
/// and `sendmsg` gathers them. Smaller payloads are copied into the frame by
/// the pass that computes the CRC ([`COPY_WITH_CRC_MIN_BYTES`]): with 4 KiB
/// entries that costs the sender ~3 ns per 1000 bytes more than the CRC
/// alone and saves the kernel ~20 % of its copy, which is slower per byte
/// gathering a slice per payload than copying one contiguous frame
/// (docs/journal/benchmarks.md, "## Net", session 4). Large payloads (snapshot
/// chunks, big entries) stay in place, so a frame's buffer stays about the
/// frame split size.
pub const SCATTER_MIN_BYTES: usize = 64 * 1024;

/// Writes of at least this many bytes are copied and checksummed in one pass
/// (`checksum.rs`); shorter ones are copied plainly and checksummed
/// with the bytes around them.
pub const COPY_WITH_CRC_MIN_BYTES: usize = 1024;

/// The serializer rkyv runs when a body is encoded by a [`ScatterEncoder`].
pub type ScatterSerializer<'a, 'b> = HighSerializer<&'b mut ScatterWriter, ArenaHandle<'a>, rancor::Error>;

/// A piece of an encoded frame, in wire order.
#[derive(Debug, Clone, Copy)]
enum Segment {
    /// `buffer[start..end]` of the encoder.
    Inline { start: usize, end: usize },
    /// A payload of the body, left in place (address and length).
    Payload { address: usize, len: usize },
}

/// The rkyv writer of a [`ScatterEncoder`]: copies small writes into its
/// buffer and records large writes of registered payloads as references,
/// computing the body's CRC32 as the bytes go by (rkyv writes a body front
/// to back, never going back to patch it).
#[derive(Debug, Default)]
pub struct ScatterWriter {
    buffer: AlignedVec<FRAME_ALIGN_BYTES>,
    segments: Vec<Segment>,
    /// CRC32 of the body up to `crc_end` and the payloads sent in place.
    crc: u32,
    /// Where the bytes of `buffer` not yet in `crc` start.
    crc_end: usize,
    /// Where the open inline segment starts in `buffer`.
    inline_start: usize,
    /// Bytes of the frame so far (inline and payload).
    pos: usize,
    /// Payloads of the body being encoded, (address, len), in the order
    /// [`FrameBody::payloads`] lists them.
    payloads: Vec<(usize, usize)>,
    /// The payload rkyv is expected to write next.
    next_payload: usize,
}

impl ScatterWriter {
    /// Whether `bytes` lie inside the next registered payload (and if so,
    /// moves on to the one after). rkyv writes every payload whole, once, in
    /// the order the body lists them, so one comparison per large write
    /// suffices (no sorted list to search); a write out of that order is
    /// copied like any other, which changes no byte of the frame.
    fn take_payload(&mut self, bytes: &[u8]) -> bool {
        let Some(&(start, len)) = self.payloads.get(self.next_payload) else {
            return false;
        };
        let address = bytes.as_ptr() as usize;
        let inside = address >= start && address + bytes.len() <= start + len;
        self.next_payload += usize::from(inside);
        inside
    }

    fn close_inline(&mut self) {
        if self.buffer.len() > self.inline_start {
            self.segments.push(Segment::Inline {
                start: self.inline_start,
                end: self.buffer.len(),
            });
            self.inline_start = self.buffer.len();
        }
    }

    /// Brings `crc` up to the end of `buffer`.
    fn checksum_buffered(&mut self) {
        self.crc = checksum::crc32_update(self.crc, &self.buffer[self.crc_end..]);
        self.crc_end = self.buffer.len();
    }

    fn clear(&mut self) {
        self.buffer.clear();
        self.segments.clear();
        self.crc = 0;
        self.crc_end = 0;
        self.payloads.clear();
        self.next_payload = 0;
        self.inline_start = 0;
        self.pos = 0;
    }
}

impl rkyv::ser::Positional for ScatterWriter {
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E> rkyv::ser::Writer<E> for ScatterWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        if bytes.len() >= SCATTER_MIN_BYTES && self.take_payload(bytes) {
            self.checksum_buffered();
            self.crc = checksum::crc32_update(self.crc, bytes);
            self.close_inline();
            self.segments.push(Segment::Payload {
                address: bytes.as_ptr() as usize,
                len: bytes.len(),
            });
        } else if bytes.len() >= COPY_WITH_CRC_MIN_BYTES {
            (self.crc, self.crc_end) = checksum::append_with_crc(&mut self.buffer, self.crc_end, bytes, self.crc);
        } else {
            append(&mut self.buffer, bytes);
        }
        self.pos += bytes.len();
        Ok(())
    }
}

/// Appends `bytes` to `buffer`. rkyv writes an archive as many small pieces
/// (a field block, a few bytes of padding, a short payload); a `memcpy` call
/// per piece of unknown length was a fifth of a 64-byte message's encoding,
/// so pieces up to 32 bytes are copied with two overlapping fixed-size moves,
/// and pieces up to 128 bytes (an archived `Envelope` is 104) with two or
/// four 32-byte ones.
#[inline]
fn append(buffer: &mut AlignedVec<FRAME_ALIGN_BYTES>, bytes: &[u8]) {
    let len = bytes.len();
    if len > 128 {
        buffer.extend_from_slice(bytes);
        return;
    }
    if len > 32 {
        buffer.reserve(len);
        let old_len = buffer.len();
        let src = bytes.as_ptr();
        // SAFETY: as below: `reserve` made room for `len` (33..=128) more
        // bytes; the 32-byte moves read inside `bytes` and write inside that
        // room (pairs overlap each other when `len` is not 64 or 128).
        unsafe {
            let dst = buffer.as_mut_ptr().add(old_len);
            let move_32 = |at: usize| {
                let chunk = std::ptr::read_unaligned(src.add(at).cast::<[u8; 32]>());
                std::ptr::write_unaligned(dst.add(at).cast::<[u8; 32]>(), chunk);
            };
            move_32(0);
            move_32(len - 32);
            if len > 64 {
                move_32(32);
                move_32(len - 64);
            }
            buffer.set_len(old_len + len);
        }
        return;
    }
    buffer.reserve(len);
    let old_len = buffer.len();
    let src = bytes.as_ptr();
    // SAFETY: `reserve` made room for `len` more bytes after `old_len`; every
    // read below is inside `bytes` and every write inside that room (the two
    // moves of a pair overlap each other, never leave the range); `set_len`
    // then covers exactly the bytes written.
    unsafe {
        let dst = buffer.as_mut_ptr().add(old_len);
        if len >= 16 {
            let head = std::ptr::read_unaligned(src.cast::<[u8; 16]>());
            let tail = std::ptr::read_unaligned(src.add(len - 16).cast::<[u8; 16]>());
            std::ptr::write_unaligned(dst.cast::<[u8; 16]>(), head);
            std::ptr::write_unaligned(dst.add(len - 16).cast::<[u8; 16]>(), tail);
        } else if len >= 8 {
            let head = std::ptr::read_unaligned(src.cast::<u64>());
            let tail = std::ptr::read_unaligned(src.add(len - 8).cast::<u64>());
            std::ptr::write_unaligned(dst.cast::<u64>(), head);
            std::ptr::write_unaligned(dst.add(len - 8).cast::<u64>(), tail);
        } else if len >= 4 {
            let head = std::ptr::read_unaligned(src.cast::<u32>());
            let tail = std::ptr::read_unaligned(src.add(len - 4).cast::<u32>());
            std::ptr::write_unaligned(dst.cast::<u32>(), head);
            std::ptr::write_unaligned(dst.add(len - 4).cast::<u32>(), tail);
        } else if len >= 2 {
            let head = std::ptr::read_unaligned(src.cast::<u16>());
            let tail = std::ptr::read_unaligned(src.add(len - 2).cast::<u16>());
            std::ptr::write_unaligned(dst.cast::<u16>(), head);
            std::ptr::write_unaligned(dst.add(len - 2).cast::<u16>(), tail);
        } else if len == 1 {
            *dst = *src;
        }
        buffer.set_len(old_len + len);
    }
}

/// Encodes one frame at a time without copying large payloads: the frame is
/// a list of slices (header and archive pieces from its own buffer, payloads
/// in place in the body) to hand to `writev`. The bytes on the wire are
/// exactly those [`FrameEncoder`] produces for the same body.
#[derive(Debug, Default)]
pub struct ScatterEncoder {
    writer: ScatterWriter,
}

/// A frame encoded by [`ScatterEncoder::encode`]: borrows the body whose
/// payloads it points at, so the body cannot change while the frame lives.
#[derive(Debug)]
pub struct ScatteredFrame<'a> {
    writer: &'a ScatterWriter,
}

impl ScatteredFrame<'_> {
    /// The frame's bytes, in order, as slices.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let buffer = &self.writer.buffer;
        self.writer.segments.iter().map(move |segment| match *segment {
            Segment::Inline { start, end } => &buffer[start..end],
            // SAFETY: the address and length are those of a slice that
            // `ScatterWriter::take_payload` found inside a payload of the body
            // that `ScatterEncoder::encode` borrows for `'a`, the lifetime of
            // this frame: the payload is alive and unchanged.
            Segment::Payload { address, len } => unsafe { std::slice::from_raw_parts(address as *const u8, len) },
        })
    }

    /// Bytes of the whole frame: header, body and padding.
    pub fn len(&self) -> usize {
        self.writer.pos
    }

    /// Never true: a frame has at least its header.
    pub fn is_empty(&self) -> bool {
        self.writer.pos == 0
    }

    /// Bytes copied into the encoder's own buffer (the rest is payloads).
    pub fn copied_bytes(&self) -> usize {
        self.writer.buffer.len()
    }
}

impl ScatterEncoder {
    /// An empty encoder.
    pub fn new() -> ScatterEncoder {
        ScatterEncoder::default()
    }

    /// Encodes one frame whose body is the archive of `body`, leaving its
    /// payloads of [`SCATTER_MIN_BYTES`] or more in place. A body over
    /// [`FRAME_BODY_MAX_BYTES`] is refused.
    pub fn encode<'a, B: FrameBody>(&'a mut self, body: &'a B) -> Result<ScatteredFrame<'a>, NetError> {
        let writer = &mut self.writer;
        writer.clear();
        body.payloads(&mut |payload: &[u8]| {
            if payload.len() >= SCATTER_MIN_BYTES {
                writer.payloads.push((payload.as_ptr() as usize, payload.len()));
            }
        });
        writer.buffer.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
        writer.pos = FRAME_HEADER_BYTES;
        writer.crc_end = FRAME_HEADER_BYTES;
        let result = rkyv::api::high::to_bytes_in::<_, rancor::Error>(body, &mut *writer);
        if let Err(error) = result {
            writer.clear();
            return Err(NetError::Encode {
                kind: B::KIND,
                reason: error.to_string(),
            });
        }
        let body_bytes = writer.pos - FRAME_HEADER_BYTES;
        if body_bytes > FRAME_BODY_MAX_BYTES {
            writer.clear();
            return Err(NetError::Oversized {
                body_bytes,
                max_bytes: FRAME_BODY_MAX_BYTES,
            });
        }
        writer.checksum_buffered();
        let header = FrameHeader {
            version: WIRE_VERSION,
            kind: B::KIND,
            body_bytes,
            body_crc: writer.crc,
        };
        writer.buffer[..FRAME_HEADER_BYTES].copy_from_slice(&header.to_bytes());
        let padding = padded(body_bytes) - body_bytes;
        writer.buffer.extend_from_slice(&[0u8; FRAME_ALIGN_BYTES][..padding]);
        writer.pos += padding;
        writer.close_inline();
        Ok(ScatteredFrame { writer: &self.writer })
    }

    /// Drops the buffers once they have grown past `bytes_max`.
    pub fn shrink_to(&mut self, bytes_max: usize) {
        if self.writer.buffer.capacity() > bytes_max {
            self.writer = ScatterWriter::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flipped_bit_never_turns_a_kind_into_an_admin_kind() {
        let kinds = [
            1u8,
            2,
            3,
            4,
            5,
            FrameKind::AdminRequest as u8,
            FrameKind::AdminResponse as u8,
        ];
        for admin in [FrameKind::AdminRequest as u8, FrameKind::AdminResponse as u8] {
            for &other in kinds.iter().filter(|&&k| k != admin) {
                assert!(
                    (admin ^ other).count_ones() >= 2,
                    "kinds {admin} and {other} differ in one bit"
                );
            }
        }
    }
}
