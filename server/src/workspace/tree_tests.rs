use std::path::Path;

use logbook_core::event::{FileChange, WorkspaceChange, WorkspaceDelta};
use logbook_store::{Blobs, MemStore};

use super::*;

fn written(path: &str, blob: u8) -> WorkspaceChange {
    WorkspaceChange { path: path.to_owned(), change: FileChange::Written { blob: [blob; 32], size: 1, mode: 0o644 } }
}

fn link(path: &str, target: &str) -> WorkspaceChange {
    WorkspaceChange { path: path.to_owned(), change: FileChange::Symlink { target: target.to_owned() } }
}

fn delta(changes: Vec<WorkspaceChange>) -> WorkspaceDelta {
    WorkspaceDelta { tool_use_id: None, changes }
}

#[test]
fn write_tree_writes_contents_modes_and_links_into_empty_directories() {
    use std::os::unix::fs::PermissionsExt;
    let store = MemStore::in_memory().unwrap();
    let hello = store.put_blob(b"hello").unwrap();
    let script = store.put_blob(b"#!/bin/sh\n").unwrap();
    let tree = materialize(&[delta(vec![
        WorkspaceChange {
            path: "/workspace/docs/hello.txt".to_owned(),
            change: FileChange::Written { blob: *hello.as_bytes(), size: 5, mode: 0o4644 },
        },
        WorkspaceChange {
            path: "/mnt/session/outputs/run.sh".to_owned(),
            change: FileChange::Written { blob: *script.as_bytes(), size: 10, mode: 0o755 },
        },
        // Mounted files are written by the resources module, not here.
        written("/mnt/session/uploads/data.csv", 7),
        link("/workspace/docs/link", "hello.txt"),
    ])]);
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
    let tree = materialize(&[delta(vec![written("/workspace/a", 9)])]);
    let dir = tempfile::tempdir().unwrap();
    let err = write_tree(&tree, &store, &dir.path().join("w"), &dir.path().join("o"), None).unwrap_err();
    assert!(matches!(err, WriteError::MissingBlob { .. }), "{err}");
}
