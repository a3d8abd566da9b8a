//! Arbitrary bytes as a `.env` file → the server's `.env` parser
//! (`config::dotenv`).
//!
//! Invariants checked on every input:
//!
//! 1. Parsing never panics.
//! 2. An error names a line of the input (1 to the number of lines).
//! 3. What parses round-trips: each assignment written back as
//!    `KEY=` + `dotenv::quote(value)` (every value the parser returns can be
//!    written) parses to the same keys and values, in the same order.
//! 4. Line endings do not matter: the input with every `\n` made `\r\n`
//!    (when it has no `\r` of its own) parses to the same result, line
//!    numbers included.

#![no_main]

use chat_flow::config::dotenv::{self, Assignment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|file: &[u8]| {
    let parsed = dotenv::parse(file);
    match &parsed {
        Err(e) => {
            let lines = file.split(|b| *b == b'\n').count();
            assert!((1..=lines).contains(&e.line), "line {} of {lines}", e.line);
        }
        Ok(assignments) => {
            let mut written = String::new();
            for a in assignments {
                let value = dotenv::quote(&a.value)
                    .unwrap_or_else(|| panic!("a parsed value cannot be written: {a:?}"));
                written.push_str(&format!("{}={value}\n", a.key));
            }
            let again = dotenv::parse(written.as_bytes())
                .unwrap_or_else(|e| panic!("{written:?} does not parse: {e}"));
            let pairs = |all: &[Assignment]| -> Vec<(String, String)> {
                all.iter().map(|a| (a.key.clone(), a.value.clone())).collect()
            };
            assert_eq!(pairs(&again), pairs(assignments), "{written:?}");
        }
    }
    if !file.contains(&b'\r') {
        let mut crlf = Vec::with_capacity(file.len() * 2);
        for &b in file {
            if b == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        assert_eq!(dotenv::parse(&crlf), parsed, "with CRLF line endings");
    }
});
