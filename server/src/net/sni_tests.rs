use proptest::prelude::*;

use super::*;

/// A ClientHello body with these extensions (type, data).
fn hello_body(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.push(32);
    body.extend([9u8; 32]);
    body.extend([0, 4, 0x13, 0x01, 0x13, 0x02]);
    body.extend([1, 0]);
    let mut ext = Vec::new();
    for (kind, data) in extensions {
        ext.extend(kind.to_be_bytes());
        ext.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
        ext.extend(data);
    }
    body.extend(u16::try_from(ext.len()).unwrap().to_be_bytes());
    body.extend(ext);
    body
}

/// A `server_name` extension's data naming `names` (type, name).
fn sni(names: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in names {
        list.push(*kind);
        list.extend(u16::try_from(name.len()).unwrap().to_be_bytes());
        list.extend(*name);
    }
    let mut data = u16::try_from(list.len()).unwrap().to_be_bytes().to_vec();
    data.extend(list);
    data
}

/// The body as a handshake message cut into records of at most `chunk` bytes.
fn records(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut handshake = vec![HANDSHAKE_CLIENT_HELLO];
    handshake.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend(body);
    let mut out = Vec::new();
    for fragment in handshake.chunks(chunk) {
        out.extend([CONTENT_HANDSHAKE, 3, 1]);
        out.extend(u16::try_from(fragment.len()).unwrap().to_be_bytes());
        out.extend(fragment);
    }
    out
}

fn hello_for(name: &[u8]) -> Vec<u8> {
    records(&hello_body(&[(10, vec![0, 2, 0, 29]), (0, sni(&[(0, name)])), (43, vec![2, 3, 4])]), 16 * 1024)
}

#[test]
fn reads_the_server_name_of_a_client_hello() {
    assert_eq!(server_name(&hello_for(b"PyPI.org.")), Ok(Some("pypi.org".to_owned())));
    // Split over records, and bytes after it (the client's next flight) are ignored.
    let body = hello_body(&[(0, sni(&[(0, b"registry.npmjs.org")]))]);
    let mut split = records(&body, 7);
    split.extend([23, 3, 3, 0, 1, 0]);
    assert_eq!(server_name(&split), Ok(Some("registry.npmjs.org".to_owned())));
}

#[test]
fn a_partial_hello_asks_for_more() {
    let hello = hello_for(b"pypi.org");
    for cut in 0..hello.len() {
        assert_eq!(server_name(&hello[..cut]), Ok(None), "cut at {cut}");
    }
}

#[test]
fn refuses_hellos_without_one_valid_name() {
    let no_sni = records(&hello_body(&[(10, vec![0, 2, 0, 29])]), 16 * 1024);
    assert_eq!(server_name(&no_sni), Err(HelloError::NoServerName));
    let mut no_extensions = hello_body(&[]);
    no_extensions.truncate(no_extensions.len() - 2);
    assert_eq!(server_name(&records(&no_extensions, 16 * 1024)), Err(HelloError::NoServerName));
    let two_names = records(&hello_body(&[(0, sni(&[(0, b"a.com"), (0, b"b.com")]))]), 16 * 1024);
    assert_eq!(server_name(&two_names), Err(HelloError::Malformed));
    let two_extensions = records(&hello_body(&[(0, sni(&[(0, b"a.com")])), (0, sni(&[(0, b"b.com")]))]), 16 * 1024);
    assert_eq!(server_name(&two_extensions), Err(HelloError::Malformed));
    for bad in [&b""[..], b".", b"a b.com", b"a\0.com", b"caf\xc3\xa9.com"] {
        assert_eq!(server_name(&hello_for(bad)), Err(HelloError::Malformed), "{bad:?}");
    }
    // A name list longer than its extension.
    let mut short = sni(&[(0, b"a.com")]);
    short[1] += 1;
    assert_eq!(server_name(&records(&hello_body(&[(0, short)]), 16 * 1024)), Err(HelloError::Malformed));
}

#[test]
fn refuses_what_is_not_a_client_hello() {
    assert_eq!(server_name(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Err(HelloError::NotTls));
    assert_eq!(server_name(b"SSH-2.0-OpenSSH_9.2\r\n"), Err(HelloError::NotTls));
    // A ServerHello, an application-data record, an empty record.
    assert_eq!(server_name(&[22, 3, 3, 0, 4, 2, 0, 0, 0]), Err(HelloError::NotTls));
    assert_eq!(server_name(&[23, 3, 3, 0, 1, 0]), Err(HelloError::NotTls));
    assert_eq!(server_name(&[22, 3, 1, 0, 0]), Err(HelloError::Malformed));
    // A record longer than TLS allows, a hello longer than the bound.
    assert_eq!(server_name(&[22, 3, 1, 0x40, 0x01]), Err(HelloError::Malformed));
    assert_eq!(server_name(&[22, 3, 1, 0, 4, 1, 0x01, 0, 0]), Err(HelloError::TooLarge));
    // A hello cut into one-byte records stops at the bound, not at its end.
    let body = hello_body(&[(0, sni(&[(0, "a".repeat(200).as_bytes())]))]);
    let mut padded = body.clone();
    padded.extend(vec![0u8; 10_000]);
    let tiny = records(&padded, 1);
    assert!(tiny.len() > MAX_HELLO_BYTES);
    assert_eq!(server_name(&tiny[..MAX_HELLO_BYTES - 1]), Ok(None));
    assert_eq!(server_name(&tiny[..MAX_HELLO_BYTES]), Err(HelloError::TooLarge));
}

proptest! {
    /// Any bytes give an answer, never a panic; truncating a valid hello
    /// asks for more; corrupting one byte never yields a name the hello
    /// does not hold in some form.
    #[test]
    fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = server_name(&bytes);
        let mut framed = vec![22, 3, 1];
        framed.extend(u16::try_from(bytes.len()).unwrap_or(0).to_be_bytes());
        framed.extend(&bytes);
        let _ = server_name(&framed);
    }

    #[test]
    fn corrupted_hellos_never_panic(index in 0usize..200, value in any::<u8>()) {
        let mut hello = hello_for(b"pypi.org");
        let at = index % hello.len();
        hello[at] = value;
        let _ = server_name(&hello);
    }
}
