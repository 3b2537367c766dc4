//! The manifest loader on arbitrary file content, read as YAML and as JSON: no panic, and
//! every error names where it is (the file, and a document once the file could be split).
#![no_main]

use enforcer::manifests::load_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for name in ["fuzz.yaml", "fuzz.json"] {
        let result = load_bytes(name, data.to_vec());
        for e in &result.errors {
            assert_eq!(e.file.to_str(), Some(name), "{e}");
            assert!(!e.message.is_empty(), "{e:?}");
        }
        for l in &result.objects {
            assert!(!l.id.name.is_empty(), "{:?}", l.id);
        }
    }
});
