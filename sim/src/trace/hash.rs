//! The determinism fingerprint: a fixed 64-bit hash, the same in every
//! process and build (never `RandomState`).
//!
//! Bytes go through FNV-1a; integers are folded in whole with a
//! multiply-xorshift step. The final value goes through the SplitMix64
//! finaliser so that nearby states give unrelated fingerprints.

/// An incremental, order-sensitive hash.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fingerprint {
    state: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const FOLD_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl Default for Fingerprint {
    fn default() -> Fingerprint {
        Fingerprint::new()
    }
}

impl Fingerprint {
    /// The fingerprint of nothing.
    pub const fn new() -> Fingerprint {
        Fingerprint { state: FNV_OFFSET }
    }

    /// Fold in one integer.
    #[inline]
    pub fn write_u64(&mut self, value: u64) {
        let mixed = (self.state ^ value).wrapping_mul(FOLD_MULTIPLIER);
        self.state = mixed ^ (mixed >> 29);
    }

    /// Fold in a byte string, its length included, so that `("ab", "c")`
    /// and `("a", "bc")` differ.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        let mut state = self.state;
        for byte in bytes {
            state ^= u64::from(*byte);
            state = state.wrapping_mul(FNV_PRIME);
        }
        self.state = state;
        self.write_u64(bytes.len() as u64);
    }

    /// The current value, finalised.
    pub fn value(&self) -> u64 {
        finalise(self.state)
    }
}

/// Combine two fingerprints' values into one, order-sensitively.
pub fn combine(first: u64, second: u64) -> u64 {
    let mut fingerprint = Fingerprint::new();
    fingerprint.write_u64(first);
    fingerprint.write_u64(second);
    fingerprint.value()
}

fn finalise(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_boundaries_change_the_fingerprint() {
        let mut ab_c = Fingerprint::new();
        ab_c.write_bytes(b"ab");
        ab_c.write_bytes(b"c");
        let mut a_bc = Fingerprint::new();
        a_bc.write_bytes(b"a");
        a_bc.write_bytes(b"bc");
        assert_ne!(ab_c.value(), a_bc.value());

        let mut one_two = Fingerprint::new();
        one_two.write_u64(1);
        one_two.write_u64(2);
        let mut two_one = Fingerprint::new();
        two_one.write_u64(2);
        two_one.write_u64(1);
        assert_ne!(one_two.value(), two_one.value());
    }

    #[test]
    fn fingerprint_is_pinned_across_builds() {
        // Part of the replay format: recorded trace hashes depend on it.
        let mut fingerprint = Fingerprint::new();
        fingerprint.write_u64(42);
        fingerprint.write_bytes(b"faultline");
        assert_eq!(fingerprint.value(), PINNED);
    }

    const PINNED: u64 = 13_471_191_189_860_139_989;
}
