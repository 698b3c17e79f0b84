//! PINs keygate generates for the service desk: 6 to 8 decimal digits, uniformly drawn, never
//! one a guesser tries first. A drawn PIN is refused and drawn again when it is on the
//! blocklist of common PINs, is one digit repeated (`000000`), steps through consecutive
//! digits up or down (`123456`, `876543`), or repeats a short pattern (`121212`, `123123`).
//! Production draws from [`rand::rngs::OsRng`]; tests pass a seeded RNG.

use rand::{Rng, RngCore};

use crate::device::Pin;

/// Common PINs from published PIN-frequency studies that none of the structural rules catch.
const BLOCKLIST: &[&str] = &[
    "112233", "102030", "111222", "147258", "159753", "123321", "654321", "696969", "131313",
    "520520", "789456", "147852", "258369", "159357", "198419", "199119", "200000", "000007",
    "11223344", "12344321", "13579246", "19841984", "20102010", "12121985", "88888889",
];

/// Whether keygate would refuse to hand out `pin` (see the module docs).
pub fn is_weak(pin: &str) -> bool {
    let d: Vec<i32> = pin
        .bytes()
        .map(|b| i32::from(b) - i32::from(b'0'))
        .collect();
    if d.len() < 2 {
        return true;
    }
    let steps: Vec<i32> = d.windows(2).map(|w| w[1] - w[0]).collect();
    let monotone_run = steps.iter().all(|s| *s == steps[0]) && steps[0].abs() <= 1;
    let short_period =
        (1..=d.len() / 2).any(|p| d.len() % p == 0 && d.chunks(p).all(|c| c == &d[..p]));
    monotone_run || short_period || BLOCKLIST.contains(&pin)
}

/// A PIN of `len` digits (clamped to 6..=8) that [`is_weak`] does not refuse.
pub fn generate_pin(rng: &mut impl RngCore, len: usize) -> Pin {
    let len = len.clamp(6, 8);
    loop {
        let pin: String = (0..len)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect();
        if !is_weak(&pin) {
            return Pin::new(pin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn generated_pins_are_six_to_eight_digits_and_never_weak() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for len in [4, 6, 7, 8, 12] {
            for _ in 0..500 {
                let pin = generate_pin(&mut rng, len);
                let p = pin.expose();
                assert_eq!(p.len(), len.clamp(6, 8));
                assert!(p.bytes().all(|b| b.is_ascii_digit()), "{p}");
                assert!(!is_weak(p), "{p}");
            }
        }
    }

    #[test]
    fn weak_pins_are_refused() {
        for p in [
            "000000", "999999", "123456", "234567", "876543", "987654", "12345678", "121212",
            "123123", "12341234", "112233", "654321", "147258", "11223344",
        ] {
            assert!(is_weak(p), "{p} should be weak");
        }
        for p in ["583920", "7391046", "20587143", "124578"] {
            assert!(!is_weak(p), "{p} should pass");
        }
    }

    /// An RNG that yields a weak PIN first: the generator draws again.
    #[test]
    fn a_weak_draw_is_drawn_again() {
        struct Scripted(Vec<u32>);
        impl RngCore for Scripted {
            fn next_u32(&mut self) -> u32 {
                self.0.remove(0)
            }
            fn next_u64(&mut self) -> u64 {
                u64::from(self.next_u32())
            }
            fn fill_bytes(&mut self, dest: &mut [u8]) {
                for chunk in dest.chunks_mut(4) {
                    let word = self.next_u32().to_le_bytes();
                    chunk.copy_from_slice(&word[..chunk.len()]);
                }
            }
            fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
                self.fill_bytes(dest);
                Ok(())
            }
        }
        // rand 0.8's gen_range(0..10) maps a u32 `x` to (x * 10) >> 32 (widening multiply);
        // the middle of digit k's slice is (k * 2^32 + 2^31) / 10, well inside the accept zone.
        let digit = |c: char| ((u64::from(c.to_digit(10).unwrap()) << 32 | 1 << 31) / 10) as u32;
        let script = "123456583920".chars().map(digit).collect();
        let mut rng = Scripted(script);
        assert_eq!(generate_pin(&mut rng, 6).expose(), "583920");
        assert!(rng.0.is_empty());
    }

    #[test]
    fn seeded_generation_is_deterministic() {
        let a = generate_pin(&mut ChaCha20Rng::seed_from_u64(42), 6);
        let b = generate_pin(&mut ChaCha20Rng::seed_from_u64(42), 6);
        assert_eq!(a, b);
        let c = generate_pin(&mut ChaCha20Rng::seed_from_u64(43), 6);
        assert_ne!(a.expose(), c.expose());
    }
}
