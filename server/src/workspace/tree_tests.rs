use logbook_core::event::{FileChange, WorkspaceChange, WorkspaceDelta};
use logbook_store::{Blobs, MemStore};

use super::*;

fn written(path: &str, blob: u8) -> WorkspaceChange {
    WorkspaceChange { path: path.to_owned(), change: FileChange::Written { blob: [blob; 32], size: 1, mode: 0o644 } }
}

fn removed(path: &str) -> WorkspaceChange {
    WorkspaceChange { path: path.to_owned(), change: FileChange::Removed }
}

fn link(path: &str, target: &str) -> WorkspaceChange {
    WorkspaceChange { path: path.to_owned(), change: FileChange::Symlink { target: target.to_owned() } }
}

fn delta(changes: Vec<WorkspaceChange>) -> WorkspaceDelta {
    WorkspaceDelta { tool_use_id: None, changes }
}

fn paths(tree: &Tree) -> Vec<&str> {
    tree.nodes().keys().map(String::as_str).collect()
}

#[test]
fn later_deltas_win_and_removals_remove() {
    let tree = materialize(&[
        delta(vec![written("a.txt", 1), written("src/lib.rs", 2), link("l", "a.txt")]),
        delta(vec![written("a.txt", 3), removed("src/lib.rs")]),
    ])
    .unwrap();
    assert_eq!(paths(&tree), ["a.txt", "l"]);
    assert_eq!(tree.get("a.txt"), Some(&Node::File { blob: [3; 32], size: 1, mode: 0o644 }));
}

#[test]
fn a_file_replacing_a_directory_and_the_other_way_round() {
    let mut tree = materialize(&[delta(vec![written("d/x", 1), written("d/y/z", 2)])]).unwrap();
    tree.apply(&written("d", 3)).unwrap();
    assert_eq!(paths(&tree), ["d"]);
    tree.apply(&written("d/inner", 4)).unwrap();
    assert_eq!(paths(&tree), ["d/inner"]);
    tree.apply(&link("d/inner/deeper", "/etc")).unwrap();
    assert_eq!(paths(&tree), ["d/inner/deeper"]);
    // A sibling with the same prefix is not a descendant.
    tree.apply(&written("d/inner-2", 5)).unwrap();
    tree.apply(&removed("d/inner")).unwrap();
    assert_eq!(paths(&tree), ["d/inner-2"]);
}

#[test]
fn outputs_are_their_own_area() {
    let tree = materialize(&[delta(vec![written("/mnt/session/outputs/r.pdf", 1), written("r.pdf", 2)])]).unwrap();
    assert_eq!(split("/mnt/session/outputs/r.pdf").unwrap(), (Area::Outputs, "r.pdf"));
    assert_eq!(split("r.pdf").unwrap(), (Area::Workspace, "r.pdf"));
    assert_eq!(tree.len(), 2);
}

#[test]
fn unclean_paths_are_refused() {
    for path in [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a//b",
        "a/./b",
        "a/",
        "/mnt/session/outputs",
        "/mnt/session/outputs/",
        "/mnt/session/outputsx/a",
        "/mnt/session/outputs/../x",
        "a\0b",
    ] {
        assert!(
            matches!(Tree::default().apply(&written(path, 1)), Err(TreeError::BadPath { .. })),
            "{path:?} must be refused"
        );
    }
}

#[test]
fn write_tree_writes_contents_modes_and_links_into_empty_directories() {
    use std::os::unix::fs::PermissionsExt;
    let store = MemStore::in_memory().unwrap();
    let hello = store.put_blob(b"hello").unwrap();
    let script = store.put_blob(b"#!/bin/sh\n").unwrap();
    let tree = materialize(&[delta(vec![
        WorkspaceChange {
            path: "docs/hello.txt".to_owned(),
            change: FileChange::Written { blob: *hello.as_bytes(), size: 5, mode: 0o4644 },
        },
        WorkspaceChange {
            path: "/mnt/session/outputs/run.sh".to_owned(),
            change: FileChange::Written { blob: *script.as_bytes(), size: 10, mode: 0o755 },
        },
        link("docs/link", "hello.txt"),
    ])])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    write_tree(&tree, &store, &ws, &out, None).unwrap();
    assert_eq!(std::fs::read(ws.join("docs/hello.txt")).unwrap(), b"hello");
    let mode = std::fs::metadata(ws.join("docs/hello.txt")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "setuid is never written");
    assert_eq!(std::fs::metadata(out.join("run.sh")).unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::read_link(ws.join("docs/link")).unwrap(), Path::new("hello.txt"));
    // Not into a directory that already holds something.
    assert!(matches!(write_tree(&tree, &store, &ws, &out, None), Err(WriteError::NotEmpty { .. })));
}

#[test]
fn write_tree_names_a_missing_blob() {
    let store = MemStore::in_memory().unwrap();
    let tree = materialize(&[delta(vec![written("a", 9)])]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = write_tree(&tree, &store, &dir.path().join("w"), &dir.path().join("o"), None).unwrap_err();
    assert!(matches!(err, WriteError::MissingBlob { .. }), "{err}");
}
