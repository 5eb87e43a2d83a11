//! What the chaos tests share.

use std::path::PathBuf;
use std::process::Command;

/// The `coraft-node` binary of this build: built here, as a test of another
/// crate cannot ask cargo for it. The build names the targets `cargo test
/// --workspace` builds (tests, so dev-dependency features unify the same
/// way), so under it this is a no-op and replaces nothing.
pub fn node_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile dir>/deps/<test> -> target/<profile dir>
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "test".to_string(),
        "release" => "release".to_string(),
        other => other.to_string(),
    };
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--manifest-path",
            manifest,
            "--workspace",
            "--tests",
            "--bin",
            "coraft-node",
            "--profile",
        ])
        .arg(&profile)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building coraft-node failed: {status}");
    let bin = profile_dir.join("coraft-node");
    assert!(bin.is_file(), "no coraft-node at {}", bin.display());
    bin
}
