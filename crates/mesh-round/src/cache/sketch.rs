//! The adaptive policy's memory of how often blobs were asked for, held or
//! not: a count-min sketch of small saturating counters that halves itself
//! periodically, so old popularity fades (TinyLFU's "reset").
//!
//! ```text
//!   4 rows x width counters (u8, saturating at 15)
//!   increment(id): +1 in each row at index_r(id)      frequency(id): min over the rows
//!   every 10 x width increments: every counter halves
//! ```
//!
//! A blob id is a BLAKE3 hash, so its four 8-byte words are already
//! independent uniform hashes; each row takes one, mixed once more so ids
//! crafted by hand (in tests) spread too. Nothing is random: the same
//! sequence of ids gives the same estimates. Choosing colliding ids means
//! finding blobs whose hashes collide in the low bits of the chosen words,
//! and a node only caches blobs it asked for, so no seed is kept.
//!
//! The width follows the number of held blobs (the next power of two, at
//! least [`WIDTH_MIN`], at most [`WIDTH_MAX`]); growing it starts the counts
//! afresh, as Caffeine's sketch does.

use super::BlobId;

/// Rows of the sketch (independent hashes per id).
const ROWS: usize = 4;
/// Counters saturate here (four bits' worth, as in TinyLFU).
const COUNT_MAX: u8 = 15;
/// Narrowest row.
pub(crate) const WIDTH_MIN: usize = 16;
/// Widest row: 4 x 65,536 one-byte counters (256 KiB), enough for caches of
/// tens of thousands of blobs.
pub(crate) const WIDTH_MAX: usize = 1 << 16;
/// Increments between two halvings, per counter of a row.
const SAMPLE_PER_WIDTH: usize = 10;

/// A count-min sketch of access frequencies with periodic halving.
#[derive(Debug)]
pub(crate) struct FrequencySketch {
    counters: Vec<u8>,
    width: usize,
    additions: usize,
}

impl Default for FrequencySketch {
    fn default() -> Self {
        Self::with_width(WIDTH_MIN)
    }
}

impl FrequencySketch {
    fn with_width(width: usize) -> Self {
        let width = width.clamp(WIDTH_MIN, WIDTH_MAX).next_power_of_two();
        Self {
            counters: vec![0; ROWS * width],
            width,
            additions: 0,
        }
    }

    /// Widens the rows (and starts the counts afresh) when `entries` blobs
    /// outnumber the counters of a row.
    pub(crate) fn ensure_capacity(&mut self, entries: usize) {
        if entries > self.width && self.width < WIDTH_MAX {
            *self = Self::with_width(entries);
        }
    }

    /// Counts one access to `id`.
    pub(crate) fn increment(&mut self, id: &BlobId) {
        let mut added = false;
        for row in 0..ROWS {
            let i = self.index(id, row);
            if self.counters[i] < COUNT_MAX {
                self.counters[i] += 1;
                added = true;
            }
        }
        if added {
            self.additions += 1;
            if self.additions >= SAMPLE_PER_WIDTH * self.width {
                self.halve();
            }
        }
    }

    /// The estimated accesses to `id` since the counts were last halved (or
    /// a little more, for the halving and for collisions; never less).
    pub(crate) fn frequency(&self, id: &BlobId) -> u8 {
        (0..ROWS)
            .map(|row| self.counters[self.index(id, row)])
            .min()
            .unwrap_or(0)
    }

    /// Counters per row.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// Halves every counter: accesses long ago weigh half as much.
    fn halve(&mut self) {
        for counter in &mut self.counters {
            *counter >>= 1;
        }
        self.additions /= 2;
    }

    fn index(&self, id: &BlobId, row: usize) -> usize {
        let mut word = [0u8; 8];
        word.copy_from_slice(&id.0[row * 8..row * 8 + 8]);
        let mut h = u64::from_le_bytes(word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
        // The mask keeps the value below the width, which is a usize.
        row * self.width + (h as usize & (self.width - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> BlobId {
        BlobId::of(&n.to_le_bytes())
    }

    #[test]
    fn counts_accesses_and_saturates() {
        let mut sketch = FrequencySketch::default();
        for _ in 0..3 {
            sketch.increment(&id(1));
        }
        sketch.increment(&id(2));
        assert!(sketch.frequency(&id(1)) >= 3);
        assert!(sketch.frequency(&id(2)) >= 1);
        assert!(sketch.frequency(&id(1)) > sketch.frequency(&id(2)));
        for _ in 0..100 {
            sketch.increment(&id(1));
        }
        assert_eq!(sketch.frequency(&id(1)), COUNT_MAX);
    }

    #[test]
    fn halves_after_ten_counted_increments_per_counter() {
        let mut sketch = FrequencySketch::default();
        for _ in 0..12 {
            sketch.increment(&id(0));
        }
        assert_eq!(sketch.frequency(&id(0)), 12);
        // 16 counters per row: the 160th counted increment halves everything.
        let mut n = 0;
        let mut halved = false;
        while !halved && n < 1_000 {
            n += 1;
            let before = sketch.additions;
            sketch.increment(&id(n));
            halved = sketch.additions < before;
        }
        assert!(n <= 148, "halved after {n} more ids");
        assert_eq!(sketch.additions, 80);
        let halved = sketch.frequency(&id(0));
        assert!((6..=7).contains(&halved), "halved: {halved}");
    }

    #[test]
    fn widens_with_the_entries_and_starts_afresh() {
        let mut sketch = FrequencySketch::default();
        sketch.increment(&id(1));
        sketch.ensure_capacity(16);
        assert_eq!((sketch.width(), sketch.frequency(&id(1))), (16, 1));
        sketch.ensure_capacity(17);
        assert_eq!((sketch.width(), sketch.frequency(&id(1))), (32, 0));
        sketch.ensure_capacity(usize::MAX);
        assert_eq!(sketch.width(), WIDTH_MAX);
    }
}
