//! A 256-bit signed integer, just enough to sum `i128` results exactly.
//!
//! The sum of up to 2^64 results of up to 2^127 each needs 191 bits plus a sign, more than any
//! primitive. Two's complement in two `u128` halves (low, then high); adding an `i128` is a
//! sign-extended add with one carry, cheap enough for the per-item hot path.

use std::fmt;

/// Exact signed 256-bit integer: an accumulator for sums of `i128` values.
///
/// ```
/// use powerpool_shared::I256;
/// let mut sum = I256::ZERO;
/// for _ in 0..4 {
///     sum.add_i128(i128::MAX);
/// }
/// assert_eq!(sum.to_string(), "680564733841876926926749214863536422908");
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct I256 {
    lo: u128,
    hi: u128,
}

impl I256 {
    pub const ZERO: I256 = I256 { lo: 0, hi: 0 };

    /// Adds an `i128`, sign-extended.
    #[inline]
    pub fn add_i128(&mut self, x: i128) {
        let (lo, carry) = self.lo.overflowing_add(x as u128);
        self.lo = lo;
        let ext = if x < 0 { u128::MAX } else { 0 };
        self.hi = self.hi.wrapping_add(ext).wrapping_add(u128::from(carry));
    }

    /// Adds another 256-bit value (wrapping at 2^256, which sums of `i128` never reach).
    pub fn add(&mut self, other: I256) {
        let (lo, carry) = self.lo.overflowing_add(other.lo);
        self.lo = lo;
        self.hi = self.hi.wrapping_add(other.hi).wrapping_add(u128::from(carry));
    }

    pub fn is_negative(&self) -> bool {
        (self.hi >> 127) == 1
    }

    fn negated(self) -> I256 {
        let (lo, carry) = (!self.lo).overflowing_add(1);
        I256 { lo, hi: (!self.hi).wrapping_add(u128::from(carry)) }
    }

    /// 32 little-endian bytes, two's complement.
    pub fn to_le_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&self.lo.to_le_bytes());
        out[16..].copy_from_slice(&self.hi.to_le_bytes());
        out
    }

    /// The inverse of [`I256::to_le_bytes`]; `None` unless `bytes` is exactly 32 long.
    pub fn from_le_bytes(bytes: &[u8]) -> Option<I256> {
        let bytes: &[u8; 32] = bytes.try_into().ok()?;
        let mut lo = [0u8; 16];
        let mut hi = [0u8; 16];
        lo.copy_from_slice(&bytes[..16]);
        hi.copy_from_slice(&bytes[16..]);
        Some(I256 { lo: u128::from_le_bytes(lo), hi: u128::from_le_bytes(hi) })
    }
}

impl From<i128> for I256 {
    fn from(x: i128) -> Self {
        let mut v = I256::ZERO;
        v.add_i128(x);
        v
    }
}

impl fmt::Display for I256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let negative = self.is_negative();
        let mut mag = if negative { self.negated() } else { *self };
        // Peel off 19 decimal digits at a time (10^19 < 2^64) by long division over u64 limbs.
        const TEN19: u64 = 10_000_000_000_000_000_000;
        let mut groups = Vec::with_capacity(5);
        loop {
            let limbs = [
                mag.hi >> 64,
                mag.hi & u128::from(u64::MAX),
                mag.lo >> 64,
                mag.lo & u128::from(u64::MAX),
            ];
            let mut rem: u128 = 0;
            let mut q = [0u128; 4];
            for (i, limb) in limbs.iter().enumerate() {
                let cur = (rem << 64) | limb;
                q[i] = cur / u128::from(TEN19);
                rem = cur % u128::from(TEN19);
            }
            mag = I256 { hi: (q[0] << 64) | q[1], lo: (q[2] << 64) | q[3] };
            groups.push(rem as u64);
            if mag == I256::ZERO {
                break;
            }
        }
        let mut digits = String::with_capacity(80);
        let mut iter = groups.iter().rev();
        if let Some(first) = iter.next() {
            digits.push_str(&first.to_string());
        }
        for g in iter {
            digits.push_str(&format!("{g:019}"));
        }
        f.pad_integral(!negative, "", &digits)
    }
}

impl fmt::Debug for I256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_bigint::BigInt;
    use proptest::prelude::*;

    #[test]
    fn small_values_print_like_integers() {
        assert_eq!(I256::ZERO.to_string(), "0");
        assert_eq!(I256::from(-1).to_string(), "-1");
        assert_eq!(I256::from(i128::MIN).to_string(), i128::MIN.to_string());
        assert_eq!(I256::from(i128::MAX).to_string(), i128::MAX.to_string());
    }

    #[test]
    fn many_maximal_squares_overflow_i128_and_stay_exact() {
        let sq = i128::from(i64::MIN) * i128::from(i64::MIN);
        let mut acc = I256::ZERO;
        let mut want = BigInt::from(0);
        for _ in 0..1000 {
            acc.add_i128(sq);
            want += BigInt::from(sq);
        }
        assert_eq!(acc.to_string(), want.to_string());
    }

    proptest! {
        #[test]
        fn sums_match_bigint(xs in proptest::collection::vec(any::<i128>(), 0..50)) {
            let mut acc = I256::ZERO;
            let mut halves = (I256::ZERO, I256::ZERO);
            let mut want = BigInt::from(0);
            for (i, &x) in xs.iter().enumerate() {
                acc.add_i128(x);
                if i % 2 == 0 { halves.0.add_i128(x) } else { halves.1.add_i128(x) }
                want += BigInt::from(x);
            }
            prop_assert_eq!(acc.to_string(), want.to_string());
            halves.0.add(halves.1);
            prop_assert_eq!(halves.0, acc);
            prop_assert_eq!(I256::from_le_bytes(&acc.to_le_bytes()), Some(acc));
        }
    }
}
