//! Where a release comes from, recorded in its signed document: the signing key, `user@host`,
//! the git checkout (commit, dirty or not, branch, exact tag) and the ferry version.

use std::path::Path;
use std::process::{Command, Stdio};

use ferry_release::{GitProvenance, Provenance};

/// The provenance of a publish signed by `key_id`, with the git state of `dir` when it is in
/// a git checkout (and git is installed).
pub fn collect(key_id: &str, dir: &Path) -> Provenance {
    Provenance {
        key_id: key_id.to_owned(),
        by: by(),
        git: git(dir),
        ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// The git state of `dir`; `None` outside a checkout.
pub fn git(dir: &Path) -> Option<GitProvenance> {
    let commit = git_output(dir, &["rev-parse", "--verify", "HEAD"])?;
    let dirty = git_output(dir, &["status", "--porcelain"]).is_some_and(|text| !text.is_empty());
    Some(GitProvenance {
        commit,
        dirty,
        branch: git_output(dir, &["symbolic-ref", "--short", "-q", "HEAD"]),
        tag: git_output(dir, &["describe", "--tags", "--exact-match", "HEAD"]),
    })
}

/// `git -C dir ARGS`, its trimmed stdout when it succeeded.
fn git_output(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// `user@host` of this process.
pub fn by() -> String {
    format!("{}@{}", user(), host())
}

fn user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        // SAFETY: getuid(2) has no preconditions.
        .unwrap_or_else(|| format!("uid{}", unsafe { libc::getuid() }))
}

fn host() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let name = if status == 0 {
        let end = buffer
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        String::new()
    };
    if name.is_empty() {
        "unknown-host".into()
    } else {
        name
    }
}

/// One line for people: `user@host, commit abc1234 (dirty) on main, tag v1.2`.
pub fn describe(provenance: &Provenance) -> String {
    let mut text = provenance.by.clone();
    if let Some(git) = &provenance.git {
        text.push_str(&format!(
            ", commit {}{}",
            &git.commit[..git.commit.len().min(12)],
            if git.dirty { " (dirty)" } else { "" }
        ));
        if let Some(branch) = &git.branch {
            text.push_str(&format!(" on {branch}"));
        }
        if let Some(tag) = &git.tag {
            text.push_str(&format!(", tag {tag}"));
        }
    }
    text
}
