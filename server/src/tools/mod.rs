//! The built-in tools that run in the server, not in the sandbox: the file
//! tools (confined to the session's directories by the kernel) and the web
//! tools (which connect only to public addresses).
