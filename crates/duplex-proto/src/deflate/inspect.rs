//! Test-only reference inflater (RFC 1951) that records the largest back-reference distance
//! a stream uses, to check that our compressor keeps to the negotiated window.
//!
//! Written for clarity, not speed: bits are read one Huffman bit at a time.

/// The tail a permessage-deflate sender strips and the receiver restores.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// Order in which code-length code lengths are sent (RFC 1951 §3.2.7).
const CLEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

type Res<T> = Result<T, &'static str>;

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u32,
    count: u32,
}

impl Bits<'_> {
    fn get(&mut self, n: u32) -> Res<u32> {
        while self.count < n {
            let byte = *self.data.get(self.pos).ok_or("truncated stream")?;
            self.pos += 1;
            self.buf |= u32::from(byte) << self.count;
            self.count += 8;
        }
        let v = self.buf & ((1u32 << n) - 1);
        self.buf = self.buf.checked_shr(n).unwrap_or(0);
        self.count -= n;
        Ok(v)
    }

    fn align(&mut self) {
        self.buf = 0;
        self.count = 0;
    }

    fn at_end(&self) -> bool {
        self.pos == self.data.len()
    }
}

/// A canonical Huffman code: how many codes of each length, and the symbols in code order.
struct Huffman {
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Self {
        let mut counts = [0u16; 16];
        for &l in lengths {
            counts[usize::from(l)] += 1;
        }
        counts[0] = 0;
        let mut symbols = Vec::new();
        for len in 1..16u8 {
            for (sym, &l) in lengths.iter().enumerate() {
                if l == len {
                    symbols.push(sym as u16);
                }
            }
        }
        Huffman { counts, symbols }
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Res<u16> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= bits.get(1)? as i32;
            let count = i32::from(self.counts[len]);
            if code - first < count {
                return self
                    .symbols
                    .get((index + code - first) as usize)
                    .copied()
                    .ok_or("bad code");
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("bad code")
    }
}

/// Decodes consecutive permessage-deflate messages of one stream.
#[derive(Default)]
pub struct Inspector {
    /// Everything decoded so far (the LZ77 history).
    pub history: Vec<u8>,
    /// The largest back-reference distance seen.
    pub max_distance: usize,
}

impl Inspector {
    /// Decodes one message as sent on the wire (tail stripped) and returns its payload.
    pub fn message(&mut self, wire: &[u8]) -> Res<Vec<u8>> {
        let mut data = wire.to_vec();
        data.extend_from_slice(&TAIL);
        let start = self.history.len();
        let mut bits = Bits {
            data: &data,
            pos: 0,
            buf: 0,
            count: 0,
        };
        while !bits.at_end() {
            let last = bits.get(1)?;
            match bits.get(2)? {
                0 => self.stored(&mut bits)?,
                1 => self.fixed(&mut bits)?,
                2 => self.dynamic(&mut bits)?,
                _ => return Err("reserved block type"),
            }
            if last == 1 {
                return Err("BFINAL set");
            }
        }
        Ok(self.history[start..].to_vec())
    }

    fn stored(&mut self, bits: &mut Bits<'_>) -> Res<()> {
        bits.align();
        let len = bits.get(16)?;
        let nlen = bits.get(16)?;
        if len != !nlen & 0xffff {
            return Err("stored length mismatch");
        }
        for _ in 0..len {
            self.history.push(bits.get(8)? as u8);
        }
        Ok(())
    }

    fn fixed(&mut self, bits: &mut Bits<'_>) -> Res<()> {
        let mut lengths = [0u8; 288];
        for (i, l) in lengths.iter_mut().enumerate() {
            *l = match i {
                0..=143 => 8,
                144..=255 => 9,
                256..=279 => 7,
                _ => 8,
            };
        }
        self.codes(bits, &Huffman::new(&lengths), &Huffman::new(&[5; 30]))
    }

    fn dynamic(&mut self, bits: &mut Bits<'_>) -> Res<()> {
        let hlit = bits.get(5)? as usize + 257;
        let hdist = bits.get(5)? as usize + 1;
        let hclen = bits.get(4)? as usize + 4;
        let mut clen = [0u8; 19];
        for &i in &CLEN_ORDER[..hclen] {
            clen[i] = bits.get(3)? as u8;
        }
        let clen = Huffman::new(&clen);
        let mut lengths = Vec::with_capacity(hlit + hdist);
        while lengths.len() < hlit + hdist {
            let sym = clen.decode(bits)?;
            let (value, repeat) = match sym {
                0..=15 => (sym as u8, 1),
                16 => (
                    *lengths.last().ok_or("repeat with no length")?,
                    3 + bits.get(2)?,
                ),
                17 => (0, 3 + bits.get(3)?),
                18 => (0, 11 + bits.get(7)?),
                _ => return Err("bad code length symbol"),
            };
            for _ in 0..repeat {
                lengths.push(value);
            }
        }
        if lengths.len() != hlit + hdist {
            return Err("code lengths overrun");
        }
        self.codes(
            bits,
            &Huffman::new(&lengths[..hlit]),
            &Huffman::new(&lengths[hlit..]),
        )
    }

    fn codes(&mut self, bits: &mut Bits<'_>, lit: &Huffman, dist: &Huffman) -> Res<()> {
        loop {
            let sym = usize::from(lit.decode(bits)?);
            match sym {
                0..=255 => self.history.push(sym as u8),
                256 => return Ok(()),
                257..=285 => {
                    let i = sym - 257;
                    let len = usize::from(LENGTH_BASE[i])
                        + bits.get(u32::from(LENGTH_EXTRA[i]))? as usize;
                    let d = usize::from(dist.decode(bits)?);
                    if d >= 30 {
                        return Err("bad distance symbol");
                    }
                    let distance =
                        usize::from(DIST_BASE[d]) + bits.get(u32::from(DIST_EXTRA[d]))? as usize;
                    if distance > self.history.len() {
                        return Err("distance before start of stream");
                    }
                    self.max_distance = self.max_distance.max(distance);
                    for _ in 0..len {
                        let b = self.history[self.history.len() - distance];
                        self.history.push(b);
                    }
                }
                _ => return Err("bad literal/length symbol"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_rfc_7692_examples_and_measures_distance() {
        let mut i = Inspector::default();
        assert_eq!(
            i.message(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])
                .unwrap(),
            b"Hello"
        );
        assert_eq!(i.max_distance, 0, "all literals");
        assert_eq!(
            i.message(&[0xf2, 0x00, 0x11, 0x00, 0x00]).unwrap(),
            b"Hello"
        );
        assert_eq!(i.max_distance, 5);
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(i.message(&stored).unwrap(), b"Hello");
    }

    #[test]
    fn rejects_bad_streams() {
        assert!(Inspector::default().message(&[0xff]).is_err());
        assert!(Inspector::default()
            .message(&[0xf2, 0x00, 0x11, 0x00, 0x00])
            .is_err());
    }
}
