//! The one address filter: [`is_public`] says whether a connection to an IP
//! address may be opened for a session. It is applied after DNS resolution and
//! again on every redirect, never to host names as strings.
//!
//! Refused: unspecified and `0.0.0.0/8`, loopback, RFC 1918 private, CGNAT
//! `100.64.0.0/10`, link-local (which holds the `169.254.169.254` metadata
//! address), IETF protocol assignments `192.0.0.0/24`, benchmarking
//! `198.18.0.0/15`, multicast, the reserved `240.0.0.0/4` and broadcast; for
//! IPv6 the same classes (loopback, unspecified, unique local `fc00::/7`,
//! link-local `fe80::/10`, site-local `fec0::/10`, multicast, discard-only
//! `100::/64`) and any IPv4 address embedded in it (IPv4-mapped, IPv4-compatible,
//! NAT64 `64:ff9b::/96`, 6to4 `2002::/16`), judged as that IPv4 address.
//!
//! The documentation ranges (`192.0.2.0/24`, `198.51.100.0/24`,
//! `203.0.113.0/24`) are allowed on purpose: package registries reach this
//! project's machines through such an address, and the tests use
//! `198.51.100.0/24` inside network namespaces as fake public hosts.
//!
//! Also refused, whatever its class: the host's own addresses (every local
//! IPv4 route of `/proc/net/fib_trie`, which holds each interface address and
//! any locally routed prefix, and every IPv6 address of `/proc/net/if_inet6`),
//! so that a service listening on all interfaces of a host whose address
//! looks public is not reachable through a session's egress. They are read
//! when first needed and again once they are [`OWN_ADDRESSES_MAX_AGE`] old;
//! an address added since is refused from the next read on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How long the host's own addresses, once read, are used before being read
/// again.
pub const OWN_ADDRESSES_MAX_AGE: Duration = Duration::from_secs(10);
/// Most bytes read of one `/proc/net` table (a router holding a full table
/// has a huge `fib_trie`; its local routes come early in the `Local:` table
/// only on small hosts, so this is a bound, not a guarantee).
const MAX_TABLE_BYTES: u64 = 8 * 1024 * 1024;
/// Where the kernel lists the IPv4 routing tables, local routes included.
const FIB_TRIE: &str = "/proc/net/fib_trie";
/// Where the kernel lists the IPv6 interface addresses.
const IF_INET6: &str = "/proc/net/if_inet6";

/// Whether a session may connect to `ip`: a public class of address, and not
/// one of the host's own.
pub fn is_public(ip: IpAddr) -> bool {
    is_public_given(ip, is_own)
}

/// [`is_public`], with `own` saying which addresses are the host's.
fn is_public_given(ip: IpAddr, own: impl Fn(IpAddr) -> bool) -> bool {
    let public = match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    };
    // An IPv6 address in an embedding form may be the host's own as itself
    // (a 6to4 or NAT64 address on an interface) or as the IPv4 address it
    // carries: both are refused.
    public && !own(ip) && !own(canonical(ip))
}

/// The IPv4 address an IPv6 address carries, or the address itself.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
    }
}

/// A prefix of addresses the host treats as its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OwnNet {
    addr: IpAddr,
    prefix: u8,
}

impl OwnNet {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

/// The host's own addresses as last read.
#[derive(Debug)]
struct OwnAddresses {
    read_at: Option<Instant>,
    nets: Vec<OwnNet>,
}

static OWN: RwLock<OwnAddresses> = RwLock::new(OwnAddresses { read_at: None, nets: Vec::new() });

/// Whether `ip` is one of the host's own addresses (read again when stale).
fn is_own(ip: IpAddr) -> bool {
    let fresh = |own: &OwnAddresses| own.read_at.is_some_and(|at| at.elapsed() < OWN_ADDRESSES_MAX_AGE);
    {
        let own = OWN.read().unwrap_or_else(PoisonError::into_inner);
        if fresh(&own) {
            return own.nets.iter().any(|net| net.contains(ip));
        }
    }
    let mut own = OWN.write().unwrap_or_else(PoisonError::into_inner);
    if !fresh(&own) {
        match read_own_addresses() {
            Ok(nets) => own.nets = nets,
            // Keep the last list; a host without /proc/net has no other source.
            Err(err) => tracing::warn!(error = %err, "cannot read the host's own addresses"),
        }
        own.read_at = Some(Instant::now());
    }
    own.nets.iter().any(|net| net.contains(ip))
}

/// Reads the host's own addresses from `/proc/net` now (also at start-up, so
/// that a failure shows in the log early). Returns how many prefixes it found.
pub fn refresh_own_addresses() -> std::io::Result<usize> {
    let nets = read_own_addresses()?;
    let n = nets.len();
    let mut own = OWN.write().unwrap_or_else(PoisonError::into_inner);
    *own = OwnAddresses { read_at: Some(Instant::now()), nets };
    Ok(n)
}

fn read_own_addresses() -> std::io::Result<Vec<OwnNet>> {
    let mut nets = local_v4_routes(&read_table(FIB_TRIE)?);
    // A host without IPv6 has no if_inet6.
    match read_table(IF_INET6) {
        Ok(text) => nets.extend(v6_addresses(&text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    Ok(nets)
}

fn read_table(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?.take(MAX_TABLE_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

/// The local routes of a `fib_trie` listing: each `|-- ADDRESS` line followed
/// by a `/PREFIX host LOCAL` (an interface address, or a locally routed
/// prefix) or `/32 link BROADCAST` line.
fn local_v4_routes(fib_trie: &str) -> Vec<OwnNet> {
    let mut nets = Vec::new();
    let mut current: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            current = addr.trim().parse().ok();
            continue;
        }
        let Some(route) = line.strip_prefix('/') else { continue };
        let mut words = route.split_whitespace();
        let (Some(prefix), Some(_scope), Some(kind)) = (words.next(), words.next(), words.next()) else { continue };
        let (Some(addr), Ok(prefix)) = (current, prefix.parse::<u8>()) else { continue };
        if (kind == "LOCAL" || kind == "BROADCAST") && prefix <= 32 {
            let net = OwnNet { addr: IpAddr::V4(addr), prefix };
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
    }
    nets
}

/// The addresses of an `if_inet6` listing (32 hex digits first on each line).
fn v6_addresses(if_inet6: &str) -> Vec<OwnNet> {
    if_inet6
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok().filter(|_| hex.len() == 32))
        .map(|bits| OwnNet { addr: IpAddr::V6(Ipv6Addr::from(bits)), prefix: 128 })
        .collect()
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0
        || ip.is_loopback()
        || ip.is_private()
        || (a == 100 && (64..128).contains(&b))
        || ip.is_link_local()
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || ip.is_multicast()
        || a >= 240;
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    let first = segments[0];
    let refused = ip.is_loopback()
        || ip.is_unspecified()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || ip.is_multicast()
        || (segments[..4] == [0x0100, 0, 0, 0]);
    !refused
}

/// The IPv4 address an IPv6 address carries, in the forms that route to it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated but routed by some stacks).
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        [0, 0, 0, 0, 0, 0, _, _] if s[6] != 0 || s[7] > 1 => Some(tail),
        // ::ffff:0:a.b.c.d (SIIT translated).
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(tail),
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix) and its local-use 64:ff9b:1::/48.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x64, 0xff9b, 1, _, _, _, _, _] => Some(tail),
        // 2002:AABB:CCDD::/48 (6to4).
        [0x2002, hi, lo, _, _, _, _, _] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> bool {
        match text.parse::<IpAddr>() {
            Ok(ip) => is_public(ip),
            Err(err) => panic!("{text}: {err}"),
        }
    }

    #[test]
    fn refuses_internal_addresses() {
        for text in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "169.254.0.1",
            "192.0.0.170",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::ffff:0:127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "::ffff:0.0.0.0",
        ] {
            assert!(!check(text), "{text} must be refused");
        }
    }

    #[test]
    fn the_hosts_own_addresses_come_from_proc() {
        let fib_trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
            Local:\n     +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.0\n              /8 host LOCAL\n\
            |-- 192.0.2.0\n              /24 link UNICAST\n           |-- 192.0.2.2\n              /32 host LOCAL\n\
            |-- 192.0.2.255\n           /32 link BROADCAST\n     |-- 203.0.113.0\n        /24 host LOCAL\n\
            |-- garbage\n        /32 host LOCAL\n     |-- 10.0.0.1\n        /99 host LOCAL\n";
        let nets = local_v4_routes(fib_trie);
        let own = |text: &str| nets.iter().any(|net| net.contains(text.parse().unwrap()));
        assert_eq!(nets.len(), 4, "{nets:?}");
        assert!(own("127.9.9.9") && own("192.0.2.2") && own("192.0.2.255") && own("203.0.113.77"));
        assert!(!own("192.0.2.1") && !own("10.0.0.1") && !own("8.8.8.8"));
        let v6 = v6_addresses(
            "00000000000000000000000000000001 01 80 10 80       lo\n\
             20010db8000000000000000000000002 04 40 00 82     eth0\nshort 1 2\n",
        );
        assert_eq!(v6.len(), 2);
        assert!(v6[1].contains("2001:db8::2".parse().unwrap()) && !v6[1].contains("2001:db8::3".parse().unwrap()));
    }

    #[test]
    fn the_hosts_own_address_is_not_public() {
        // Every address of this host's interfaces, whatever its class.
        refresh_own_addresses().unwrap();
        let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        if probe.connect("8.8.8.8:53").is_ok() {
            let own = probe.local_addr().unwrap().ip();
            assert!(!is_public(own), "{own}");
            if let IpAddr::V4(v4) = own {
                assert!(!is_public(IpAddr::V6(v4.to_ipv6_mapped())), "{own} mapped");
            }
        }
    }

    #[test]
    fn an_own_address_in_an_embedding_form_is_own_as_itself_and_as_what_it_carries() {
        // The host holds a 6to4 address (carrying 192.88.99.7, a public
        // IPv4 address it does not hold) and the IPv4 address 198.51.100.9.
        let nets = [
            OwnNet { addr: "2002:c058:6307::1".parse().unwrap(), prefix: 128 },
            OwnNet { addr: "198.51.100.9".parse().unwrap(), prefix: 32 },
        ];
        let own = |ip: IpAddr| nets.iter().any(|net| net.contains(ip));
        let public = |text: &str| is_public_given(text.parse().unwrap(), own);
        assert!(!public("2002:c058:6307::1"), "the host's own 6to4 address");
        assert!(public("2002:c058:6307::2") && public("192.88.99.7"));
        assert!(!public("198.51.100.9") && !public("::ffff:198.51.100.9") && !public("64:ff9b::c633:6409"));
    }

    #[test]
    fn allows_public_and_documentation_addresses() {
        for text in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.80",
            "2606:4700::1111",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(check(text), "{text} must be allowed");
        }
    }
}
