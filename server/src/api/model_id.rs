//! Which model ids the API refuses: Claude models older than 4.5.
//!
//! The hosted service runs only Claude 4.5 or later (behaviour digest §2).
//! Logbook passes the id to whatever Anthropic-compatible backend it is
//! pointed at, so it cannot know every valid id: it refuses only ids that
//! recognisably name an older Claude model and accepts every other string
//! (a local backend's own names, families it does not know, future ids).
//!
//! An id is read case-insensitively, after an optional Bedrock-style
//! `[region.]anthropic.` prefix and before a Vertex `@date` or Bedrock
//! `:version` suffix. It names an older model when it is:
//!
//! - `claude-instant…` or `claude-v<digit>…` (Claude 1 and Instant);
//! - `claude-<major>[.<minor>]…` with the version first and a major below 4
//!   (Claude 1 to 3.7: `claude-2.1`, `claude-3-5-sonnet-20241022`);
//! - `claude-{opus,sonnet,haiku}-<major>[-<minor>][-<yyyymmdd>]` with the
//!   family first and a version below 4.5, where a missing minor (or a date
//!   in its place) is .0 (`claude-sonnet-4-20250514`, `claude-opus-4-1`).
//!
//! It deliberately does not decide for a family-first id whose third part is
//! neither a minor version nor a date (`claude-sonnet-4-latest`): its minor
//! is unknown, so it is accepted.

use super::error::ApiError;

/// The first Claude version Managed Agents runs, as (major, minor).
pub const MIN_VERSION: (u32, u32) = (4, 5);

/// The families that had versions before [`MIN_VERSION`].
const OLDER_FAMILIES: [&str; 3] = ["opus", "sonnet", "haiku"];

/// Most digits of a minor version in a family-first id; longer numbers
/// there are snapshot dates.
const MAX_MINOR_DIGITS: usize = 2;

/// Refuses `id`, given as `field`, if it names a Claude model older than
/// [`MIN_VERSION`].
pub fn check(id: &str, field: &str) -> Result<(), ApiError> {
    if names_older_claude(id) {
        return Err(ApiError::invalid(format!(
            "{field}: {id:?} is a Claude model older than 4.5; Managed Agents runs Claude 4.5 or later \
             (for example claude-sonnet-4-6 or claude-opus-4-6)"
        )));
    }
    Ok(())
}

/// Whether `id` recognisably names a Claude model older than [`MIN_VERSION`].
pub fn names_older_claude(id: &str) -> bool {
    let lower = id.to_ascii_lowercase();
    const VENDOR: &str = "anthropic.";
    let name = match lower.find("anthropic.claude-") {
        Some(at) => &lower[at + VENDOR.len()..],
        None => lower.as_str(),
    };
    let name = name.split(['@', ':']).next().unwrap_or(name);
    let Some(rest) = name.strip_prefix("claude-") else { return false };
    let mut parts = rest.split('-');
    let Some(first) = parts.next() else { return false };
    if first == "instant" || first.strip_prefix('v').and_then(leading_major).is_some() {
        return true;
    }
    if let Some(major) = leading_major(first) {
        return major < MIN_VERSION.0;
    }
    if !OLDER_FAMILIES.contains(&first) {
        return false;
    }
    let Some(major) = parts.next().and_then(number) else { return false };
    let minor = match parts.next() {
        None => 0,
        Some(part) => match number(part) {
            Some(minor) if part.len() <= MAX_MINOR_DIGITS => minor,
            Some(_date) => 0,
            None => return false,
        },
    };
    (major, minor) < MIN_VERSION
}

/// `part` as a number, if it is only ASCII digits.
fn number(part: &str) -> Option<u32> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// The major of a version written first (`2`, `2.1`, `3`): digits, then
/// nothing or a dot and more.
fn leading_major(part: &str) -> Option<u32> {
    let (major, minor) = part.split_once('.').unwrap_or((part, ""));
    if !minor.is_empty() && number(minor).is_none() {
        return None;
    }
    number(major)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_of_the_rule() {
        for (id, older) in [
            ("claude-2", true),
            ("claude-1.3", true),
            ("anthropic.claude-v2:1", true),
            ("anthropic.claude-instant-v1", true),
            ("claude-haiku-4", true),
            ("claude-sonnet-4-5", false),
            ("claude-sonnet-4-latest", false),
            ("claude-4-sonnet", false),
            ("claude-fable-4", false),
            ("claude-3x", false),
            ("claude-sonnet-", false),
            ("claude-", false),
            ("claude", false),
            ("", false),
            ("my-claude-3-proxy", false),
            ("claude-opus-4-99999999999", false),
        ] {
            assert_eq!(names_older_claude(id), older, "{id}");
        }
    }
}
