//! A server's handshake response, as our client reads it: `parse_response` →
//! `validate_response` with a fixed key, then the permessage-deflate check of what it agreed.
//!
//! Invariants: `Ok(None)` only while the head may still fit the limits; a parsed head is a
//! prefix within `max_head_bytes`; an accepted response names only what we offered, and a
//! permessage-deflate agreement has window sizes in 8..=15.
#![no_main]

use duplex_proto::deflate::{negotiate_client, DeflateConfig};
use duplex_proto::handshake::{parse_response, validate_response, HandshakeLimits};
use duplex_proto::Role;
use libfuzzer_sys::fuzz_target;

/// RFC 6455 §1.3's example key; its accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fuzz_target!(|data: &[u8]| {
    let limits = HandshakeLimits::default();
    let (response, consumed) = match parse_response(data, &limits) {
        Ok(None) => {
            assert!(data.len() < limits.max_head_bytes);
            return;
        }
        Ok(Some(parsed)) => parsed,
        Err(_) => return,
    };
    assert!(consumed <= data.len() && consumed <= limits.max_head_bytes);
    assert!(response.headers.len() <= limits.max_headers);

    let protocols = ["chat".to_string(), "superchat".to_string()];
    for offered in [&protocols[..], &[]] {
        let names = ["permessage-deflate", "x-test"];
        let Ok(negotiated) = validate_response(&response, KEY, offered, &names) else {
            continue;
        };
        if let Some(p) = &negotiated.protocol {
            assert!(offered.contains(p));
        }
        assert!(negotiated
            .extensions
            .iter()
            .all(|e| names.contains(&e.name.as_str())));

        let configs = [
            DeflateConfig {
                enabled: true,
                ..DeflateConfig::default()
            },
            DeflateConfig {
                enabled: true,
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 10,
                client_max_window_bits: 9,
                ..DeflateConfig::default()
            },
        ];
        for config in &configs {
            if let Ok(Some(agreed)) = negotiate_client(&negotiated.extensions, config) {
                assert_eq!(agreed.role, Role::Client);
                for dir in [agreed.incoming, agreed.outgoing] {
                    assert!((8..=15).contains(&dir.max_window_bits), "{agreed:?}");
                }
                // We never compress with a larger window than we offered.
                assert!(agreed.outgoing.max_window_bits <= config.client_max_window_bits);
                if config.server_no_context_takeover {
                    assert!(agreed.incoming.no_context_takeover);
                }
                if config.server_max_window_bits < 15 {
                    assert!(agreed.incoming.max_window_bits <= config.server_max_window_bits);
                }
            }
        }
    }
});
