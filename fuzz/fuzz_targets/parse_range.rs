//! `--range START..END` on any text: a range or a message, never a panic; what parses prints
//! back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use powerpool::cli::parse_range;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok((start, end)) = parse_range(text) {
        assert_eq!(parse_range(&format!("{start}..{end}")), Ok((start, end)));
    }
});
