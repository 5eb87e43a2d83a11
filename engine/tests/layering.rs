//! The consensus core stays pure: no file, socket, clock, thread, async
//! runtime or glommio in `engine/src/raft/`, and no iteration over hash maps
//! whose order could change behaviour.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::net",
    "std::time",
    "std::thread",
    "std::sync",
    "tokio",
    "glommio",
    "async ",
    ".await",
    "HashMap",
    "HashSet",
    "thread_rng",
    "SystemTime",
    "Instant",
];

#[test]
fn raft_core_imports_no_io_clock_or_runtime() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/raft");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("src/raft exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("readable source");
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for forbidden in FORBIDDEN {
                    assert!(
                        !code.contains(forbidden),
                        "{}:{}: the pure core must not use `{forbidden}`: {line}",
                        path.display(),
                        number + 1
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "expected the core's files, found {checked}");
}
