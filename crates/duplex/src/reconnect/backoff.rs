//! Exponential backoff with full jitter: how long to wait before the next connection attempt.
//!
//! This module owns only the arithmetic: no clock, no sleeping, no sockets. The caller says
//! when an attempt is about to be made ([`Backoff::next_delay`]) and how long the last
//! connection stayed up ([`Backoff::connection_lasted`]); the randomness comes through the
//! [`RandomSource`] seam so that tests can make it deterministic.
//!
//! The delay before attempt `n` (counting from 1 since the last reset) is drawn uniformly from
//! `[0, min(cap, base · 2^(n-1))]`: "full jitter" (see the AWS Architecture Blog, *Exponential
//! Backoff And Jitter*, 2015). Spreading each wait over the whole range, rather than adding a
//! little noise to a fixed delay, is what stops a crowd of clients dropped by the same server
//! restart from coming back in synchronized waves.

use std::time::Duration;

/// A source of uniformly distributed 64-bit numbers for the jitter.
///
/// The default is [`SplitMix64`] seeded from the process's hash randomness; tests supply
/// their own (a fixed sequence, or the extremes `0` and `u64::MAX`) to check the bounds.
/// Jitter only needs to decorrelate clients, not to be unpredictable to an attacker.
pub trait RandomSource: Send {
    /// The next number, uniform over all of `u64`.
    fn next_u64(&mut self) -> u64;
}

/// A small, fast, non-cryptographic generator (Steele, Lea and Flood's SplitMix64).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator seeded differently in every process and every call: from the random keys
    /// the standard library draws for `HashMap`, mixed with the current time.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            hasher.write_u128(now.as_nanos());
        }
        SplitMix64::new(hasher.finish())
    }
}

impl RandomSource for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The backoff parameters.
///
/// ```
/// use duplex::reconnect::BackoffConfig;
/// use std::time::Duration;
/// let config = BackoffConfig {
///     base: Duration::from_millis(100),
///     ..BackoffConfig::default()
/// };
/// assert_eq!(config.cap, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The ceiling of the first wait; each further attempt doubles it. Default 500 ms: a
    /// server that restarts in about a second is found again after one or two tries, and the
    /// first wait of a crowd of clients is spread over half a second.
    pub base: Duration,
    /// The largest ceiling. Default 30 s: long enough that a long outage costs the server
    /// about one connection attempt per client per 15 s on average, short enough that a
    /// client comes back within half a minute of the server.
    pub cap: Duration,
    /// A connection that stayed open at least this long resets the backoff (the next wait is
    /// drawn from `[0, base]` again, and the attempt count starts over). A shorter one does
    /// not: a server that accepts and then drops every connection at once is retried with
    /// growing waits, not hammered. Default 30 s.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            reset_after: Duration::from_secs(30),
        }
    }
}

/// The state of an exponential backoff with full jitter.
///
/// ```
/// use duplex::reconnect::{Backoff, BackoffConfig, RandomSource};
/// use std::time::Duration;
///
/// /// Always the largest number: every delay is its ceiling.
/// struct Max;
/// impl RandomSource for Max {
///     fn next_u64(&mut self) -> u64 { u64::MAX }
/// }
///
/// let config = BackoffConfig {
///     base: Duration::from_millis(100),
///     cap: Duration::from_millis(350),
///     reset_after: Duration::from_secs(10),
/// };
/// let mut backoff = Backoff::with_rng(config, Max);
/// let delays: Vec<_> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
/// assert_eq!(delays, [100, 200, 350, 350]);
/// backoff.connection_lasted(Duration::from_secs(11)); // stayed up long enough: reset
/// assert_eq!(backoff.next_delay(), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff<R = SplitMix64> {
    config: BackoffConfig,
    /// Delays handed out since the last reset.
    attempt: u32,
    rng: R,
}

impl Backoff<SplitMix64> {
    /// A backoff with its own randomly seeded generator.
    pub fn new(config: BackoffConfig) -> Self {
        Backoff::with_rng(config, SplitMix64::from_entropy())
    }
}

impl<R: RandomSource> Backoff<R> {
    /// A backoff drawing its jitter from `rng`.
    pub fn with_rng(config: BackoffConfig, rng: R) -> Self {
        Backoff {
            config,
            attempt: 0,
            rng,
        }
    }

    /// The parameters.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// How many delays were handed out since the last reset: the number of the attempt the
    /// last [`next_delay`](Self::next_delay) was for (0 before any).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the wait before attempt `attempt` (counted from 1):
    /// `min(cap, base · 2^(attempt-1))`, without overflow for any `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1);
        let BackoffConfig { base, cap, .. } = self.config;
        if exponent >= u32::BITS {
            return cap;
        }
        base.saturating_mul(1u32 << exponent).min(cap)
    }

    /// The wait before the next attempt: uniform in `[0, ceiling(attempt)]`, both ends
    /// included. Counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.ceiling(self.attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        // Multiply-shift maps the 2^64 outcomes onto 0..=nanos: 0 -> 0, u64::MAX -> nanos.
        let scaled = (u128::from(self.rng.next_u64()) * (u128::from(nanos) + 1)) >> 64;
        Duration::from_nanos(scaled as u64)
    }

    /// Starts over: the next wait is drawn from `[0, base]` and counts as attempt 1.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Reports that a connection ended after being open for `up`: resets the backoff when
    /// `up >= reset_after`, and says whether it did.
    pub fn connection_lasted(&mut self, up: Duration) -> bool {
        let reset = up >= self.config.reset_after;
        if reset {
            self.reset();
        }
        reset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out a fixed sequence, round and round.
    struct Fixed(Vec<u64>, usize);

    impl RandomSource for Fixed {
        fn next_u64(&mut self) -> u64 {
            let value = self.0[self.1 % self.0.len()];
            self.1 += 1;
            value
        }
    }

    fn config(base_ms: u64, cap_ms: u64) -> BackoffConfig {
        BackoffConfig {
            base: Duration::from_millis(base_ms),
            cap: Duration::from_millis(cap_ms),
            reset_after: Duration::from_secs(5),
        }
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn largest_draw_is_the_ceiling_which_doubles_up_to_the_cap() {
        let mut backoff = Backoff::with_rng(config(10, 100), Fixed(vec![u64::MAX], 0));
        let delays: Vec<_> = (0..7).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            delays,
            [ms(10), ms(20), ms(40), ms(80), ms(100), ms(100), ms(100)]
        );
        assert_eq!(backoff.attempt(), 7);
    }

    #[test]
    fn smallest_draw_is_zero() {
        let mut backoff = Backoff::with_rng(config(10, 100), Fixed(vec![0], 0));
        for _ in 0..10 {
            assert_eq!(backoff.next_delay(), Duration::ZERO);
        }
    }

    #[test]
    fn a_middle_draw_is_proportional_to_the_ceiling() {
        let half = u64::MAX / 2 + 1; // 2^63: exactly half of the range
        let mut backoff = Backoff::with_rng(config(10, 1000), Fixed(vec![half], 0));
        assert_eq!(backoff.next_delay(), Duration::from_micros(5000));
        assert_eq!(backoff.next_delay(), ms(10));
        assert_eq!(backoff.next_delay(), ms(20));
    }

    #[test]
    fn delays_stay_within_bounds_and_spread_over_the_whole_range() {
        let mut backoff = Backoff::with_rng(config(50, 400), SplitMix64::new(7));
        for attempt in 1..=6u32 {
            let ceiling = backoff.ceiling(attempt);
            assert_eq!(ceiling, ms(50 * (1 << (attempt - 1))).min(ms(400)));
            let mut samples = Vec::new();
            for _ in 0..2000 {
                let before = backoff.attempt();
                samples.push(backoff.next_delay());
                // Stay on this attempt: measure one ceiling at a time.
                backoff.attempt = before;
            }
            backoff.attempt += 1;
            let min = *samples.iter().min().unwrap();
            let max = *samples.iter().max().unwrap();
            assert!(max <= ceiling, "attempt {attempt}: {max:?} > {ceiling:?}");
            // Full jitter: draws reach both ends of [0, ceiling], not just a band near the top.
            assert!(min < ceiling / 20, "attempt {attempt}: min {min:?}");
            assert!(max > ceiling * 19 / 20, "attempt {attempt}: max {max:?}");
            let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
            assert!(
                mean > ceiling * 2 / 5 && mean < ceiling * 3 / 5,
                "attempt {attempt}: mean {mean:?} of [0, {ceiling:?}]"
            );
        }
    }

    #[test]
    fn same_seed_same_delays_different_seed_different_delays() {
        let draw = |seed| {
            let mut backoff = Backoff::with_rng(config(100, 10_000), SplitMix64::new(seed));
            (0..8).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn cap_holds_for_any_attempt_without_overflow() {
        let mut backoff = Backoff::with_rng(config(1000, 30_000), Fixed(vec![u64::MAX], 0));
        assert_eq!(backoff.ceiling(0), ms(1000));
        assert_eq!(backoff.ceiling(31), ms(30_000));
        assert_eq!(backoff.ceiling(32), ms(30_000));
        assert_eq!(backoff.ceiling(33), ms(30_000));
        assert_eq!(backoff.ceiling(u32::MAX), ms(30_000));
        backoff.attempt = u32::MAX - 1;
        assert_eq!(backoff.next_delay(), ms(30_000));
        assert_eq!(backoff.next_delay(), ms(30_000), "attempt count saturates");
        assert_eq!(backoff.attempt(), u32::MAX);
    }

    #[test]
    fn huge_base_and_cap_do_not_overflow() {
        let huge = BackoffConfig {
            base: Duration::MAX,
            cap: Duration::MAX,
            reset_after: Duration::MAX,
        };
        let mut backoff = Backoff::with_rng(huge, Fixed(vec![u64::MAX], 0));
        assert_eq!(backoff.ceiling(40), Duration::MAX);
        // The draw is limited to u64 nanoseconds (584 years).
        assert_eq!(backoff.next_delay(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn base_above_cap_is_capped() {
        let backoff = Backoff::with_rng(config(500, 100), Fixed(vec![0], 0));
        assert_eq!(backoff.ceiling(1), ms(100));
    }

    #[test]
    fn long_connection_resets_short_one_does_not() {
        let mut backoff = Backoff::with_rng(config(10, 1000), Fixed(vec![u64::MAX], 0));
        for _ in 0..4 {
            backoff.next_delay();
        }
        assert!(!backoff.connection_lasted(Duration::from_millis(4999)));
        assert_eq!(backoff.attempt(), 4);
        assert_eq!(backoff.next_delay(), ms(160), "flapping keeps growing");
        assert!(backoff.connection_lasted(Duration::from_secs(5)));
        assert_eq!(backoff.attempt(), 0);
        assert_eq!(backoff.next_delay(), ms(10));
        backoff.reset();
        assert_eq!(backoff.next_delay(), ms(10));
    }
}
