//! `Sec-WebSocket-Extensions` syntax: `parse_extensions` → `format_extensions` → parse again
//! must give the same list (and formatting is then a fixed point); the server's
//! permessage-deflate negotiation over any parsed offer list must answer with an element that
//! itself round-trips and is a valid response.
#![no_main]

use duplex_proto::deflate::{negotiate_server, DeflateConfig, DeflateParams};
use duplex_proto::extension::{format_extensions, parse_extensions};
use duplex_proto::Role;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(list) = parse_extensions(&text) else {
        return;
    };
    let formatted = format_extensions(&list);
    let reparsed = parse_extensions(&formatted)
        .unwrap_or_else(|e| panic!("{formatted:?} (from {text:?}) does not re-parse: {e}"));
    assert_eq!(reparsed, list, "round trip through {formatted:?}");
    assert_eq!(format_extensions(&reparsed), formatted);

    for ext in &list {
        let _ = DeflateParams::from_offer(ext);
        let _ = DeflateParams::from_response(ext);
    }
    let configs = [
        DeflateConfig {
            enabled: true,
            ..DeflateConfig::default()
        },
        DeflateConfig {
            enabled: true,
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 9,
            client_max_window_bits: 8,
            ..DeflateConfig::default()
        },
    ];
    for config in &configs {
        let Some((agreed, response)) = negotiate_server(&list, config) else {
            continue;
        };
        assert_eq!(agreed.role, Role::Server);
        for dir in [agreed.incoming, agreed.outgoing] {
            assert!((8..=15).contains(&dir.max_window_bits), "{agreed:?}");
        }
        assert!(agreed.outgoing.max_window_bits <= config.server_max_window_bits);
        let wire = format_extensions(std::slice::from_ref(&response));
        assert_eq!(parse_extensions(&wire), Ok(vec![response.clone()]));
        let params = DeflateParams::from_response(&response)
            .unwrap_or_else(|e| panic!("our response {wire:?} is invalid: {e}"));
        assert_eq!(params.to_extension(), response);
    }
});
