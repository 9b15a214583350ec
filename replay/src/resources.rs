//! A session's resources and mounted files as its log records them.
//!
//! [`resources`] folds the `x.session_resource` records into the resources
//! attached at the end of the given entries (what the API's `resources` list
//! shows, plus each repository's cloned commit); [`files_under`] folds the
//! `x.workspace_delta` records into the files under one sandbox directory
//! (the mounted uploads, the captured outputs). Both are pure, so the state at
//! any seq, and therefore a fork at any seq, follows from a prefix of the log.
//! Neither reads file contents: the changes name blobs.

use std::collections::BTreeMap;

use logbook_core::event::{AttachedResource, Event, FileChange, ResourceChange};
use logbook_core::{Entry, SessionResourceId, Timestamp};

/// One attached resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub id: SessionResourceId,
    pub resource: AttachedResource,
    /// When it was attached.
    pub created_at: Timestamp,
    /// When it last changed (attached, token rotated).
    pub updated_at: Timestamp,
    /// A repository's commit once it was cloned.
    pub cloned_commit: Option<String>,
}

/// The resources attached after `entries`, in the order they were attached.
pub fn resources<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    for entry in entries {
        let Event::SessionResource(record) = &entry.event else { continue };
        let position = out.iter().position(|r| r.id == record.resource_id);
        match (&record.change, position) {
            (ResourceChange::Attached { resource }, None) => out.push(Resource {
                id: record.resource_id,
                resource: resource.clone(),
                created_at: entry.at,
                updated_at: entry.at,
                cloned_commit: None,
            }),
            // An id is attached once; a second attach of the same id is ignored.
            (ResourceChange::Attached { .. }, Some(_)) => {}
            (ResourceChange::Detached, Some(idx)) => {
                out.remove(idx);
            }
            (ResourceChange::TokenRotated, Some(idx)) => {
                if let Some(resource) = out.get_mut(idx) {
                    resource.updated_at = entry.at;
                }
            }
            (ResourceChange::RepositoryCloned { commit }, Some(idx)) => {
                if let Some(resource) = out.get_mut(idx) {
                    resource.cloned_commit = Some(commit.clone());
                }
            }
            // A change of a resource that is not attached (any more) changes nothing.
            (
                ResourceChange::Detached | ResourceChange::TokenRotated | ResourceChange::RepositoryCloned { .. },
                None,
            ) => {}
        }
    }
    out
}

/// A file as the log last recorded it: its blob (see the server's
/// `resources::content` for how a large file's blob names its chunks), size
/// and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedFile {
    pub blob: [u8; 32],
    pub size: u64,
    pub mode: u32,
}

/// The regular files under the sandbox directory `root` (an absolute sandbox
/// path such as `/mnt/session/uploads`) after `entries`, by absolute sandbox
/// path, from every `x.workspace_delta` in order. A removal removes the path
/// and everything below it; a symbolic link hides a file at its path.
pub fn files_under<'a>(entries: impl IntoIterator<Item = &'a Entry>, root: &str) -> BTreeMap<String, RecordedFile> {
    let prefix = format!("{}/", root.trim_end_matches('/'));
    let mut out: BTreeMap<String, RecordedFile> = BTreeMap::new();
    for entry in entries {
        let Event::WorkspaceDelta(delta) = &entry.event else { continue };
        for change in &delta.changes {
            if !change.path.starts_with(&prefix) {
                continue;
            }
            match &change.change {
                FileChange::Written { blob, size, mode } => {
                    out.insert(change.path.clone(), RecordedFile { blob: *blob, size: *size, mode: *mode });
                }
                FileChange::Removed | FileChange::Symlink { .. } => {
                    let below = format!("{}/", change.path);
                    out.retain(|path, _| *path != change.path && !path.starts_with(&below));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use logbook_core::event::{RepositoryCheckout, SessionResource, WorkspaceChange, WorkspaceDelta};
    use logbook_core::{EventId, FileId};
    use pretty_assertions::assert_eq;

    use super::*;

    fn entry(n: u64, event: Event) -> Entry {
        Entry { id: EventId::from_parts(n, u128::from(n)), event, at: Timestamp::from_unix_micros(n as i64 * 1000) }
    }

    fn record(n: u64, id: SessionResourceId, change: ResourceChange) -> Entry {
        entry(n, Event::SessionResource(SessionResource { resource_id: id, change }))
    }

    fn written(path: &str, byte: u8) -> WorkspaceChange {
        WorkspaceChange {
            path: path.to_owned(),
            change: FileChange::Written { blob: [byte; 32], size: 1, mode: 0o444 },
        }
    }

    #[test]
    fn resources_follow_attach_rotate_clone_and_detach_at_every_prefix() {
        // Goal: the list at any prefix of the log is the list as of that point
        // (what a fork there sees). Method: a log attaching a file and a
        // repository, rotating, cloning, detaching the file; check every prefix.
        let file_id = SessionResourceId::from_parts(1, 1);
        let repo_id = SessionResourceId::from_parts(1, 2);
        let file =
            AttachedResource::File { file_id: FileId::from_parts(1, 9), mount_path: "/mnt/session/uploads/a".into() };
        let repo = AttachedResource::GithubRepository {
            url: "https://example.com/r.git".into(),
            mount_path: "/workspace/r".into(),
            checkout: Some(RepositoryCheckout::Branch { name: "main".into() }),
        };
        let log = [
            record(1, file_id, ResourceChange::Attached { resource: file.clone() }),
            record(2, repo_id, ResourceChange::Attached { resource: repo.clone() }),
            record(3, repo_id, ResourceChange::TokenRotated),
            record(4, repo_id, ResourceChange::RepositoryCloned { commit: "c0ffee".into() }),
            record(5, file_id, ResourceChange::Detached),
            // Changes of an id that is gone, or never was, change nothing.
            record(6, file_id, ResourceChange::TokenRotated),
            record(7, SessionResourceId::from_parts(1, 3), ResourceChange::Detached),
        ];
        let summary = |n: usize| -> Vec<(SessionResourceId, i64, i64, Option<String>)> {
            resources(&log[..n])
                .into_iter()
                .map(|r| (r.id, r.created_at.unix_micros(), r.updated_at.unix_micros(), r.cloned_commit))
                .collect()
        };
        assert_eq!(summary(0), vec![]);
        assert_eq!(summary(1), vec![(file_id, 1000, 1000, None)]);
        assert_eq!(summary(2), vec![(file_id, 1000, 1000, None), (repo_id, 2000, 2000, None)]);
        assert_eq!(summary(3), vec![(file_id, 1000, 1000, None), (repo_id, 2000, 3000, None)]);
        assert_eq!(summary(4), vec![(file_id, 1000, 1000, None), (repo_id, 2000, 3000, Some("c0ffee".into()))]);
        assert_eq!(summary(7), vec![(repo_id, 2000, 3000, Some("c0ffee".into()))]);
        assert_eq!(resources(&log)[0].resource, repo);
        assert_eq!(resources(&log[..1])[0].resource, file);
    }

    #[test]
    fn files_under_a_root_follow_writes_and_removals() {
        let delta = |n: u64, changes: Vec<WorkspaceChange>| {
            entry(n, Event::WorkspaceDelta(WorkspaceDelta { tool_use_id: None, changes }))
        };
        let log = [
            delta(1, vec![written("/mnt/session/uploads/a.csv", 1), written("/mnt/session/uploads/d/b.pdf", 2)]),
            delta(2, vec![written("/workspace/x", 3), written("/mnt/session/uploadsX/y", 4)]),
            delta(3, vec![written("/mnt/session/uploads/a.csv", 5)]),
            delta(4, vec![WorkspaceChange { path: "/mnt/session/uploads/d".into(), change: FileChange::Removed }]),
        ];
        let paths = |n: usize| -> Vec<(String, u8)> {
            files_under(&log[..n], "/mnt/session/uploads").into_iter().map(|(p, f)| (p, f.blob[0])).collect()
        };
        assert_eq!(
            paths(1),
            vec![("/mnt/session/uploads/a.csv".into(), 1), ("/mnt/session/uploads/d/b.pdf".into(), 2)]
        );
        assert_eq!(paths(2), paths(1), "other directories do not count");
        assert_eq!(paths(3)[0], ("/mnt/session/uploads/a.csv".into(), 5));
        assert_eq!(paths(4), vec![("/mnt/session/uploads/a.csv".into(), 5)]);
    }
}
