//! The file tree of a package before it is written: installed paths checked, every parent
//! directory made explicit, duplicates refused, sorted so each directory comes right before its
//! contents, and the Installed-Size it adds up to.

use std::collections::BTreeMap;
use std::io;

use crate::error::{Error, Result};
use crate::writer::{Entry, EntrySource, Source};

/// A validated, sorted tree entry.
#[derive(Debug)]
pub(crate) struct Node {
    /// Relative path without leading `/` or trailing `/`; empty for the root.
    pub(crate) path: String,
    pub(crate) mode: u32,
    pub(crate) kind: NodeKind,
}

#[derive(Debug)]
pub(crate) enum NodeKind {
    File { source: Source, size: u64 },
    Directory,
    Symlink(String),
}

/// Check an installed path and return it relative (`usr/bin/hello`).
pub fn validate_package_path(path: &str) -> Result<String> {
    let fail = |reason: &str| Error::PackagePath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let Some(relative) = path.strip_prefix('/') else {
        return Err(fail("must be absolute (start with /)"));
    };
    let relative = relative.trim_end_matches('/');
    if relative.is_empty() {
        return Err(fail("is the root directory itself"));
    }
    if path.contains('\0') || path.contains('\n') {
        return Err(fail("contains a NUL or newline character"));
    }
    for component in relative.split('/') {
        match component {
            "" => return Err(fail("contains an empty component (//)")),
            "." => return Err(fail("contains a `.` component")),
            ".." => return Err(fail("contains `..` and would escape the package root")),
            _ => {}
        }
    }
    Ok(relative.to_string())
}

/// Build the sorted tree: explicit parents, no duplicates, sizes known.
pub(crate) fn build_tree(entries: &[Entry]) -> Result<Vec<Node>> {
    // Sorting by components puts every directory right before its contents.
    let mut tree: BTreeMap<Vec<String>, Node> = BTreeMap::new();
    for entry in entries {
        let relative = validate_package_path(&entry.path)?;
        let key: Vec<String> = relative.split('/').map(str::to_string).collect();
        let kind = match &entry.source {
            EntrySource::File(source) => {
                let size = match source {
                    Source::Bytes(bytes) => bytes.len() as u64,
                    Source::Path(path) => {
                        let metadata = std::fs::metadata(path).map_err(|source| Error::File {
                            path: path.clone(),
                            source,
                        })?;
                        if !metadata.is_file() {
                            return Err(Error::File {
                                path: path.clone(),
                                source: io::Error::other("not a regular file"),
                            });
                        }
                        metadata.len()
                    }
                };
                NodeKind::File {
                    source: source.clone(),
                    size,
                }
            }
            EntrySource::Directory => NodeKind::Directory,
            EntrySource::Symlink(target) => {
                if target.is_empty() || target.contains('\0') {
                    return Err(Error::PackagePath {
                        path: entry.path.clone(),
                        reason: "symlink target is empty or contains NUL".into(),
                    });
                }
                NodeKind::Symlink(target.clone())
            }
        };
        if let Some(existing) = tree.get(&key) {
            // The same directory listed twice is harmless; anything else is ambiguous.
            if !(matches!(existing.kind, NodeKind::Directory)
                && matches!(kind, NodeKind::Directory))
            {
                return Err(Error::DuplicatePath {
                    path: format!("/{relative}"),
                });
            }
        }
        tree.insert(
            key,
            Node {
                path: relative,
                mode: entry.mode & 0o7777,
                kind,
            },
        );
    }
    // Parents: every prefix must be a directory.
    let keys: Vec<Vec<String>> = tree.keys().cloned().collect();
    for key in keys {
        for depth in 1..key.len() {
            let parent = key[..depth].to_vec();
            match tree.get(&parent) {
                Some(node) if !matches!(node.kind, NodeKind::Directory) => {
                    return Err(Error::PackagePath {
                        path: format!("/{}", key.join("/")),
                        reason: format!("its parent /{} is not a directory", parent.join("/")),
                    });
                }
                Some(_) => {}
                None => {
                    tree.insert(
                        parent.clone(),
                        Node {
                            path: parent.join("/"),
                            mode: 0o755,
                            kind: NodeKind::Directory,
                        },
                    );
                }
            }
        }
    }
    let mut nodes = vec![Node {
        path: String::new(),
        mode: 0o755,
        kind: NodeKind::Directory,
    }];
    nodes.extend(tree.into_values());
    Ok(nodes)
}

/// Installed-Size the way dpkg-gencontrol computes it: regular files and symlinks count
/// their size rounded up to KiB, every other object (directories, the root included)
/// counts 1 KiB.
pub(crate) fn installed_size(nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .map(|node| match &node.kind {
            NodeKind::File { size, .. } => size.div_ceil(1024),
            NodeKind::Symlink(target) => (target.len() as u64).div_ceil(1024),
            NodeKind::Directory => 1,
        })
        .sum()
}
