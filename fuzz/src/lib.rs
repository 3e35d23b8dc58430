//! Helpers shared by the fuzz targets: a reader of choices from the fuzzer's bytes and a
//! small deterministic generator for cut points.

/// Reads decisions from the front of a fuzz input; once it runs out every read is 0, so
/// every input, however short, means something.
#[derive(Debug)]
pub struct Choices<'a> {
    bytes: &'a [u8],
}

impl<'a> Choices<'a> {
    /// Reads from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// The next byte, 0 once exhausted.
    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&first, rest)) => {
                self.bytes = rest;
                first
            }
            None => 0,
        }
    }

    /// A number below `n` (n ≥ 1), from up to two bytes.
    pub fn below(&mut self, n: usize) -> usize {
        let value = if n <= 256 {
            usize::from(self.byte())
        } else {
            usize::from(self.byte()) << 8 | usize::from(self.byte())
        };
        value % n
    }

    /// Up to `max` bytes taken as they are.
    pub fn take(&mut self, max: usize) -> &'a [u8] {
        let len = self.below(max + 1).min(self.bytes.len());
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        taken
    }

    /// What is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Cut points for `len` bytes, from a seed: sorted, distinct, inside `1..len`. Piece sizes
/// vary from 1 byte to the whole, so both byte-at-a-time and large reads are exercised.
pub fn cut_points(seed: u64, len: usize) -> Vec<usize> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    if len < 2 {
        return Vec::new();
    }
    let mode = next() % 4;
    let mut cuts: Vec<usize> = match mode {
        // Every byte on its own.
        0 => (1..len).collect(),
        // A few large pieces.
        1 => (0..1 + next() % 3).map(|_| 1 + (next() as usize) % (len - 1)).collect(),
        // Many small pieces.
        _ => {
            let mut at = 0;
            let mut cuts = Vec::new();
            loop {
                at += 1 + (next() as usize) % if mode == 2 { 4 } else { 64 };
                if at >= len {
                    break cuts;
                }
                cuts.push(at);
            }
        }
    };
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}
