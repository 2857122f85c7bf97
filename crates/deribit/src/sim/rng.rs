//! A small deterministic random number generator (SplitMix64): the same seed
//! gives the same sequence on every platform and every build.

/// SplitMix64.
#[derive(Clone, Debug)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for one named stream, independent of every other name.
    pub(super) fn for_stream(seed: u64, name: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let mut rng = Self(seed ^ h);
        rng.next_u64();
        rng
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub(super) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::for_stream(7, "BTC-PERPETUAL");
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::for_stream(7, "BTC-PERPETUAL");
                move |_| r.next_u64()
            })
            .collect();
        let c = Rng::for_stream(7, "ETH-PERPETUAL").next_u64();
        assert_eq!(a, b);
        assert_ne!(a[0], c);
        assert_eq!(
            Rng::new(0).next_u64(),
            0xe220_a839_7b1d_cdaf,
            "SplitMix64 reference value"
        );
    }
}
