//! Any body through the raw lexer, labels included: no panic, and every label it yields is sane.

#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_server::parse::text::Lexer;

fuzz_target!(|body: &[u8]| {
    for sample in Lexer::new(body).flatten() {
        assert!(!sample.name.is_empty());
        for label in sample.labels.iter().flatten() {
            assert!(!label.name.is_empty());
        }
    }
});
