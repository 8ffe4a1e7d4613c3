//! A client's handshake request, as the server reads it: `parse_request` → `validate_request`
//! → `accept_response` (or the refusal's `to_response`).
//!
//! Invariants: `Ok(None)` only while the head may still fit the limits; a parsed head is a
//! prefix of the input within `max_head_bytes` and re-parses the same from that prefix; a
//! refusal's response is a well-formed HTTP response with its status; an accepted offer
//! always yields a 101 that our own client accepts, echoing the chosen subprotocol and every
//! offered extension.
#![no_main]

use duplex_proto::extension::Extension;
use duplex_proto::handshake::{
    accept_response, parse_request, parse_response, validate_request, validate_response, Accept,
    HandshakeLimits,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let small = HandshakeLimits {
        max_head_bytes: 512,
        max_headers: 8,
    };
    for limits in [HandshakeLimits::default(), small] {
        check(data, &limits);
    }
});

fn check(data: &[u8], limits: &HandshakeLimits) {
    let (request, consumed) = match parse_request(data, limits) {
        Ok(None) => {
            assert!(data.len() < limits.max_head_bytes);
            return;
        }
        Ok(Some(parsed)) => parsed,
        Err(e) => {
            assert!(matches!(e.status(), 400 | 431), "{e:?}");
            check_refusal(&e.to_response(), e.status());
            return;
        }
    };
    assert!(consumed <= data.len() && consumed <= limits.max_head_bytes);
    assert!(request.headers.len() <= limits.max_headers);
    let again = parse_request(&data[..consumed], limits).expect("prefix re-parses");
    assert_eq!(again, Some((request.clone(), consumed)));
    // Accessors are total.
    let _ = (
        request.path(),
        request.query(),
        request.host(),
        request.origin(),
    );
    let _ = (request.protocols(), request.extensions());

    let offer = match validate_request(&request) {
        Ok(offer) => offer,
        Err(e) => {
            assert!(matches!(e.status(), 400 | 405 | 426), "{e:?}");
            check_refusal(&e.to_response(), e.status());
            return;
        }
    };
    assert!(accept_response(&offer, &Accept::default()).is_ok());

    // Accept the first subprotocol and every extension offered: our client must agree.
    let accept = Accept {
        protocol: offer.protocols.first().cloned(),
        extensions: offer.extensions.clone(),
        headers: vec![("X-Fuzz".into(), "1".into())],
    };
    let wire = accept_response(&offer, &accept).expect("an accepted offer can be answered");
    let (response, used) = parse_response(&wire, &HandshakeLimits::default())
        .expect("our 101 parses")
        .expect("our 101 is complete");
    assert_eq!(used, wire.len());
    let names: Vec<&str> = offer.extensions.iter().map(|e| e.name.as_str()).collect();
    let negotiated = validate_response(&response, &offer.key, &offer.protocols, &names)
        .expect("our client accepts our 101");
    assert_eq!(negotiated.protocol, accept.protocol);
    assert_eq!(negotiated.extensions, offer.extensions as Vec<Extension>);
}

fn check_refusal(wire: &[u8], status: u16) {
    let (response, used) = parse_response(wire, &HandshakeLimits::default())
        .expect("our refusal parses")
        .expect("our refusal head is complete");
    assert!(used <= wire.len());
    assert_eq!(response.status, status);
}
