//! Feeds arbitrary bytes to the frame decoder: the first four as a length prefix, the rest as
//! a frame. Neither may panic, and every frame that decodes must encode back to the same
//! bytes, so that no two encodings of one message exist, and no message may announce more
//! descriptors than a frame can carry.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rumpclient::protocol::{frame_len, Message, LEN_PREFIX, MAX_SOCKET_BATCH};

fuzz_target!(|data: &[u8]| {
    let Some((prefix, frame)) = data.split_first_chunk::<LEN_PREFIX>() else {
        return;
    };
    let _ = frame_len(*prefix);

    if let Ok(msg) = Message::decode(frame) {
        let encoded = msg.encode();
        assert_eq!(
            &encoded[LEN_PREFIX..],
            frame,
            "{msg:?} re-encodes differently"
        );
        assert!(msg.descriptors() <= usize::from(MAX_SOCKET_BATCH), "{msg:?}");
        let len = frame_len(encoded[..LEN_PREFIX].try_into().unwrap());
        assert_eq!(len, Ok(frame.len()));
    }
});
