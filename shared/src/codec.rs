//! The only module that knows how messages become bytes.
//!
//! bincode 2.0.1 is pinned (3.0 is a tombstone that does not compile, and RUSTSEC-2025-0141 marks
//! every version unmaintained), used through its serde path with fixed-width little-endian
//! integers and a size limit equal to the frame cap, so no length field inside a frame can make
//! the decoder allocate more than the frame holds. bincode's native `Decode` without a limit is
//! never used: it aborts the process on a short input that claims 2^40 items (bincode#764).
//! Swapping bincode for postcard or wincode touches this file only.
//!
//! A frame is a 4-byte little-endian body length followed by the body, exactly what
//! [`frame_decoder`] (tokio-util's `LengthDelimitedCodec`) reads. Writers append whole frames to
//! a reused buffer with [`write_frame`]; the bulk result of a chunk has a fast path
//! ([`write_done_frame`], [`decode_from_worker`]) that copies the payload once on each side,
//! and is tested to agree byte for byte with the generic path.

use crate::message::FromWorker;
use crate::owning::Owning;
use bincode::config::{self, Configuration, Fixint, LittleEndian};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

/// The largest frame body either side accepts: 16 MiB. A chunk's output is bounded below it by
/// [`crate::Format::max_chunk_items`]; anything larger is a broken or hostile peer.
pub const MAX_FRAME: usize = 16 << 20;

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX: usize = 4;

type Config = Configuration<LittleEndian, Fixint, config::Limit<MAX_FRAME>>;

const CONFIG: Config =
    config::standard().with_little_endian().with_fixed_int_encoding().with_limit::<MAX_FRAME>();

/// Variant index of [`FromWorker::Done`] in the encoding (bincode numbers variants from 0).
const DONE_TAG: u32 = 3;
/// Tag, chunk, items, payload length.
const DONE_HEADER: usize = 4 + 8 + 8 + 8;

/// Why bytes could not become a message, or a message bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("malformed frame: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("frame has {0} trailing bytes after the message")]
    Trailing(usize),
    #[error("cannot encode message: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("message of {0} bytes exceeds the frame limit of {MAX_FRAME} bytes")]
    TooLarge(usize),
    #[error("malformed result records: {0}")]
    Records(&'static str),
}

/// The frame reader both sides use: length-delimited, little-endian `u32` lengths, capped at
/// [`MAX_FRAME`]. A longer length prefix is an error before any allocation.
pub fn frame_decoder() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .little_endian()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Appends one whole frame (length prefix and encoded `msg`) to `dst`.
pub fn write_frame<M: Serialize>(msg: &M, dst: &mut BytesMut) -> Result<(), CodecError> {
    let start = dst.len();
    dst.put_u32_le(0);
    let mut writer = dst.writer();
    bincode::serde::encode_into_std_write(msg, &mut writer, CONFIG)?;
    let dst = writer.into_inner();
    patch_length(dst, start)
}

/// How many bytes precede the payload in a `Done` frame: a worker leaves this much room at the
/// front of its output buffer, writes the payload after it, and then fills it in with
/// [`finish_done_frame`], so the payload is never copied into a frame.
pub const DONE_PREFIX: usize = LENGTH_PREFIX + DONE_HEADER;

/// Fills in the first [`DONE_PREFIX`] bytes of `frame`, whose remaining bytes are the payload of
/// chunk `chunk`, making it the same frame [`write_done_frame`] writes.
pub fn finish_done_frame(frame: &mut [u8], chunk: u64, items: u64) -> Result<(), CodecError> {
    let payload = frame.len().checked_sub(DONE_PREFIX).ok_or(CodecError::TooLarge(0))?;
    let body = DONE_HEADER + payload;
    if body > MAX_FRAME {
        return Err(CodecError::TooLarge(body));
    }
    frame[0..4].copy_from_slice(&(body as u32).to_le_bytes());
    frame[4..8].copy_from_slice(&DONE_TAG.to_le_bytes());
    frame[8..16].copy_from_slice(&chunk.to_le_bytes());
    frame[16..24].copy_from_slice(&items.to_le_bytes());
    frame[24..32].copy_from_slice(&(payload as u64).to_le_bytes());
    Ok(())
}

/// Appends the frame of `FromWorker::Done(ChunkDone { chunk, items, payload })` to `dst`,
/// without first moving `payload` into a message.
pub fn write_done_frame(
    chunk: u64,
    items: u64,
    payload: &[u8],
    dst: &mut BytesMut,
) -> Result<(), CodecError> {
    let start = dst.len();
    dst.reserve(LENGTH_PREFIX + DONE_HEADER + payload.len());
    dst.put_u32_le(0);
    dst.put_u32_le(DONE_TAG);
    dst.put_u64_le(chunk);
    dst.put_u64_le(items);
    dst.put_u64_le(payload.len() as u64);
    dst.put_slice(payload);
    patch_length(dst, start)
}

fn patch_length(dst: &mut BytesMut, start: usize) -> Result<(), CodecError> {
    let body = dst.len() - start - LENGTH_PREFIX;
    if body > MAX_FRAME {
        dst.truncate(start);
        return Err(CodecError::TooLarge(body));
    }
    let len = u32::try_from(body).map_err(|_| CodecError::TooLarge(body))?;
    dst[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Appends `value` encoded (the same bincode configuration as messages, within the frame
/// limit) to `out`: how typed tasks' inputs and results travel.
pub fn encode_value<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, CONFIG)?;
    Ok(())
}

/// Encodes `msg` alone (no length prefix): a record's contents, never a frame.
pub fn to_vec<M: Serialize>(msg: &M) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(msg, CONFIG)?)
}

/// Decodes one frame body into a message; the whole body must be used.
/// Owned strings and byte buffers inside it are copied from the frame once, without bincode's
/// zero-filled buffer (`shared/src/owning.rs`).
pub fn decode<M: DeserializeOwned>(body: &[u8]) -> Result<M, CodecError> {
    let (ViaOwning(msg), used) = bincode::serde::borrow_decode_from_slice(body, CONFIG)?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(msg)
}

/// A value decoded through [`Owning`].
struct ViaOwning<M>(M);

impl<'de, M: DeserializeOwned> serde::Deserialize<'de> for ViaOwning<M> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        M::deserialize(Owning(d)).map(ViaOwning)
    }
}

/// A decoded worker frame. A chunk's output keeps pointing into the frame it arrived in.
#[derive(Debug)]
pub enum Incoming {
    Done { chunk: u64, items: u64, payload: Bytes },
    Other(FromWorker),
}

/// Decodes a frame from a worker, taking the output of a `Done` without copying it.
pub fn decode_from_worker(mut body: BytesMut) -> Result<Incoming, CodecError> {
    if body.len() >= DONE_HEADER && read_u32(&body, 0) == DONE_TAG {
        let chunk = read_u64(&body, 4);
        let items = read_u64(&body, 12);
        let len = read_u64(&body, 20);
        let rest = (body.len() - DONE_HEADER) as u64;
        if len != rest {
            // Let the generic decoder produce the precise error (or trailing-bytes error).
            return decode(&body).map(Incoming::Other);
        }
        let payload = body.split_off(DONE_HEADER).freeze();
        return Ok(Incoming::Done { chunk, items, payload });
    }
    decode(&body).map(Incoming::Other)
}

/// `ToWorker::Body`'s variant index.
const BODY_TAG: u32 = 4;
/// Tag, chunk, last, bytes length.
const BODY_HEADER: usize = 4 + 8 + 1 + 8;

/// The first bytes of the frame of `ToWorker::Body(BodyPiece { chunk, last, bytes })` whose
/// bytes are `len` long: length prefix included, so that writing these and then the bytes
/// themselves sends that very frame without copying the bytes into a message.
pub fn body_piece_header(
    chunk: u64,
    last: bool,
    len: usize,
) -> Result<[u8; LENGTH_PREFIX + BODY_HEADER], CodecError> {
    let body = BODY_HEADER + len;
    if body > MAX_FRAME {
        return Err(CodecError::TooLarge(body));
    }
    let mut h = [0u8; LENGTH_PREFIX + BODY_HEADER];
    h[0..4].copy_from_slice(&(body as u32).to_le_bytes());
    h[4..8].copy_from_slice(&BODY_TAG.to_le_bytes());
    h[8..16].copy_from_slice(&chunk.to_le_bytes());
    h[16] = u8::from(last);
    h[17..25].copy_from_slice(&(len as u64).to_le_bytes());
    Ok(h)
}

/// Reads a `ToWorker::Body` frame body in place: `(chunk, last, bytes)`, the bytes borrowed from
/// the frame; `None` if the frame is not exactly such a message (the generic decoder then says
/// what it is).
pub fn body_piece(body: &[u8]) -> Option<(u64, bool, &[u8])> {
    if body.len() < BODY_HEADER || read_u32(body, 0) != BODY_TAG || body[12] > 1 {
        return None;
    }
    let len = read_u64(body, 13);
    (len == (body.len() - BODY_HEADER) as u64)
        .then(|| (read_u64(body, 4), body[12] == 1, &body[BODY_HEADER..]))
}

/// `ToWorker::Items`'s variant index.
const ITEMS_TAG: u32 = 5;
/// Tag, chunk, first, item count.
const ITEMS_HEADER: usize = 4 + 8 + 8 + 8;

/// Builds the frame of `ToWorker::Items(ItemBatch { chunk, first, items })` in place, an item
/// at a time, each item given as the pieces it is held in: no message is built, and the
/// bytes are copied once, into the frame.
#[derive(Debug)]
pub struct ItemsFrame<'a> {
    dst: &'a mut BytesMut,
    start: usize,
    count: u64,
}

impl<'a> ItemsFrame<'a> {
    /// Starts the frame at the end of `dst`.
    pub fn begin(dst: &'a mut BytesMut, chunk: u64, first: u64) -> ItemsFrame<'a> {
        let start = dst.len();
        dst.put_u32_le(0);
        dst.put_u32_le(ITEMS_TAG);
        dst.put_u64_le(chunk);
        dst.put_u64_le(first);
        dst.put_u64_le(0);
        ItemsFrame { dst, start, count: 0 }
    }

    /// Appends one item, whose bytes are the concatenation of `pieces`.
    pub fn push<'p>(&mut self, pieces: impl IntoIterator<Item = &'p [u8]> + Clone) {
        let len: usize = pieces.clone().into_iter().map(<[u8]>::len).sum();
        self.dst.reserve(8 + len);
        self.dst.put_u64_le(len as u64);
        for piece in pieces {
            self.dst.put_slice(piece);
        }
        self.count += 1;
    }

    /// Appends `count` items laid out as this frame lays them out (each its 8-byte length,
    /// then its bytes), in one copy.
    pub fn push_framed(&mut self, framed: &[u8], count: usize) {
        self.dst.extend_from_slice(framed);
        self.count += count as u64;
    }

    /// Fills in the count and the length; a frame over [`MAX_FRAME`] is removed and refused.
    pub fn finish(self) -> Result<(), CodecError> {
        let at = self.start + LENGTH_PREFIX + 4 + 8 + 8;
        self.dst[at..at + 8].copy_from_slice(&self.count.to_le_bytes());
        patch_length(self.dst, self.start)
    }
}

/// The first bytes of the frame of `ToWorker::Items(ItemBatch { chunk, first, items })` of
/// `count` items of `bytes` bytes in all, length prefix included: writing these, then each
/// item's length ([`item_length`]) and bytes, sends the very frame [`ItemsFrame`] builds,
/// without copying the items into a buffer (a vectored write).
pub fn items_frame_head(
    chunk: u64,
    first: u64,
    count: usize,
    bytes: usize,
) -> Result<[u8; ITEMS_FRAME_OVERHEAD], CodecError> {
    let body = count
        .checked_mul(ITEM_OVERHEAD)
        .and_then(|lengths| (ITEMS_HEADER + lengths).checked_add(bytes))
        .filter(|&body| body <= MAX_FRAME)
        .ok_or(CodecError::TooLarge(bytes))?;
    let mut h = [0u8; ITEMS_FRAME_OVERHEAD];
    h[0..4].copy_from_slice(&(body as u32).to_le_bytes());
    h[4..8].copy_from_slice(&ITEMS_TAG.to_le_bytes());
    h[8..16].copy_from_slice(&chunk.to_le_bytes());
    h[16..24].copy_from_slice(&first.to_le_bytes());
    h[24..32].copy_from_slice(&(count as u64).to_le_bytes());
    Ok(h)
}

/// What precedes an item of `len` bytes in an items frame.
pub fn item_length(len: usize) -> [u8; ITEM_OVERHEAD] {
    (len as u64).to_le_bytes()
}

/// The bytes one item adds to an items frame besides its own: its length.
pub const ITEM_OVERHEAD: usize = 8;
/// The bytes of an items frame besides its items.
pub const ITEMS_FRAME_OVERHEAD: usize = LENGTH_PREFIX + ITEMS_HEADER;

/// Reads a `ToWorker::Items` frame body in place: `(chunk, first, items)`, each item borrowed
/// from the frame; `None` if the frame is not exactly such a message (the generic decoder then
/// says what it is).
pub fn items_batch(body: &[u8]) -> Option<(u64, u64, Vec<&[u8]>)> {
    if body.len() < ITEMS_HEADER || read_u32(body, 0) != ITEMS_TAG {
        return None;
    }
    let (chunk, first, count) = (read_u64(body, 4), read_u64(body, 12), read_u64(body, 20));
    let rest = &body[ITEMS_HEADER..];
    // Each item takes at least its 8-byte length: a count beyond that is a lie.
    if count > (rest.len() / ITEM_OVERHEAD) as u64 {
        return None;
    }
    let mut items = Vec::with_capacity(count as usize);
    framed_items(rest, &mut items)?;
    (items.len() as u64 == count).then_some((chunk, first, items))
}

/// Appends to `items` the items laid out in `framed` as an items frame lays them out (each
/// its 8-byte length, then its bytes), borrowed; `None` if they do not tile it exactly.
pub fn framed_items<'a>(mut framed: &'a [u8], items: &mut Vec<&'a [u8]>) -> Option<()> {
    while !framed.is_empty() {
        if framed.len() < ITEM_OVERHEAD {
            return None;
        }
        let len = usize::try_from(read_u64(framed, 0)).ok()?;
        let item = framed.get(ITEM_OVERHEAD..ITEM_OVERHEAD.checked_add(len)?)?;
        items.push(item);
        framed = &framed[ITEM_OVERHEAD + len..];
    }
    Some(())
}

/// Appends one item's result to the payload of an items job's `Done`: a 4-byte little-endian
/// length, then the bytes. An empty result is an empty record, never a failure.
pub fn push_record(payload: &mut Vec<u8>, result: &[u8]) {
    payload.extend_from_slice(&(result.len() as u32).to_le_bytes());
    payload.extend_from_slice(result);
}

/// How many records tile `payload` exactly (`None` if they do not): a check that allocates
/// nothing.
pub fn count_records(payload: &[u8]) -> Option<u64> {
    let mut at = 0usize;
    let mut count = 0u64;
    while at < payload.len() {
        let end = at.checked_add(4).filter(|&e| e <= payload.len())?;
        let len = read_u32(payload, at) as usize;
        at = end.checked_add(len).filter(|&e| e <= payload.len())?;
        count += 1;
    }
    Some(count)
}

/// Splits the payload of an items job's `Done` into its records, without copying; an error if
/// the records do not tile the payload exactly.
pub fn split_records(payload: &Bytes) -> Result<Vec<Bytes>, CodecError> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let end = at
            .checked_add(4)
            .filter(|&e| e <= payload.len())
            .ok_or(CodecError::Records("a record length is cut off"))?;
        let len = read_u32(payload, at) as usize;
        let stop = end
            .checked_add(len)
            .filter(|&e| e <= payload.len())
            .ok_or(CodecError::Records("a record runs past the payload"))?;
        records.push(payload.slice(end..stop));
        at = stop;
    }
    Ok(records)
}

/// The protocol version in the body of a first frame, if it is shaped like a `Hello`: variant 0,
/// then the version. This never changes across versions, so any peer can be told why it is
/// refused.
pub fn hello_version(body: &[u8]) -> Option<u32> {
    (body.len() >= 8 && read_u32(body, 0) == 0).then(|| read_u32(body, 4))
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
