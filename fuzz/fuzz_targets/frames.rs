//! The framing layer on a hostile byte stream: length prefixes of any size (4 GiB included) are
//! refused before anything is allocated for them; every frame that comes out is decoded.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use powerpool_shared::{codec, FromWorker, MAX_FRAME};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut decoder = codec::frame_decoder();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        assert!(frame.len() <= MAX_FRAME);
        let _ = codec::decode::<FromWorker>(&frame);
    }
});
