//! Networking shared by everything that opens connections on a session's
//! behalf (the sandbox's egress proxy, web_fetch, MCP): which addresses count
//! as public, so that nothing reaches the host's loopback, private networks,
//! link-local or cloud metadata addresses.

pub mod addr;
pub mod sni;
