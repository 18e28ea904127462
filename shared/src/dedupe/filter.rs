//! A split-block Bloom filter (the layout Parquet and Impala use): 32-byte
//! blocks of eight 32-bit words, one bit set per word, so a lookup touches
//! one cache line. It answers "maybe held" or "certainly not"; the dedupe
//! window confirms a "maybe" against the ids on disk. The bytes are the
//! saved form (little-endian words), so a filter is written beside its ids
//! and read back as is.

/// Odd constants that pick one bit of each word from the low half of a hash.
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

/// Bytes per block.
pub const BLOCK_BYTES: usize = 32;

/// The filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedBloom {
    blocks: Vec<[u32; 8]>,
}

impl BlockedBloom {
    /// A filter for `keys` keys at `bits_per_key` bits each (at least one block).
    pub fn new(keys: usize, bits_per_key: usize) -> Self {
        let blocks = (keys.saturating_mul(bits_per_key))
            .div_ceil(BLOCK_BYTES * 8)
            .max(1);
        BlockedBloom {
            blocks: vec![[0; 8]; blocks],
        }
    }

    #[inline]
    fn block(&self, hash: u64) -> usize {
        (((hash >> 32) * self.blocks.len() as u64) >> 32) as usize
    }

    #[inline]
    fn mask(hash: u64) -> [u32; 8] {
        let key = hash as u32;
        SALT.map(|salt| 1u32 << (key.wrapping_mul(salt) >> 27))
    }

    /// Adds a key by its 64-bit hash.
    #[inline]
    pub fn insert(&mut self, hash: u64) {
        let b = self.block(hash);
        let mask = Self::mask(hash);
        for (w, m) in self.blocks[b].iter_mut().zip(mask) {
            *w |= m;
        }
    }

    /// Whether the key with `hash` may have been added (false: certainly not).
    #[inline]
    pub fn may_contain(&self, hash: u64) -> bool {
        let block = &self.blocks[self.block(hash)];
        block.iter().zip(Self::mask(hash)).all(|(w, m)| w & m != 0)
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.blocks.len() * BLOCK_BYTES
    }

    /// The saved form.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.blocks_le().flatten().collect()
    }

    /// The saved form a block at a time, for writing a large filter without a copy.
    pub fn blocks_le(&self) -> impl Iterator<Item = [u8; BLOCK_BYTES]> + '_ {
        self.blocks.iter().map(|block| {
            let mut out = [0u8; BLOCK_BYTES];
            for (o, w) in out.chunks_exact_mut(4).zip(block) {
                o.copy_from_slice(&w.to_le_bytes());
            }
            out
        })
    }

    /// A filter from its saved form; `None` unless it is a whole number of blocks.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(BLOCK_BYTES) {
            return None;
        }
        let blocks = bytes
            .chunks_exact(BLOCK_BYTES)
            .map(|b| {
                let mut block = [0u32; 8];
                for (w, c) in block.iter_mut().zip(b.chunks_exact(4)) {
                    *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
                block
            })
            .collect();
        Some(BlockedBloom { blocks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> u64 {
        let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    #[test]
    fn holds_every_key_with_few_false_positives_and_round_trips() {
        let n = 100_000u64;
        let mut f = BlockedBloom::new(n as usize, 12);
        for i in 0..n {
            f.insert(hash(i));
        }
        assert!((0..n).all(|i| f.may_contain(hash(i))));
        let false_positives = (n..n + 100_000).filter(|&i| f.may_contain(hash(i))).count();
        // About 0.5% at 12 bits a key.
        assert!(false_positives < 1_000, "{false_positives} in 100,000");
        assert_eq!(f.memory_bytes(), (n as usize * 12).div_ceil(256) * 32);
        let back = BlockedBloom::from_bytes(&f.to_bytes()).unwrap();
        assert_eq!(back, f);
        assert!(BlockedBloom::from_bytes(&[0; 31]).is_none());
    }
}
