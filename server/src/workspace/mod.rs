//! The session workspace as the log records it: detecting which paths a tool
//! call changed, storing their contents as blobs, and materializing a
//! workspace from the log's deltas.
