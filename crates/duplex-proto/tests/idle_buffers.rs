//! An idle connection holds no buffer memory once `release_idle_buffers` ran.

use bytes::{Buf, Bytes};
use duplex_proto::connection::IDLE_BUFFER_BOUND;
use duplex_proto::{Config, Connection, Event, Message, Role};
use std::time::Instant;

/// A masked binary frame (client to server) carrying `payload`.
fn masked_binary(payload: &[u8]) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x82];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

#[test]
fn a_connection_that_carried_nothing_holds_nothing() {
    let now = Instant::now();
    let mut server = Connection::new(Role::Server, Config::default(), now);
    server.receive_data(&[], now).unwrap();
    server.release_idle_buffers();
    assert_eq!(server.buffer_capacity(), 0);
}

#[test]
fn echo_round_trips_leave_no_buffer_behind() {
    let now = Instant::now();
    let mut server = Connection::new(Role::Server, Config::default(), now);
    for size in [20usize, 5_000, 100_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        let frame = masked_binary(&payload);
        // In two pieces, so that the input holds a partial frame in between.
        let (a, b) = frame.split_at(frame.len() / 2);
        server.receive_data(a, now).unwrap();
        server.release_idle_buffers();
        // The header (at most 14 bytes) is parsed; the payload so far stays buffered.
        assert!(
            server.buffer_capacity() >= a.len().saturating_sub(14),
            "a partial frame must stay buffered"
        );
        server.receive_data(b, now).unwrap();
        let Some(Event::Message(message)) = server.poll_event() else {
            panic!("expected the {size}-byte message");
        };
        assert_eq!(message, Message::Binary(Bytes::from(payload)));
        assert_eq!(server.poll_event(), None);
        server.send(message).unwrap();
        assert!(
            server.buffer_capacity() > 0,
            "the input or echo was buffered"
        );
        // Written by a runtime through the Buf interface.
        let queue = server.transmit_queue();
        let queued = queue.remaining();
        assert!(queued > size);
        queue.advance(queued);
        server.release_idle_buffers();
        let kept = server.buffer_capacity();
        assert!(
            kept <= IDLE_BUFFER_BOUND,
            "idle after a {size}-byte echo, the connection still holds {kept} bytes of buffers"
        );
    }
}

#[test]
fn release_keeps_what_is_still_queued() {
    let now = Instant::now();
    let mut server = Connection::new(Role::Server, Config::default(), now);
    server.send_binary(vec![1u8; 10]).unwrap();
    server.release_idle_buffers();
    assert_eq!(server.pending_transmit(), 12);
    assert_eq!(
        &server.poll_transmit().unwrap()[..],
        &[&[0x82, 10][..], &[1u8; 10]].concat()[..]
    );
}
