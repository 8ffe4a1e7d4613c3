//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, repeating.
//!
//! This runs over every byte a server receives and every byte a client sends, so it works on
//! 16-byte blocks that the compiler turns into vector instructions; only the tail is bytewise.

/// XORs `data` with `key`, where `data` starts `offset` bytes into the frame payload
/// (so a payload can be unmasked in pieces as it arrives).
///
/// Masking is its own inverse: applying it twice restores the input.
///
/// ```
/// use duplex_proto::mask::apply_mask;
/// let key = [1, 2, 3, 4];
/// let mut whole = *b"hello, world";
/// apply_mask(&mut whole, key, 0);
/// let mut pieces = *b"hello, world";
/// let (a, b) = pieces.split_at_mut(5);
/// apply_mask(a, key, 0);
/// apply_mask(b, key, 5);
/// assert_eq!(whole, pieces);
/// ```
#[inline]
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    let key32 = u32::from_ne_bytes(key);
    // The 4-byte key repeated four times, in memory order.
    let key128 = u128::from(key32) * 0x0000_0001_0000_0001_0000_0001_0000_0001;
    let (blocks, tail) = data.as_chunks_mut::<16>();
    for block in blocks {
        *block = (u128::from_ne_bytes(*block) ^ key128).to_ne_bytes();
    }
    // Blocks are a multiple of 4 long, so the tail starts at key position 0.
    for (i, byte) in tail.iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// The key as seen from `offset` bytes into the payload.
#[inline]
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut rotated = key;
    rotated.rotate_left(offset & 3);
    rotated
}

/// Bytewise reference implementation, kept for tests and benchmarks.
#[doc(hidden)]
pub fn apply_mask_bytewise(data: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[(offset + i) & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: masked "Hello" with key 37 fa 21 3d.
        let mut data = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&data, b"Hello");
    }

    proptest! {
        #[test]
        fn matches_bytewise_at_any_offset(data in proptest::collection::vec(any::<u8>(), 0..200),
                                          key in any::<[u8; 4]>(), offset in 0usize..16) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast, key, offset);
            apply_mask_bytewise(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn split_anywhere_equals_whole(data in proptest::collection::vec(any::<u8>(), 0..100),
                                       key in any::<[u8; 4]>(), split in 0usize..100) {
            let split = split.min(data.len());
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);
            let mut parts = data;
            let (a, b) = parts.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            prop_assert_eq!(whole, parts);
        }
    }
}
