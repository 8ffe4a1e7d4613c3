//! Incremental UTF-8 validation that fails as early as possible.
//!
//! RFC 6455 §8.1 asks an endpoint to fail the connection when text is not valid UTF-8. Text
//! arrives in fragments and TCP segments, so a code point may be split anywhere. This validator
//! keeps at most 3 bytes of an unfinished code point and reports an error as soon as the bytes
//! seen can no longer start a valid sequence (Autobahn 6.4.x check that a peer fails fast,
//! before the rest of a frame arrives).

/// The bytes are not (and can no longer become) valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8 in text")]
pub struct InvalidUtf8;

/// Validates a text message fed in arbitrary pieces.
///
/// ```
/// use duplex_proto::utf8::Utf8Validator;
/// let euro = "€".as_bytes(); // e2 82 ac
/// let mut v = Utf8Validator::default();
/// v.feed(&euro[..1]).unwrap();
/// v.feed(&euro[1..]).unwrap();
/// v.finish().unwrap();
///
/// let mut v = Utf8Validator::default();
/// assert!(v.feed(&[0xe2, 0x28]).is_err()); // fails at once, not at the end
/// ```
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// Length of the sequence a valid lead byte starts.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 1,
    }
}

impl Utf8Validator {
    /// Validates the next piece. Bytes of a code point cut at the end are kept for the next call.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = sequence_len(self.pending[0]).saturating_sub(have);
            let take = need.min(data.len());
            self.pending[have..have + take].copy_from_slice(&data[..take]);
            let now = have + take;
            match simdutf8::compat::from_utf8(&self.pending[..now]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix; `take == data.len()` here.
                    self.pending_len = now as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
            data = &data[take..];
        }
        match simdutf8::compat::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let rest = &data[e.valid_up_to()..];
                self.pending[..rest.len()].copy_from_slice(rest);
                self.pending_len = rest.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the text: an unfinished code point is an error. Resets for the next message.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }

    /// Forgets any unfinished code point.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_split(data: &[u8], at: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut start = 0;
        for &cut in at {
            let cut = cut.clamp(start, data.len());
            v.feed(&data[start..cut])?;
            start = cut;
        }
        v.feed(&data[start..])?;
        v.finish()
    }

    #[test]
    fn fails_fast_on_impossible_prefix() {
        let mut v = Utf8Validator::default();
        // ce ba e1 bd b9 cf 83 ce bc ce b5 | ed a0 80 (surrogate) : fails at ed a0.
        v.feed(&[0xce, 0xba, 0xe1, 0xbd]).unwrap();
        v.feed(&[0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed])
            .unwrap();
        assert!(v.feed(&[0xa0]).is_err());
    }

    #[test]
    fn above_max_code_point_fails_on_second_byte() {
        let mut v = Utf8Validator::default();
        v.feed(&[0xf4]).unwrap();
        assert!(v.feed(&[0x90]).is_err());
    }

    #[test]
    fn truncated_sequence_fails_at_finish() {
        let mut v = Utf8Validator::default();
        v.feed(&[0xe2, 0x82]).unwrap();
        assert!(v.finish().is_err());
        // and the validator is usable again afterwards
        v.feed(b"ok").unwrap();
        v.finish().unwrap();
    }

    #[test]
    fn pending_bytes_completed_one_at_a_time() {
        let s = "𝄞".as_bytes(); // 4 bytes
        assert!(feed_split(s, &[1, 2, 3]).is_ok());
    }

    proptest! {
        #[test]
        fn agrees_with_std_on_any_split(data in proptest::collection::vec(any::<u8>(), 0..64),
                                        cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(feed_split(&data, &cuts).is_ok(), std::str::from_utf8(&data).is_ok());
        }

        #[test]
        fn valid_text_passes_on_any_split(s in ".{0,40}", cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert!(feed_split(s.as_bytes(), &cuts).is_ok());
        }
    }
}
