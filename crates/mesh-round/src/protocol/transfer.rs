//! Blobs travel in parts, each checked against the blob's BLAKE3 hash as it
//! arrives (BLAKE3 verified streaming, with the `bao-tree` crate).
//!
//! A blob of `size` bytes is cut into parts of [`PART_BYTES`]. A holder
//! answers a request for part `i` with the part's bytes and the BLAKE3 tree
//! hashes (in chunk groups of 16 KiB) that link them to the blob's hash; the
//! receiver checks them against the hash it asked for before it keeps a byte.
//! Part 0 also carries the blob's last chunk group, which proves the size
//! the holder claims. A download asks for the first [`EARLY_PARTS_MAX`]
//! parts at once: a later part that arrives before part 0 is checked
//! against the size its sender claims and kept aside until part 0 proves
//! that size (or dropped when it proves another). A request for a part past
//! the end is answered with no bytes and the blob's size:
//!
//! ```text
//!   part 0:   parents ─ [ groups of part 0 ] ─ parents ─ [ last group ]    proves the size
//!   part i:   parents ─ [ groups of part i ]
//! ```
//!
//! Every holder encodes a part the same way, so a node keeps each verified
//! part as it came ([`Download`]): it serves those parts on while it still
//! downloads the rest, and a download that loses its holder resumes from
//! another with the parts it holds.
//!
//! Plain data and pure functions: no I/O, no clocks.

use std::io::Cursor;
use std::sync::Arc;

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::{encode_ranges_validated, DecodeResponseIter};
use bao_tree::io::BaoContentItem;
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use mesh_consensus::command::ModelHash;

/// Bytes of one part (the last part of a blob may be shorter).
pub const PART_BYTES: u64 = 256 * 1024;

/// The chunk group the tree hashes stop at (16 KiB): the proof of a part
/// costs 64 bytes per 16 KiB of its span, the hashes a server keeps per
/// blob ([`Outboard`]) are 0.4% of it.
const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

/// BLAKE3 chunks (1 KiB each) in one part.
const PART_CHUNKS: u64 = PART_BYTES / 1024;

/// Parts a download asks for before it knows the size (part 0 and the next),
/// keeping the later one aside until part 0 proves the size. Two, because
/// most models here are one or two parts; a longer blob asks for more once
/// part 0 has come.
pub const EARLY_PARTS_MAX: u32 = 2;

/// Why a part was refused or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// The part is not in a blob of that size. The sender is confused or
    /// faulty; ask another holder.
    #[error("part {part} is not in a blob of {size_bytes} bytes")]
    NoSuchPart {
        /// The part asked for or sent.
        part: u32,
        /// The blob's size.
        size_bytes: u64,
    },
    /// The claimed size is over what this node accepts. Not retryable with
    /// this holder; another may hold the real blob.
    #[error("a blob of {size_bytes} bytes is over the limit of {limit_bytes}")]
    TooLarge {
        /// The claimed size.
        size_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// The size differs from the one part 0 proved. The sender is faulty.
    #[error("part claims a blob of {claimed_bytes} bytes, but part 0 proved {proven_bytes}")]
    SizeMismatch {
        /// What this part claims.
        claimed_bytes: u64,
        /// What part 0 proved.
        proven_bytes: u64,
    },
    /// The bytes do not hash to the blob's hash (corrupt or forged). The
    /// sender is faulty; ask another holder.
    #[error("part {part} failed verification against the blob hash: {reason}")]
    Unverified {
        /// The part.
        part: u32,
        /// What did not match.
        reason: String,
    },
    /// The held blob did not match its own hashes while encoding a part (a
    /// local fault); nothing is sent.
    #[error("could not encode part {part}: {reason}")]
    Encode {
        /// The part.
        part: u32,
        /// Why.
        reason: String,
    },
}

/// How many parts a blob of `size_bytes` has (an empty blob has one).
pub fn part_count(size_bytes: u64) -> u32 {
    u32::try_from(size_bytes.div_ceil(PART_BYTES).max(1)).unwrap_or(u32::MAX)
}

/// The chunks part `part` covers: its own, and for part 0 the last chunk
/// as well (whose hash proves the size).
fn part_ranges(size_bytes: u64, part: u32) -> ChunkRanges {
    let chunks = ChunkNum::chunks(size_bytes).0;
    let start = u64::from(part).saturating_mul(PART_CHUNKS).min(chunks);
    let end = start.saturating_add(PART_CHUNKS).min(chunks);
    let mut ranges = ChunkRanges::from(ChunkNum(start)..ChunkNum(end));
    if part == 0 && chunks > 0 {
        ranges |= ChunkRanges::from(ChunkNum(chunks - 1)..ChunkNum(chunks));
    }
    ranges
}

fn check_part(size_bytes: u64, part: u32) -> Result<(), TransferError> {
    if part >= part_count(size_bytes) {
        return Err(TransferError::NoSuchPart { part, size_bytes });
    }
    Ok(())
}

/// The tree hashes of a held blob, which its holder needs to serve parts.
#[derive(Debug)]
pub struct Outboard(PreOrderMemOutboard);

impl Outboard {
    /// Hashes `bytes` (one pass) and keeps the hashes at chunk-group level.
    pub fn of(bytes: &[u8]) -> Self {
        Self(PreOrderMemOutboard::create(bytes, BLOCK_SIZE))
    }

    /// The blob's hash.
    pub fn hash(&self) -> ModelHash {
        *self.0.root.as_bytes()
    }

    /// Bytes these hashes take.
    pub fn size_bytes(&self) -> usize {
        self.0.data.len()
    }
}

/// Part `part` of `bytes` (whose hashes are `outboard`), encoded to be
/// verified against the blob's hash.
pub fn encode_part(bytes: &[u8], outboard: &Outboard, part: u32) -> Result<Vec<u8>, TransferError> {
    let size_bytes = bytes.len() as u64;
    check_part(size_bytes, part)?;
    if outboard.0.tree.size() != size_bytes {
        return Err(TransferError::Encode {
            part,
            reason: "the hashes are of a blob of another size".into(),
        });
    }
    let ranges = part_ranges(size_bytes, part);
    let mut encoded = Vec::with_capacity(PART_BYTES as usize + 1024);
    encode_ranges_validated(bytes, &outboard.0, &ranges, &mut encoded).map_err(|e| {
        TransferError::Encode {
            part,
            reason: e.to_string(),
        }
    })?;
    Ok(encoded)
}

/// Checks part `part` of the blob `hash` of `size_bytes` and hands each
/// verified piece of it to `each` with its offset in the blob (part 0 also
/// hands over the last chunk group). Refuses anything that does not verify,
/// and trailing bytes; `each` may have seen pieces before a refusal.
pub fn decode_part(
    hash: &ModelHash,
    size_bytes: u64,
    part: u32,
    encoded: &[u8],
    mut each: impl FnMut(u64, &[u8]),
) -> Result<(), TransferError> {
    check_part(size_bytes, part)?;
    let unverified = |reason: String| TransferError::Unverified { part, reason };
    if size_bytes == 0 && *hash != *blake3::hash(&[]).as_bytes() {
        return Err(unverified("an empty blob has another hash".into()));
    }
    let ranges = part_ranges(size_bytes, part);
    let tree = BaoTree::new(size_bytes, BLOCK_SIZE);
    let root = blake3::Hash::from_bytes(*hash);
    let mut reader = Cursor::new(encoded);
    let mut leaves = 0usize;
    for item in DecodeResponseIter::new(root, tree, &mut reader, &ranges) {
        match item.map_err(|e| unverified(e.to_string()))? {
            BaoContentItem::Parent(_) => {}
            BaoContentItem::Leaf(leaf) => {
                leaves += 1;
                each(leaf.offset, &leaf.data);
            }
        }
    }
    let rest = (encoded.len() as u64).saturating_sub(reader.position());
    if rest > 0 {
        return Err(unverified(format!("{rest} trailing bytes")));
    }
    if leaves == 0 && size_bytes > 0 {
        return Err(unverified("no data".into()));
    }
    Ok(())
}

/// A blob arriving in parts: its size once part 0 proved it, and every
/// verified part as it came (to serve on, and to assemble at the end).
#[derive(Debug, Clone)]
pub struct Download {
    hash: ModelHash,
    limit_bytes: u64,
    size_bytes: Option<u64>,
    parts: Vec<Option<Arc<[u8]>>>,
    held: u32,
    /// Parts that came before part 0, each checked against the size its
    /// sender claimed (at most [`EARLY_PARTS_MAX`] - 1).
    early: Vec<(u32, u64, Arc<[u8]>)>,
}

impl Download {
    /// A download of `hash`, refusing blobs over `limit_bytes`.
    pub fn new(hash: ModelHash, limit_bytes: u64) -> Self {
        Self {
            hash,
            limit_bytes,
            size_bytes: None,
            parts: Vec::new(),
            held: 0,
            early: Vec::new(),
        }
    }

    /// The blob's size, once part 0 proved it.
    pub fn size_bytes(&self) -> Option<u64> {
        self.size_bytes
    }

    /// Parts held so far (not counting those kept aside before part 0).
    pub fn parts_held(&self) -> u32 {
        self.held
    }

    /// Part `part` as it came, if held.
    pub fn part(&self, part: u32) -> Option<&Arc<[u8]>> {
        self.parts.get(part as usize)?.as_ref()
    }

    /// Whether `part` is past the end of the blob (`false` while the size is unknown).
    pub fn is_past_end(&self, part: u32) -> bool {
        self.size_bytes.is_some_and(|size| part >= part_count(size))
    }

    /// The parts still to fetch, in order: while the size is unknown, the
    /// first [`EARLY_PARTS_MAX`] not yet kept aside.
    pub fn missing(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        if self.size_bytes.is_none() {
            let aside = |p: &u32| self.early.iter().any(|(e, _, _)| e == p);
            return Box::new((0..EARLY_PARTS_MAX).filter(move |p| !aside(p)));
        }
        let missing = self.parts.iter().enumerate().filter(|(_, p)| p.is_none());
        Box::new(missing.map(|(i, _)| i as u32))
    }

    /// Whether every part is held.
    pub fn is_complete(&self) -> bool {
        self.size_bytes.is_some() && self.held as usize == self.parts.len()
    }

    /// Verifies and keeps part `part` of a blob its sender says has
    /// `size_bytes`. Returns the parts that became held: this one; with
    /// part 0, also those kept aside for the size it proved; none when it
    /// was held already or is kept aside until part 0 comes.
    pub fn accept(
        &mut self,
        part: u32,
        size_bytes: u64,
        encoded: Vec<u8>,
    ) -> Result<Vec<u32>, TransferError> {
        if let Some(proven) = self.size_bytes {
            if proven != size_bytes {
                return Err(TransferError::SizeMismatch {
                    claimed_bytes: size_bytes,
                    proven_bytes: proven,
                });
            }
            if self.part(part).is_some() {
                return Ok(Vec::new());
            }
        }
        if size_bytes > self.limit_bytes {
            return Err(TransferError::TooLarge {
                size_bytes,
                limit_bytes: self.limit_bytes,
            });
        }
        if self.size_bytes.is_none() && part != 0 {
            return self
                .set_aside(part, size_bytes, encoded)
                .map(|()| Vec::new());
        }
        decode_part(&self.hash, size_bytes, part, &encoded, |_, _| {})?;
        let mut held = vec![part];
        if self.size_bytes.is_none() {
            self.size_bytes = Some(size_bytes);
            self.parts = vec![None; part_count(size_bytes) as usize];
            for (p, size, bytes) in std::mem::take(&mut self.early) {
                if size == size_bytes && (p as usize) < self.parts.len() {
                    self.keep(p, bytes);
                    held.push(p);
                }
            }
        }
        self.keep(part, encoded.into());
        held.sort_unstable();
        Ok(held)
    }

    fn keep(&mut self, part: u32, encoded: Arc<[u8]>) {
        self.parts[part as usize] = Some(encoded);
        self.held += 1;
    }

    /// Keeps a part that came before part 0, checked against its sender's
    /// size; dropped when as many wait already, or it is one already aside.
    fn set_aside(
        &mut self,
        part: u32,
        size_bytes: u64,
        encoded: Vec<u8>,
    ) -> Result<(), TransferError> {
        let full = self.early.len() + 1 >= EARLY_PARTS_MAX as usize;
        if full || self.early.iter().any(|(p, _, _)| *p == part) {
            return Ok(());
        }
        decode_part(&self.hash, size_bytes, part, &encoded, |_, _| {})?;
        self.early.push((part, size_bytes, encoded.into()));
        Ok(())
    }

    /// The whole blob, from the held parts (checked again on the way);
    /// `None` until complete.
    pub fn assemble(&self) -> Option<Result<Vec<u8>, TransferError>> {
        let size_bytes = self.size_bytes.filter(|_| self.is_complete())?;
        let mut blob = vec![0u8; usize::try_from(size_bytes).ok()?];
        for (part, encoded) in self.parts.iter().enumerate() {
            let encoded = encoded.as_deref().unwrap_or_default();
            let copied = decode_part(&self.hash, size_bytes, part as u32, encoded, |at, data| {
                let start = at as usize;
                if let Some(slot) = blob.get_mut(start..start + data.len()) {
                    slot.copy_from_slice(data);
                }
            });
            if let Err(err) = copied {
                return Some(Err(err));
            }
        }
        Some(Ok(blob))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blob(size: usize, seed: u8) -> Vec<u8> {
        (0..size)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn hash_of(bytes: &[u8]) -> ModelHash {
        *blake3::hash(bytes).as_bytes()
    }

    /// Fetches every part of `bytes` into a download, parts after 0 in `order`.
    fn fetch_all(bytes: &[u8], order: impl Iterator<Item = u32>) -> Download {
        let outboard = Outboard::of(bytes);
        let mut download = Download::new(outboard.hash(), u64::MAX);
        let size = bytes.len() as u64;
        for part in std::iter::once(0).chain(order) {
            let encoded = encode_part(bytes, &outboard, part).expect("encodes");
            assert_eq!(
                download.accept(part, size, encoded).expect("verifies"),
                vec![part]
            );
        }
        download
    }

    #[test]
    fn parts_cover_the_blob_and_the_first_proves_the_size() {
        assert_eq!(part_count(0), 1);
        assert_eq!(part_count(1), 1);
        assert_eq!(part_count(PART_BYTES), 1);
        assert_eq!(part_count(PART_BYTES + 1), 2);
        let size = 3 * PART_BYTES + 5;
        let last = ChunkNum::chunks(size).0 - 1;
        assert!(part_ranges(size, 0).contains(&ChunkNum(last)));
        assert!(!part_ranges(size, 1).contains(&ChunkNum(last)));
        assert!(part_ranges(size, 3).contains(&ChunkNum(last)));
    }

    #[test]
    fn a_blob_fetched_in_parts_in_any_order_is_the_blob() {
        let bytes = blob(3 * PART_BYTES as usize + 777, 3);
        let download = fetch_all(&bytes, [3, 1, 2].into_iter());
        assert!(download.is_complete());
        assert_eq!(
            download.assemble().expect("complete").expect("valid"),
            bytes
        );
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_part_is_refused() {
        let bytes = blob(PART_BYTES as usize + 100, 9);
        let outboard = Outboard::of(&bytes);
        let good = encode_part(&bytes, &outboard, 1).expect("encodes");
        let mut download = fetch_all(&bytes, std::iter::empty());
        for at in [0, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            let refused = download.accept(1, bytes.len() as u64, bad);
            assert!(
                matches!(refused, Err(TransferError::Unverified { part: 1, .. })),
                "byte {at}: {refused:?}"
            );
        }
        assert_eq!(download.accept(1, bytes.len() as u64, good), Ok(vec![1]));
    }

    #[test]
    fn a_false_size_is_refused_with_part_zero() {
        let bytes = blob(2 * PART_BYTES as usize + 10, 1);
        let outboard = Outboard::of(&bytes);
        let encoded = encode_part(&bytes, &outboard, 0).expect("encodes");
        let size = bytes.len() as u64;
        for claimed in [size - 1, size + 1, size + PART_BYTES, 3 * PART_BYTES] {
            let mut download = Download::new(outboard.hash(), u64::MAX);
            let refused = download.accept(0, claimed, encoded.clone());
            assert!(refused.is_err(), "size {claimed} accepted");
            assert_eq!(download.size_bytes(), None);
        }
    }

    #[test]
    fn trailing_bytes_and_parts_past_the_end_are_refused() {
        let bytes = blob(1000, 2);
        let outboard = Outboard::of(&bytes);
        let mut encoded = encode_part(&bytes, &outboard, 0).expect("encodes");
        encoded.push(0);
        let hash = outboard.hash();
        assert!(decode_part(&hash, 1000, 0, &encoded, |_, _| {}).is_err());
        assert!(matches!(
            encode_part(&bytes, &outboard, 1),
            Err(TransferError::NoSuchPart { part: 1, .. })
        ));
    }

    #[test]
    fn a_blob_over_the_limit_is_refused_before_decoding() {
        let bytes = blob(5000, 4);
        let outboard = Outboard::of(&bytes);
        let encoded = encode_part(&bytes, &outboard, 0).expect("encodes");
        let mut download = Download::new(outboard.hash(), 4096);
        assert!(matches!(
            download.accept(0, 5000, encoded),
            Err(TransferError::TooLarge { .. })
        ));
    }

    #[test]
    fn parts_before_part_zero_wait_aside_for_the_size_it_proves() {
        let bytes = blob(3 * PART_BYTES as usize, 5);
        let outboard = Outboard::of(&bytes);
        let size = bytes.len() as u64;
        let part = |i| encode_part(&bytes, &outboard, i).expect("encodes");
        let mut download = Download::new(outboard.hash(), u64::MAX);
        assert_eq!(download.missing().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(download.accept(1, size, part(1)), Ok(vec![]));
        assert_eq!(download.missing().collect::<Vec<_>>(), vec![0]);
        assert_eq!(download.parts_held(), 0);
        assert_eq!(download.accept(0, size, part(0)), Ok(vec![0, 1]));
        assert_eq!(download.accept(0, size, part(0)), Ok(vec![]));
        assert_eq!(download.missing().collect::<Vec<_>>(), vec![2]);
        assert!(download.is_past_end(3));
        assert_eq!(
            download.accept(2, size + 1, part(2)),
            Err(TransferError::SizeMismatch {
                claimed_bytes: size + 1,
                proven_bytes: size
            })
        );
        assert_eq!(download.parts_held(), 2);
    }

    #[test]
    fn a_part_aside_for_a_false_size_is_dropped_when_part_zero_proves_another() {
        let bytes = blob(2 * PART_BYTES as usize, 6);
        let outboard = Outboard::of(&bytes);
        let size = bytes.len() as u64;
        let mut download = Download::new(outboard.hash(), u64::MAX);
        let other_size = 3 * PART_BYTES;
        let _ = download.accept(
            1,
            other_size,
            encode_part(&bytes, &outboard, 1).expect("encodes"),
        );
        let zero = encode_part(&bytes, &outboard, 0).expect("encodes");
        assert_eq!(download.accept(0, size, zero), Ok(vec![0]));
        assert_eq!(download.missing().collect::<Vec<_>>(), vec![1]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any size, any order of the parts after the first: the assembled
        /// blob is the blob.
        #[test]
        fn any_blob_in_any_part_order_reassembles(
            size in 1usize..(3 * PART_BYTES as usize + 2048),
            seed in any::<u8>(),
            rotate in 0usize..4,
        ) {
            let bytes = blob(size, seed);
            let count = part_count(size as u64);
            let mut order: Vec<u32> = (1..count).collect();
            let len = order.len().max(1);
            order.rotate_left(rotate % len);
            let download = fetch_all(&bytes, order.into_iter());
            prop_assert!(download.is_complete());
            prop_assert_eq!(download.assemble().expect("complete").expect("valid"), bytes.clone());
            prop_assert_eq!(hash_of(&bytes), download.hash);
        }
    }
}
