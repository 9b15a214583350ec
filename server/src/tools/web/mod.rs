//! The web tools: `web_fetch` (the server fetches one URL, connecting only to
//! public addresses) and `web_search` (an operator-configured provider).
//!
//! `domains` reads the agent's settings for both, `guard` is the checked
//! name resolution, `sources` web_fetch's `url_sources`, `fetch` the fetch
//! itself, `extract` turns bodies into
//! text (`scan` first bounds what its HTML parsers are given), `search`
//! the provider trait and its SearXNG implementation.

mod domains;
mod extract;
pub mod fetch;
mod guard;
mod scan;
pub mod search;
mod sources;

pub(crate) use domains::{FetchSettings, SearchSettings};
pub use fetch::{Fetcher, FetcherError};
pub use guard::{HostResolver, LookupFuture, SystemResolver};
pub use search::{SearchError, SearchFuture, SearchHit, SearchProvider, SearxngProvider};
