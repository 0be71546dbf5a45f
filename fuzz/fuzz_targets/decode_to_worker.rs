//! What a worker decodes from the coordinator: any bytes give a message or an error, never a
//! panic, an abort or an allocation larger than the input allows; the in-place readers of body
//! pieces and item batches too, and a `run` job's command item (protocol 4).
#![no_main]
use libfuzzer_sys::fuzz_target;
use powerpool_shared::{codec, ToWorker};

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<ToWorker>(data);
    let _ = codec::body_piece(data);
    let _ = codec::items_batch(data);
    let _ = powerpool_shared::jobs::JobCommand::decode(data);
});
