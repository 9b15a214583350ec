use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::ReadBuf;

use super::*;

const MARKER: &[u8] = b"\n__M_3 ";

/// Pushes `chunks` through a fresh scan; what it found, if anything.
fn scan_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Option<(i32, Vec<u8>, Vec<u8>)> {
    let mut buf = TailBuffer::new(1024);
    let mut scan = MarkerScan::new(MARKER);
    for chunk in chunks {
        if let Some(found) = scan.push(&mut buf, chunk) {
            let output = buf.bytes()[..found.end].to_vec();
            return Some((found.status, output, found.rest));
        }
    }
    None
}

#[test]
fn finds_the_marker_line_and_keeps_what_follows() {
    let bytes = b"hello\n\n__M_3 42\nlate background output";
    let (status, output, rest) = scan_chunks([&bytes[..]]).unwrap();
    assert_eq!((status, output.as_slice(), rest.as_slice()), (42, &b"hello\n"[..], &b"late background output"[..]));
    assert!(scan_chunks([&b"x\n__M_3 4"[..]]).is_none(), "an unfinished line is not a marker yet");
    assert!(scan_chunks([&b"x\n__M_2 0\n"[..]]).is_none(), "an older marker does not count");
    assert!(scan_chunks([&b"x\n__M_3 zero\n"[..]]).is_none(), "a status that is not a number does not count");
    let (status, ..) = scan_chunks([&b"x\n__M_3 zero\n"[..], b"\n__M_3 5\n"]).unwrap();
    assert_eq!(status, 5, "a later marker line still counts");
}

/// Goal: the scan finds a marker however the reads cut the output: inside
/// the marker, the status or right before the newline. Method: every cut
/// into two reads, and a read per byte, against the whole in one read.
#[test]
fn a_marker_cut_across_reads_is_found() {
    let bytes = b"out\nput\n__M_3 x\n\n__M_3 17\nafter";
    let whole = scan_chunks([&bytes[..]]);
    assert_eq!(whole, Some((17, b"out\nput\n__M_3 x\n".to_vec(), b"after".to_vec())));
    for cut in 0..=bytes.len() {
        let (head, tail) = bytes.split_at(cut);
        let found = scan_chunks([head, tail]);
        // Found in the first read if it holds the whole marker line: the
        // rest is then what that read held past it.
        let line_end = bytes.len() - "after".len();
        let expected_rest = if cut >= line_end { &bytes[line_end..cut] } else { &bytes[line_end..] };
        let (status, output, rest) = found.unwrap_or_else(|| panic!("not found when cut at {cut}"));
        assert_eq!((status, output.as_slice()), (17, &b"out\nput\n__M_3 x\n"[..]), "cut at {cut}");
        assert_eq!(rest, expected_rest, "cut at {cut}");
    }
    let (status, output, rest) = scan_chunks(bytes.chunks(1)).unwrap();
    assert_eq!((status, output.as_slice(), rest.as_slice()), (17, &b"out\nput\n__M_3 x\n"[..], &b""[..]));
}

/// Goal: a marker whose line grew out of the buffer is not taken for one.
/// Method: a marker prefix, more than the buffer of bytes with no newline,
/// then a newline.
#[test]
fn a_marker_pushed_out_of_the_buffer_does_not_count() {
    let filler = vec![b'7'; 2048];
    assert!(scan_chunks([&b"\n__M_3 "[..], &filler, b"\n"]).is_none());
}

/// Yields its chunks one read at a time (each cut to the reader's buffer).
struct Chunks(VecDeque<Vec<u8>>);

impl AsyncRead for Chunks {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if let Some(mut chunk) = self.0.pop_front() {
            let n = chunk.len().min(out.remaining());
            out.put_slice(&chunk[..n]);
            if n < chunk.len() {
                self.0.push_front(chunk.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Goal: what the server spends reading a command's output grows with the
/// output's bytes, not with the bytes it already holds times the number of
/// reads: a sandbox must not be able to keep a server core busy by printing
/// slowly (a full output buffer is 100 KiB; rescanning it per read made
/// 3,000 one-byte reads cost 300 MB of scanning). Method: the reader the
/// shell's output is read with, fed a 150 KB output then 3,000 one-byte
/// reads and a marker line a byte at a time; the bytes the scan looked at
/// are counted (work done, not time, so a busy machine cannot fail it).
#[tokio::test]
async fn a_slow_trickle_after_a_large_output_is_scanned_once() {
    let marker = b"\n__LOGBOOK_DONE_0123456789abcdef0123456789abcdef_1 ";
    let mut chunks = VecDeque::from([vec![b'x'; 150_000]]);
    chunks.extend(std::iter::repeat_n(vec![b'y'], 3000));
    chunks.extend([&marker[..], b"0\n"].concat().into_iter().map(|byte| vec![byte]));
    let n_reads = chunks.len();
    let total: usize = chunks.iter().map(Vec::len).sum();
    let mut reader = Chunks(chunks);
    let mut buf = TailBuffer::new(MAX_OUTPUT_BYTES + marker.len() + 16);
    let mut scan = MarkerScan::new(marker);
    let found = read_to_marker(&mut reader, &mut buf, &mut scan).await.unwrap().unwrap();
    assert_eq!((found.status, found.rest.as_slice()), (0, &b""[..]));
    let output = &buf.bytes()[..found.end];
    assert!(output.ends_with(&[b'y'; 3000]) && output.len() >= MAX_OUTPUT_BYTES, "{}", output.len());
    // Each read's bytes at most twice (the marker, the end of its line) and
    // the marker's length of overlap.
    let bound = 2 * total + n_reads * marker.len();
    assert!(scan.scanned <= bound, "{} bytes scanned for {total} bytes in {n_reads} reads", scan.scanned);
}
