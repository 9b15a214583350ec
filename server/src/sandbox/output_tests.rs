use super::*;

#[test]
fn strips_colour_cursor_title_and_charset_sequences() {
    let raw = b"\x1b[1;31mred\x1b[0m \x1b]0;title\x07plain \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ \x1b(Bok\x1bc\x1b[2K\x1b[?25h!";
    assert_eq!(String::from_utf8(strip_ansi(raw)).unwrap(), "red plain link ok!");
}

#[test]
fn a_cut_sequence_at_the_end_is_dropped() {
    assert_eq!(strip_ansi(b"abc\x1b[31"), b"abc");
    assert_eq!(strip_ansi(b"abc\x1b"), b"abc");
}

#[test]
fn the_tail_is_kept_and_marked() {
    let mut buf = TailBuffer::new(10);
    for chunk in [&b"0123456789"[..], b"abcdef", b"XYZ"] {
        buf.push(chunk);
    }
    let (bytes, truncated) = buf.finish();
    assert_eq!(bytes, b"6789abcdefXYZ"[3..]);
    assert!(truncated);
    assert_eq!(render(&bytes, truncated), "[output truncated]\n9abcdefXYZ");
}

#[test]
fn output_within_the_cap_is_not_marked() {
    let mut buf = TailBuffer::new(10);
    buf.push(b"hello");
    buf.push(b"world");
    let (bytes, truncated) = buf.finish();
    assert_eq!((bytes.as_slice(), truncated), (&b"helloworld"[..], false));
}

#[test]
fn a_huge_chunk_keeps_only_its_tail() {
    let mut buf = TailBuffer::new(4);
    buf.push(b"ab");
    buf.push(b"0123456789");
    let (bytes, truncated) = buf.finish();
    assert_eq!((bytes.as_slice(), truncated), (&b"6789"[..], true));
}

#[test]
fn a_cut_inside_a_utf8_character_is_skipped() {
    // "é" is C3 A9: a cut after C3 leaves a lone continuation byte.
    assert_eq!(render(b"\xa9ok", true), "[output truncated]\nok");
    assert_eq!(render("caf\u{e9}\r\n".as_bytes(), false), "caf\u{e9}\n");
}

#[test]
fn memory_stays_bounded_under_a_flood() {
    let mut buf = TailBuffer::new(MAX_OUTPUT_BYTES);
    let chunk = vec![b'y'; 8192];
    for _ in 0..1000 {
        buf.push(&chunk);
        assert!(buf.bytes().len() <= 2 * MAX_OUTPUT_BYTES);
    }
    let (bytes, truncated) = buf.finish();
    assert_eq!(bytes.len(), MAX_OUTPUT_BYTES);
    assert!(truncated);
}
