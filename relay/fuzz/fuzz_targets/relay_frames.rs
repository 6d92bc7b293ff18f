//! Feeds arbitrary bytes to the relay's frame decoder twice: once as kind, id and payload
//! handed to `Frame::decode` directly, once as a byte stream read frame after frame by
//! `read_frame`, header checks included. Nothing may panic, and every frame that decodes
//! must encode back to exactly the bytes it came from, so that no two encodings of one frame
//! exist and a peer cannot smuggle bytes past the decoder.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use relay::frame::{read_frame, Frame, Header};

/// Runs a future that never waits: reading from a byte slice is always ready.
fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("reading from a byte slice waited"),
    }
}

fn decode_payload(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Some((id, payload)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let id = u32::from_le_bytes(*id);
    if let Ok(frame) = Frame::decode(kind, id, payload) {
        let bytes = frame.encode();
        assert_eq!(bytes[0], kind, "{frame:?} changes kind");
        assert_eq!(frame.id(), id, "{frame:?} changes id");
        assert_eq!(&bytes[Header::LEN..], payload, "{frame:?} re-encodes differently");
    }
}

fn read_stream(data: &[u8]) {
    let mut stream = data;
    loop {
        let before = stream;
        match ready(read_frame(&mut stream)) {
            Ok(Some(frame)) => {
                let consumed = &before[..before.len() - stream.len()];
                assert_eq!(frame.encode(), consumed, "{frame:?} re-encodes differently");
                let header = Header::parse(consumed[..Header::LEN].try_into().unwrap());
                assert_eq!(header.unwrap().len, consumed.len() - Header::LEN);
            }
            Ok(None) => return assert!(before.is_empty(), "end of stream inside a frame"),
            Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    decode_payload(data);
    read_stream(data);
});
