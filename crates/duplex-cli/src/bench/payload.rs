//! JSON-like message content (`--payload json`), for permessage-deflate runs: what a hub
//! pushes compresses well because keys and structure repeat while values vary.

use std::fmt::Write as _;

/// A deterministic text of exactly `size` bytes: a JSON array of event objects (valid JSON
/// from 2 bytes on), padded with spaces before the closing bracket to the exact length.
pub fn json_text(size: usize) -> String {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut out = String::with_capacity(size);
    out.push('[');
    let mut record = String::new();
    // Each record is at least ~150 bytes, so this runs about size / 150 times.
    loop {
        record.clear();
        write_record(&mut record, &mut rng);
        let separator = usize::from(out.len() > 1);
        if out.len() + separator + record.len() + 1 > size {
            break;
        }
        if separator == 1 {
            out.push(',');
        }
        out.push_str(&record);
    }
    if size < 2 {
        return " ".repeat(size);
    }
    let padding = size - out.len() - 1;
    out.extend(std::iter::repeat_n(' ', padding));
    out.push(']');
    out
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn write_record(out: &mut String, rng: &mut XorShift) {
    const SYMBOLS: [&str; 8] = ["BTC", "ETH", "SOL", "ADA", "DOT", "XRP", "LTC", "AVAX"];
    const SIDES: [&str; 2] = ["buy", "sell"];
    let symbol = SYMBOLS[rng.below(SYMBOLS.len() as u64) as usize];
    let _ = write!(
        out,
        r#"{{"event":"trade","channel":"private-market-{}","data":{{"id":{},"symbol":"{}","price":{}.{:02},"qty":{},"side":"{}","ts":{}}}}}"#,
        symbol.to_ascii_lowercase(),
        rng.below(1 << 31),
        symbol,
        rng.below(100_000),
        rng.below(100),
        1 + rng.below(10_000),
        SIDES[rng.below(2) as usize],
        1_700_000_000_000 + rng.below(1 << 32),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_size_and_deterministic() {
        for size in [0, 1, 2, 3, 20, 100, 151, 1024, 16 << 10, 1 << 20] {
            let text = json_text(size);
            assert_eq!(text.len(), size, "size {size}");
            assert_eq!(text, json_text(size), "size {size}");
        }
    }

    #[test]
    fn is_an_array_of_objects_with_varying_values() {
        let text = json_text(1024);
        assert!(text.starts_with("[{\"event\":\"trade\""), "{text}");
        assert!(text.trim_end_matches([' ', ']']).ends_with("}}"), "{text}");
        assert!(text.ends_with(']'));
        // Several records, not one repeated verbatim.
        let records: Vec<&str> = text[1..].split(",{\"event\"").collect();
        assert!(records.len() >= 4, "{} records", records.len());
        assert_ne!(records[1], records[2]);
        // Braces balance: the structure is intact.
        let opens = text.matches('{').count();
        assert_eq!(opens, text.matches('}').count());
    }

    #[test]
    fn parses_as_json() {
        let text = json_text(4096);
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let items = value.as_array().expect("an array");
        assert!(items.len() > 10);
        assert!(items.iter().all(|i| i["data"]["price"].is_number()));
    }
}
