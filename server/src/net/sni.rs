//! The server name (SNI) a TLS client asks for, read from its first
//! ClientHello, so that the egress proxy can hold a `CONNECT` tunnel to the
//! name it checked: without it, `CONNECT pypi.org:443` could carry TLS for
//! any other name the same front end serves (a CDN, a shared ingress).
//!
//! [`server_name`] parses bytes a sandbox sent, so it never trusts a length:
//! every read is bounds-checked, it never panics, and it looks at no more
//! than [`MAX_HELLO_BYTES`]. It reassembles a ClientHello split over several
//! handshake records (large post-quantum key shares do that) but accepts
//! nothing else before it: the first bytes of the tunnel must be TLS
//! handshake records holding a ClientHello. A ClientHello offering
//! Encrypted Client Hello is refused: the name it really asks for is hidden.

/// Most bytes of TLS records read to find a ClientHello's end. A ClientHello
/// is a few hundred bytes to a few KiB; this is one full record and more.
pub const MAX_HELLO_BYTES: usize = 32 * 1024;
/// The TLS record header: content type, legacy version, length.
const RECORD_HEADER_BYTES: usize = 5;
/// The largest plaintext record fragment TLS allows (2^14).
const MAX_RECORD_BYTES: usize = 16 * 1024;
/// A handshake record's content type.
const CONTENT_HANDSHAKE: u8 = 22;
/// The ClientHello handshake message type.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// The `server_name` extension (RFC 6066).
const EXTENSION_SERVER_NAME: u16 = 0;
/// The `encrypted_client_hello` extension (RFC 9849): the name it asks for
/// is encrypted, and the cleartext one is only the front end's.
const EXTENSION_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
/// The `host_name` name type of a `server_name` entry.
const NAME_TYPE_HOST: u8 = 0;
/// The longest DNS name.
const MAX_NAME_BYTES: usize = 253;

/// Why the first bytes of a tunnel do not name a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("the tunnel does not start with a TLS ClientHello")]
    NotTls,
    #[error("the TLS ClientHello is malformed")]
    Malformed,
    #[error("the TLS ClientHello is larger than {MAX_HELLO_BYTES} bytes")]
    TooLarge,
    #[error("the TLS ClientHello names no server (SNI)")]
    NoServerName,
    #[error("the TLS ClientHello offers Encrypted Client Hello, which hides the server it asks for")]
    Encrypted,
}

/// The host name the ClientHello at the start of `bytes` asks for, lowercase
/// and without a trailing dot; `Ok(None)` while `bytes` holds only part of
/// it (read more and call again).
pub fn server_name(bytes: &[u8]) -> Result<Option<String>, HelloError> {
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = bytes;
    loop {
        let Some(header) = rest.get(..RECORD_HEADER_BYTES) else {
            return incomplete(bytes);
        };
        if header[0] != CONTENT_HANDSHAKE || header[1] != 3 {
            return Err(HelloError::NotTls);
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if length == 0 || length > MAX_RECORD_BYTES {
            return Err(HelloError::Malformed);
        }
        let Some(fragment) = rest.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + length) else {
            return incomplete(bytes);
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[RECORD_HEADER_BYTES + length..];
        let mut reader = Reader::new(&handshake);
        let (Some(kind), Some(body_length)) = (reader.u8(), reader.u24()) else { continue };
        if kind != HANDSHAKE_CLIENT_HELLO {
            return Err(HelloError::NotTls);
        }
        if body_length > MAX_HELLO_BYTES {
            return Err(HelloError::TooLarge);
        }
        if let Some(body) = reader.take(body_length) {
            return client_hello_name(body).map(Some);
        }
    }
}

/// `Ok(None)` unless `bytes` already holds more than a ClientHello may take.
fn incomplete(bytes: &[u8]) -> Result<Option<String>, HelloError> {
    if bytes.len() >= MAX_HELLO_BYTES { Err(HelloError::TooLarge) } else { Ok(None) }
}

/// The host name of a ClientHello's body (RFC 8446 4.1.2, RFC 6066 3).
fn client_hello_name(body: &[u8]) -> Result<String, HelloError> {
    let mut hello = Reader::new(body);
    let malformed = HelloError::Malformed;
    // legacy_version, random
    hello.take(2 + 32).ok_or(malformed.clone())?;
    let session_id = hello.u8().ok_or(malformed.clone())?;
    hello.take(usize::from(session_id)).ok_or(malformed.clone())?;
    let suites = hello.u16().ok_or(malformed.clone())?;
    hello.take(usize::from(suites)).ok_or(malformed.clone())?;
    let compression = hello.u8().ok_or(malformed.clone())?;
    hello.take(usize::from(compression)).ok_or(malformed.clone())?;
    if hello.is_empty() {
        return Err(HelloError::NoServerName);
    }
    let extensions_length = hello.u16().ok_or(malformed.clone())?;
    let mut extensions = Reader::new(hello.take(usize::from(extensions_length)).ok_or(malformed.clone())?);
    let mut found: Option<String> = None;
    while !extensions.is_empty() {
        let kind = extensions.u16().ok_or(malformed.clone())?;
        let length = extensions.u16().ok_or(malformed.clone())?;
        let data = extensions.take(usize::from(length)).ok_or(malformed.clone())?;
        if kind == EXTENSION_ENCRYPTED_CLIENT_HELLO {
            return Err(HelloError::Encrypted);
        }
        if kind != EXTENSION_SERVER_NAME {
            continue;
        }
        if found.is_some() {
            // Each extension appears at most once (RFC 8446 4.2).
            return Err(malformed);
        }
        found = Some(host_name(data)?);
    }
    found.ok_or(HelloError::NoServerName)
}

/// The one `host_name` of a `server_name` extension's data.
fn host_name(data: &[u8]) -> Result<String, HelloError> {
    let mut extension = Reader::new(data);
    let list_length = extension.u16().ok_or(HelloError::Malformed)?;
    let mut list = Reader::new(extension.take(usize::from(list_length)).ok_or(HelloError::Malformed)?);
    if !extension.is_empty() {
        return Err(HelloError::Malformed);
    }
    let mut found: Option<String> = None;
    while !list.is_empty() {
        let kind = list.u8().ok_or(HelloError::Malformed)?;
        let length = list.u16().ok_or(HelloError::Malformed)?;
        let name = list.take(usize::from(length)).ok_or(HelloError::Malformed)?;
        if kind != NAME_TYPE_HOST {
            continue;
        }
        // At most one name of a type (RFC 6066 3), and a DNS name.
        let valid = found.is_none()
            && !name.is_empty()
            && name.len() <= MAX_NAME_BYTES + 1
            && name.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return Err(HelloError::Malformed);
        }
        let text = String::from_utf8_lossy(name);
        found = Some(text.strip_suffix('.').unwrap_or(&text).to_ascii_lowercase());
    }
    match found {
        Some(name) if !name.is_empty() => Ok(name),
        Some(_) => Err(HelloError::Malformed),
        None => Err(HelloError::NoServerName),
    }
}

/// Bounds-checked big-endian reads over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.bytes.split_at_checked(n)?;
        self.bytes = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
#[path = "sni_tests.rs"]
mod tests;
