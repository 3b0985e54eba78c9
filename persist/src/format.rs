//! On-disk format: superblock, record frames, object encodings. See `docs/persist-format.md`.
//!
//! Every decoder here takes untrusted bytes and returns `None`/`Err` on anything unexpected; no
//! accessor can panic on bad input. Encoders assert the invariants the decoders check.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::limits::{RECORD_PAYLOAD_MAX_BYTES, SECTOR_SIZE_BYTES};

/// Format version written in the superblock and in every record header.
pub const FORMAT_VERSION: u32 = 1;

/// A 32-byte blake3 hash naming an object.
pub type Hash = [u8; 32];

/// blake3 of `bytes`.
pub fn hash_bytes(bytes: &[u8]) -> Hash {
    *blake3::hash(bytes).as_bytes()
}

/// Read a little-endian u64 at `at` (caller guarantees the bounds).
fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}
fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

// ---------------------------------------------------------------------------------------------
// Superblock
// ---------------------------------------------------------------------------------------------

pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"XSPLOG\0\x01";
const SUPERBLOCK_CHECKSUM_AT: usize = 504;

/// The superblock: one 512-byte sector, two slots, the valid one with the higher `sb_seq` wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Incremented at every superblock write; slot = `sb_seq % 2`.
    pub sb_seq: u64,
    /// Device size when formatted.
    pub sector_count: u64,
    /// Size of each of the two log regions.
    pub region_sectors: u64,
    /// Region (0 or 1) holding the live log.
    pub active_region: u32,
    /// Generation of the active region; keys every record checksum in it.
    pub generation: u64,
    /// Byte offset of the checkpoint record recovery starts from.
    pub checkpoint_offset: u64,
    /// Commit sequence number that checkpoint captures.
    pub checkpoint_seq: u64,
    /// Checksum of that checkpoint record (the chain value after it).
    pub checkpoint_checksum: u64,
}

impl Superblock {
    pub fn encode(&self) -> [u8; SECTOR_SIZE_BYTES] {
        assert!(self.active_region <= 1);
        let mut b = [0u8; SECTOR_SIZE_BYTES];
        b[0..8].copy_from_slice(&SUPERBLOCK_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(SECTOR_SIZE_BYTES as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.sb_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.sector_count.to_le_bytes());
        b[32..40].copy_from_slice(&self.region_sectors.to_le_bytes());
        b[40..44].copy_from_slice(&self.active_region.to_le_bytes());
        b[48..56].copy_from_slice(&self.generation.to_le_bytes());
        b[56..64].copy_from_slice(&self.checkpoint_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.checkpoint_seq.to_le_bytes());
        b[72..80].copy_from_slice(&self.checkpoint_checksum.to_le_bytes());
        let sum = superblock_checksum(&b);
        b[SUPERBLOCK_CHECKSUM_AT..].copy_from_slice(&sum.to_le_bytes());
        debug_assert_eq!(Superblock::decode(&b), Ok(*self));
        b
    }

    /// Decode one slot. `Err(Some(version))` for a valid superblock of another version.
    pub fn decode(b: &[u8; SECTOR_SIZE_BYTES]) -> Result<Superblock, Option<u32>> {
        if b[0..8] != SUPERBLOCK_MAGIC {
            return Err(None);
        }
        if le_u64(b, SUPERBLOCK_CHECKSUM_AT) != superblock_checksum(b) {
            return Err(None);
        }
        let version = le_u32(b, 8);
        if version != FORMAT_VERSION {
            return Err(Some(version));
        }
        if le_u32(b, 12) != SECTOR_SIZE_BYTES as u32 {
            return Err(None);
        }
        let sb = Superblock {
            sb_seq: le_u64(b, 16),
            sector_count: le_u64(b, 24),
            region_sectors: le_u64(b, 32),
            active_region: le_u32(b, 40),
            generation: le_u64(b, 48),
            checkpoint_offset: le_u64(b, 56),
            checkpoint_seq: le_u64(b, 64),
            checkpoint_checksum: le_u64(b, 72),
        };
        if sb.active_region > 1 {
            return Err(None);
        }
        Ok(sb)
    }
}

fn superblock_checksum(b: &[u8; SECTOR_SIZE_BYTES]) -> u64 {
    let h = blake3::hash(&b[..SUPERBLOCK_CHECKSUM_AT]);
    le_u64(h.as_bytes(), 0)
}

// ---------------------------------------------------------------------------------------------
// Record frames
// ---------------------------------------------------------------------------------------------

pub const RECORD_MAGIC: [u8; 2] = *b"XR";
pub const RECORD_HEADER_BYTES: usize = 40;

/// Kind of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A commit: cause and mutations (postcard `CommitWire`).
    Commit = 1,
    /// A pack of content-addressed objects: object payloads back to back, each addressed by
    /// the (offset, length) its parent holds (see `encode_object_payload`).
    Object = 2,
    /// A checkpoint: roots of the node tree and the blob map at `seq`.
    Checkpoint = 3,
}

impl RecordKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(RecordKind::Commit),
            2 => Some(RecordKind::Object),
            3 => Some(RecordKind::Checkpoint),
            _ => None,
        }
    }
}

/// A decoded record header (40 bytes on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    pub payload_len: u32,
    /// Commit: its sequence number. Object/checkpoint: the last commit applied when written.
    pub seq: u64,
    /// Highest commit known durable when this record was built (proof for damage detection).
    pub durable_seq: u64,
    /// Checksum of the previous record in this region (0 for the first): the chain.
    pub prev: u64,
    /// Keyed checksum of header bytes 0..32 and the payload.
    pub checksum: u64,
}

/// Checksum of a record: blake3 over (generation, header bytes 0..32, payload), first 8 bytes.
pub fn record_checksum(generation: u64, header32: &[u8], payload: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(header32);
    h.update(payload);
    le_u64(h.finalize().as_bytes(), 0)
}

/// Append one framed record to `out`; returns its checksum.
pub fn encode_record(
    out: &mut Vec<u8>,
    generation: u64,
    kind: RecordKind,
    seq: u64,
    durable_seq: u64,
    prev: u64,
    payload: &[u8],
) -> u64 {
    assert!(payload.len() <= RECORD_PAYLOAD_MAX_BYTES);
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[0..2].copy_from_slice(&RECORD_MAGIC);
    header[2] = kind as u8;
    header[3] = FORMAT_VERSION as u8;
    header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..24].copy_from_slice(&durable_seq.to_le_bytes());
    header[24..32].copy_from_slice(&prev.to_le_bytes());
    let sum = record_checksum(generation, &header[..32], payload);
    header[32..40].copy_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    // Pair check across the disk boundary: what a reader will parse is what we meant.
    debug_assert_eq!(
        decode_header(&header).map(|h| (h.kind, h.seq, h.prev, h.checksum)),
        Some((kind, seq, prev, sum))
    );
    sum
}

/// Parse a header without checking the checksum (which needs the payload).
pub fn decode_header(b: &[u8]) -> Option<RecordHeader> {
    if b.len() < RECORD_HEADER_BYTES || b[0..2] != RECORD_MAGIC {
        return None;
    }
    if b[3] != FORMAT_VERSION as u8 {
        return None;
    }
    let kind = RecordKind::from_u8(b[2])?;
    let payload_len = le_u32(b, 4);
    if payload_len as usize > RECORD_PAYLOAD_MAX_BYTES {
        return None;
    }
    Some(RecordHeader {
        kind,
        payload_len,
        seq: le_u64(b, 8),
        durable_seq: le_u64(b, 16),
        prev: le_u64(b, 24),
        checksum: le_u64(b, 32),
    })
}

/// Check a header's checksum against its payload.
#[cfg(test)]
pub fn verify_record(generation: u64, header_bytes: &[u8], payload: &[u8]) -> bool {
    match decode_header(header_bytes) {
        Some(h) => {
            h.payload_len as usize == payload.len()
                && record_checksum(generation, &header_bytes[..32], payload) == h.checksum
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------

/// Where an object's payload lies on the device. Not covered by the object's hash: a wrong
/// location is detected because the bytes found there do not hash to the expected name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loc {
    /// Byte offset of the payload (just after its record header).
    pub offset: u64,
    /// Payload length in bytes.
    pub len: u32,
}

/// A reference to a stored object: its content hash plus where to find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjRef {
    pub hash: Hash,
    pub loc: Loc,
}

/// Node metadata as stored: value, opaque permission bytes, generation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeRecord {
    pub value: Vec<u8>,
    /// Opaque to this crate: the wire-format permission strings, e.g. `b"b0\0r1\0"`.
    pub permissions: Vec<u8>,
    pub generation: u64,
}

/// Borrowed node record for encoding (same postcard bytes as `NodeRecord`).
#[derive(Serialize)]
pub struct RecordOut<'a> {
    pub value: &'a [u8],
    pub permissions: &'a [u8],
    pub generation: u64,
}

/// Object content, encoding side (borrowed). The hash covers exactly these postcard bytes.
#[derive(Serialize)]
pub enum ContentOut<'a> {
    Node {
        record: Option<RecordOut<'a>>,
        children: ChildrenOut<'a>,
    },
    Page(PageOut<'a>),
    Blob(&'a [u8]),
}

#[derive(Serialize)]
pub enum ChildrenOut<'a> {
    /// Up to `LEAF_ENTRIES_MAX` children, sorted by name.
    Inline(Vec<(&'a str, Hash)>),
    /// A child index page (bounded fan-out tree keyed by name hash).
    Paged(Hash),
}

#[derive(Serialize)]
pub enum PageOut<'a> {
    Leaf(Vec<(&'a str, Hash)>),
    /// Non-empty buckets: (nibble 0..16, page hash), ascending nibble.
    Branch(Vec<(u8, Hash)>),
}

/// Object content, decoding side (owned). Must stay byte-compatible with `ContentOut`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub enum ContentIn {
    Node {
        record: Option<NodeRecord>,
        children: ChildrenIn,
    },
    Page(PageIn),
    Blob(Vec<u8>),
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub enum ChildrenIn {
    Inline(Vec<(String, Hash)>),
    Paged(Hash),
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub enum PageIn {
    Leaf(Vec<(String, Hash)>),
    Branch(Vec<(u8, Hash)>),
}

impl ContentIn {
    /// Number of child hashes in this content, in order (= number of locations expected).
    pub fn reference_count(&self) -> usize {
        match self {
            ContentIn::Node { children, .. } => match children {
                ChildrenIn::Inline(v) => v.len(),
                ChildrenIn::Paged(_) => 1,
            },
            ContentIn::Page(PageIn::Leaf(v)) => v.len(),
            ContentIn::Page(PageIn::Branch(v)) => v.len(),
            ContentIn::Blob(_) => 0,
        }
    }
}

/// Object payload layout: `[u32 LE content_len][content][postcard Vec<Loc>]`.
pub fn encode_object_payload(content: &[u8], locs: &[Loc]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + content.len() + 2 + locs.len() * 8);
    out.extend_from_slice(&(content.len() as u32).to_le_bytes());
    out.extend_from_slice(content);
    match postcard::to_extend(locs, out) {
        Ok(v) => v,
        // Serializing plain integers into a Vec cannot fail.
        Err(_) => unreachable!("postcard into Vec"),
    }
}

/// Split and verify an object payload: the content must hash to `expected`.
/// Returns the decoded content and the child locations.
pub fn decode_object_payload(payload: &[u8], expected: &Hash) -> Option<(ContentIn, Vec<Loc>)> {
    if payload.len() < 4 {
        return None;
    }
    let content_len = le_u32(payload, 0) as usize;
    let content = payload.get(4..4usize.checked_add(content_len)?)?;
    if hash_bytes(content) != *expected {
        return None;
    }
    let (decoded, rest): (ContentIn, &[u8]) = postcard::take_from_bytes(content).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let (locs, rest): (Vec<Loc>, &[u8]) =
        postcard::take_from_bytes(&payload[4 + content_len..]).ok()?;
    if !rest.is_empty() || locs.len() != decoded.reference_count() {
        return None;
    }
    Some((decoded, locs))
}

/// Checkpoint record payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointWire {
    /// Root node ("/") object.
    pub tree: ObjRef,
    /// Root page of the state-blob map.
    pub blobs: ObjRef,
    pub node_count: u64,
    pub blob_count: u64,
}

/// Encode any serde value with postcard (into a fresh Vec).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    match postcard::to_allocvec(value) {
        Ok(v) => v,
        // Our types contain only sized integers, byte strings, strings, Options, enums and
        // sequences with known lengths: postcard cannot fail to encode them into a Vec.
        Err(_) => unreachable!("postcard encode of persist types"),
    }
}

/// Bytes `to_vec(value)` would produce, without encoding into memory.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    match postcard::experimental::serialized_size(value) {
        Ok(len) => len,
        // As in `to_vec`: persist types always encode.
        Err(_) => unreachable!("postcard size of persist types"),
    }
}

/// Decode a serde value with postcard, requiring every byte to be used.
pub fn from_bytes_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    let (v, rest) = postcard::take_from_bytes(bytes).ok()?;
    if rest.is_empty() { Some(v) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn superblock_round_trip_and_checksum() {
        let sb = Superblock {
            sb_seq: 7,
            sector_count: 4096,
            region_sectors: 2040,
            active_region: 1,
            generation: 3,
            checkpoint_offset: 8192,
            checkpoint_seq: 99,
            checkpoint_checksum: 0xdead_beef,
        };
        let mut b = sb.encode();
        assert_eq!(Superblock::decode(&b), Ok(sb));
        b[100] ^= 1;
        assert_eq!(Superblock::decode(&b), Err(None));
    }

    #[test]
    fn record_round_trip_and_generation_keying() {
        let mut out = Vec::new();
        let sum = encode_record(&mut out, 5, RecordKind::Commit, 9, 8, 1234, b"hello");
        let h = decode_header(&out).unwrap();
        assert_eq!(h.checksum, sum);
        assert_eq!(
            (h.seq, h.durable_seq, h.prev, h.payload_len),
            (9, 8, 1234, 5)
        );
        assert!(verify_record(5, &out[..40], &out[40..]));
        assert!(
            !verify_record(6, &out[..40], &out[40..]),
            "other generation must not verify"
        );
        out[41] ^= 0x10;
        assert!(!verify_record(5, &out[..40], &out[40..]));
    }

    #[test]
    fn borrowed_and_owned_encodings_agree() {
        let h = [7u8; 32];
        let out = ContentOut::Node {
            record: Some(RecordOut {
                value: b"v",
                permissions: b"b0\0",
                generation: 3,
            }),
            children: ChildrenOut::Inline(vec![("a", h), ("b", h)]),
        };
        let bytes = to_vec(&out);
        let locs = [Loc { offset: 1, len: 2 }, Loc { offset: 3, len: 4 }];
        let payload = encode_object_payload(&bytes, &locs);
        let (back, l) = decode_object_payload(&payload, &hash_bytes(&bytes)).unwrap();
        assert_eq!(l, locs);
        assert_eq!(
            back,
            ContentIn::Node {
                record: Some(NodeRecord {
                    value: b"v".to_vec(),
                    permissions: b"b0\0".to_vec(),
                    generation: 3
                }),
                children: ChildrenIn::Inline(vec![("a".into(), h), ("b".into(), h)]),
            }
        );
        // A wrong expected hash is refused.
        assert!(decode_object_payload(&payload, &[0u8; 32]).is_none());
        // Page and blob variants too.
        let page = to_vec(&ContentOut::Page(PageOut::Branch(vec![(3, h)])));
        assert_eq!(
            from_bytes_exact::<ContentIn>(&page),
            Some(ContentIn::Page(PageIn::Branch(vec![(3, h)])))
        );
        let blob = to_vec(&ContentOut::Blob(b"xyz"));
        assert_eq!(
            from_bytes_exact::<ContentIn>(&blob),
            Some(ContentIn::Blob(b"xyz".to_vec()))
        );
    }

    #[test]
    fn decoders_never_panic_on_garbage() {
        let mut rng = crate::sim::SimRng::new(1);
        for len in 0..300usize {
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let _ = decode_header(&bytes);
            let _ = decode_object_payload(&bytes, &hash_bytes(&bytes));
            let _ = from_bytes_exact::<ContentIn>(&bytes);
            let _ = from_bytes_exact::<CheckpointWire>(&bytes);
        }
    }
}
