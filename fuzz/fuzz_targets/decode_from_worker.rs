//! What the coordinator decodes from a worker: the hello's version peek, the generic decoder and
//! the zero-copy `Done` fast path, on any bytes; and a `run` job's outcome record (protocol 4).
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use powerpool_shared::{codec, FromWorker};

fuzz_target!(|data: &[u8]| {
    let _ = codec::hello_version(data);
    let _ = codec::decode::<FromWorker>(data);
    let _ = codec::decode_from_worker(BytesMut::from(data));
    let _ = codec::split_records(&bytes::Bytes::copy_from_slice(data));
    let _ = powerpool_shared::jobs::JobOutcome::decode(data);
});
