//! README.md's blocks marked ```` ```sh runnable ```` work as written: each runs with bash
//! (`set -euo pipefail`) in a new empty directory with the ferry under test first on PATH,
//! and must succeed.

use std::path::Path;
use std::time::Duration;

use ferry_testutil::Dir;
use ferry_testutil::fleet::run_bounded;

#[test]
fn the_readme_runnable_blocks_succeed_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let blocks = ferry_testutil::fenced_blocks(&readme, "sh runnable");
    assert!(!blocks.is_empty(), "README.md has no ```sh runnable blocks");
    let bin = Path::new(env!("CARGO_BIN_EXE_ferry")).parent().unwrap();
    for (index, block) in blocks.iter().enumerate() {
        let dir = Dir::new(&format!("readme-{index}"));
        let mut command = ferry_testutil::ferry_command(Path::new("bash"));
        command
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(dir.path())
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()));
        let output = run_bounded(&mut command, Duration::from_secs(120));
        assert!(
            output.status.success(),
            "README block {index} failed ({}):\n{block}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
