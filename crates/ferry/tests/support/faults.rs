//! Faults made real for the hardening tests: a small tmpfs to fill, incompressible padding
//! to make a package big, a FIFO, a config key changed in place.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::world::World;

/// A tmpfs of `size` bytes mounted at `path`, unmounted when dropped. The tests run as root
/// (CI does); without it the mount fails and the test says so instead of passing.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: PathBuf, size: u64) -> Tmpfs {
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("tmpfs")
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs at {} failed: these tests need root (as CI has)",
            path.display()
        );
        Tmpfs { path }
    }

    pub fn resize(&self, size: u64) {
        let status = Command::new("mount")
            .args(["-o"])
            .arg(format!("remount,size={size}"))
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Incompressible bytes (a padding file that makes a package big).
pub fn noise(length: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub fn set_config_key(world: &World, line: &str) {
    let config = std::fs::read_to_string(world.config_path()).unwrap();
    std::fs::write(
        world.config_path(),
        config.replacen("app = ", &format!("{line}\napp = "), 1),
    )
    .unwrap();
}

pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}
