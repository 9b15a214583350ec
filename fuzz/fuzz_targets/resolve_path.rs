//! Fuzz target: the file tools' mapping of model paths onto the session's
//! roots (`server/src/tools/path.rs`, included as it is: it needs only `std`).
//!
//! The input is any string (lossy UTF-8 of the fuzzer's bytes). The oracle:
//! `resolve` never panics; an accepted path names an existing root and a
//! relative path with no empty, `.` or `..` component, no NUL and no leading
//! `/` (the shape the confined opens rely on); the model-facing form of the
//! result (`display`) resolves to the same root and path again; a refused
//! path's normalised form is refused the same way, is absolute and is not
//! below any root. The kernel's `RESOLVE_BENEATH` is the confinement; this
//! checks that the lexical step in front of it is total and consistent.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../server/src/tools/path.rs"]
#[allow(dead_code, unreachable_pub)]
mod path;

use path::{ModelPath, PathError, display, resolve};

const ROOTS: [&str; 3] = ["/workspace", "/mnt/session/uploads", "/mnt/session/outputs"];

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    match resolve(&ROOTS, &input) {
        Ok(resolved) => check_accepted(&input, &resolved),
        Err(PathError::OutsideRoots { normalized }) => {
            assert!(normalized.starts_with('/'), "{input:?} -> {normalized:?}");
            assert_eq!(
                resolve(&ROOTS, &normalized),
                Err(PathError::OutsideRoots { normalized: normalized.clone() }),
                "{input:?}: the normalised form must be refused the same way"
            );
            for root in ROOTS {
                assert!(
                    normalized != root && !normalized.starts_with(&format!("{root}/")),
                    "{input:?} -> {normalized:?} is below {root}"
                );
            }
        }
        Err(PathError::Empty) => assert!(input.is_empty()),
        Err(PathError::Nul) => assert!(input.contains('\0')),
        Err(PathError::TooLong { n_bytes }) => assert!(n_bytes > path::MAX_PATH_BYTES),
    }
});

fn check_accepted(input: &str, resolved: &ModelPath) {
    assert!(resolved.root < ROOTS.len(), "{input:?}: root {}", resolved.root);
    let rel = &resolved.rel;
    assert!(!rel.starts_with('/') && !rel.contains('\0'), "{input:?} -> {rel:?}");
    if !rel.is_empty() {
        for part in rel.split('/') {
            assert!(!matches!(part, "" | "." | ".."), "{input:?} -> {rel:?} has the component {part:?}");
        }
    }
    let shown = display(&ROOTS, resolved.root, rel);
    assert_eq!(resolve(&ROOTS, &shown).as_ref(), Ok(resolved), "{input:?} -> {shown:?} does not round-trip");
}
