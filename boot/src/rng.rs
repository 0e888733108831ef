//! A small seeded PRNG (xorshift64*), so every run is reproducible from `seed=N`.

#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, never 0
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }

    /// A size in `lo..=hi`, log-uniform-ish: mostly small, sometimes large.
    pub fn size(&mut self, lo: usize, hi: usize) -> usize {
        let bits = usize::BITS - (hi.max(1)).leading_zeros();
        let b = 1 + self.below(bits as u64) as u32;
        let cap = if b >= usize::BITS {
            hi
        } else {
            (1usize << b).min(hi)
        };
        lo + self.below((cap.saturating_sub(lo) + 1) as u64) as usize
    }
}
