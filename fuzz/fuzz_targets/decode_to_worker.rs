//! What a worker decodes from the coordinator: any bytes give a message or an error, never a
//! panic, an abort or an allocation larger than the input allows.
#![no_main]
use libfuzzer_sys::fuzz_target;
use powerpool_shared::{codec, ToWorker};

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<ToWorker>(data);
});
