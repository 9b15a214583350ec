//! The per-session sandbox: a bubblewrap jail as an unprivileged uid with no
//! capabilities, its directories on the host, resource limits, the persistent
//! bash shell, and the egress proxy the sandbox reaches the network through.
//! There is no unsandboxed code path: if a sandbox cannot be made, the tool
//! call fails with an error that says why.

pub mod layout;
