//! What the bash tool gives the model from a command's raw output: the last
//! [`MAX_OUTPUT_BYTES`] bytes (an output flood never holds more than that in
//! the server), ANSI escape sequences removed, decoded as UTF-8 with
//! replacement characters, and `[output truncated]` first when the start was
//! cut.
//!
//! Pure: no IO, so the bash tool and the tests share exactly this code.

/// The most output the bash tool keeps per command; the tail is kept.
pub const MAX_OUTPUT_BYTES: usize = 100 * 1024;

/// The first line of an output whose start was cut.
pub const TRUNCATED_MARKER: &str = "[output truncated]";

/// Keeps the last `cap` bytes pushed into it, and whether anything was dropped.
#[derive(Debug, Clone)]
pub struct TailBuffer {
    cap: usize,
    buf: Vec<u8>,
    truncated: bool,
}

impl TailBuffer {
    pub fn new(cap: usize) -> TailBuffer {
        TailBuffer { cap, buf: Vec::new(), truncated: false }
    }

    /// Appends `bytes`, dropping the oldest bytes beyond the cap. Amortised
    /// O(n): the buffer is compacted only once it holds twice the cap.
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.len() >= self.cap {
            self.truncated |= !self.buf.is_empty() || bytes.len() > self.cap;
            self.buf.clear();
            self.buf.extend_from_slice(&bytes[bytes.len() - self.cap..]);
            return;
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > 2 * self.cap {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
            self.truncated = true;
        }
    }

    /// The bytes held (at most twice the cap until [`TailBuffer::finish`]).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the last `n` bytes (the completion marker of a command).
    pub fn truncate_end(&mut self, n: usize) {
        let keep = self.buf.len().saturating_sub(n);
        self.buf.truncate(keep);
    }

    /// The kept tail (at most `cap` bytes) and whether the start was cut.
    pub fn finish(mut self) -> (Vec<u8>, bool) {
        if self.buf.len() > self.cap {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
            self.truncated = true;
        }
        (self.buf, self.truncated)
    }
}

/// The text the model sees for raw output `bytes` whose start may have been cut.
pub fn render(bytes: &[u8], truncated: bool) -> String {
    let stripped = strip_ansi(bytes);
    // A cut can land inside a UTF-8 sequence: skip its continuation bytes.
    let start = if truncated { stripped.iter().take(3).take_while(|b| (**b & 0xC0) == 0x80).count() } else { 0 };
    let text = String::from_utf8_lossy(&stripped[start..]).replace("\r\n", "\n");
    if truncated { format!("{TRUNCATED_MARKER}\n{text}") } else { text }
}

/// Removes ANSI escape sequences: CSI (`ESC [` ... final byte), OSC (`ESC ]`
/// ... BEL or `ESC \`), the string commands DCS, SOS, PM and APC (up to
/// `ESC \`), and two- and three-byte escapes (`ESC c`, `ESC ( B`). A sequence
/// cut off by the end of the output is dropped.
pub fn strip_ansi(bytes: &[u8]) -> Vec<u8> {
    const ESC: u8 = 0x1b;
    const BEL: u8 = 0x07;
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        let byte = bytes[idx];
        if byte != ESC {
            out.push(byte);
            idx += 1;
            continue;
        }
        let Some(&kind) = bytes.get(idx + 1) else { break };
        idx += 2;
        match kind {
            b'[' => {
                // Parameter and intermediate bytes, then one final byte.
                while idx < bytes.len() && !(0x40..=0x7e).contains(&bytes[idx]) {
                    idx += 1;
                }
                idx += 1;
            }
            b']' | b'P' | b'X' | b'^' | b'_' => {
                // A string, ended by BEL (OSC only) or ST (`ESC \`).
                while idx < bytes.len() {
                    if bytes[idx] == BEL && kind == b']' {
                        idx += 1;
                        break;
                    }
                    if bytes[idx] == ESC && bytes.get(idx + 1) == Some(&b'\\') {
                        idx += 2;
                        break;
                    }
                    idx += 1;
                }
            }
            0x20..=0x2f => {
                // Intermediate bytes, then a final byte (`ESC ( B`).
                while idx < bytes.len() && (0x20..=0x2f).contains(&bytes[idx]) {
                    idx += 1;
                }
                idx += 1;
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
