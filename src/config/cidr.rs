//! [`Cidr`]: an IP network such as `10.0.0.0/8` or `2001:db8::/32`, as
//! `TRUSTED_PROXIES` lists them.
//!
//! Written here rather than taken from a crate: the standard library parses
//! the addresses, and what is left (a prefix length and a mask) is a few
//! lines of integer arithmetic, smaller than a dependency's surface.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 network: the addresses whose first `prefix` bits are the
/// network's.
///
/// IPv4 is held the way a dual-stack socket sees it, as the IPv4-mapped IPv6
/// range (`10.0.0.0/8` is `::ffff:10.0.0.0/104`), so that one comparison
/// serves both families and an IPv4 peer seen as `::ffff:10.1.2.3` is in
/// `10.0.0.0/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address, host bits cleared, as IPv6 bits.
    network: u128,
    /// Leading bits that must match, out of 128.
    prefix: u8,
    /// Whether it was written as IPv4 (for display).
    v4: bool,
}

/// Bits an IPv4 address takes at the end of its IPv4-mapped IPv6 form.
const V4_MAPPED_PREFIX: u8 = 96;

impl Cidr {
    /// Parses `address` or `address/prefix` (IPv4 or IPv6; a bare address is
    /// a single host, `/32` or `/128`). Host bits after the prefix are
    /// cleared: `192.168.1.7/24` is `192.168.1.0/24`. The error says what
    /// was expected.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| {
            "expected an IP address or a CIDR such as 10.0.0.0/8 or fd00::/8".to_owned()
        })?;
        let max = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            None => max,
            Some(digits) => digits
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max && !digits.starts_with('+'))
                .ok_or_else(|| format!("the prefix length must be a number 0-{max}"))?,
        };
        Ok(match address {
            IpAddr::V4(v4) => Cidr::new(mapped_bits(v4), V4_MAPPED_PREFIX + prefix, true),
            IpAddr::V6(v6) => Cidr::new(u128::from(v6), prefix, false),
        })
    }

    fn new(bits: u128, prefix: u8, v4: bool) -> Cidr {
        Cidr {
            network: bits & mask(prefix),
            prefix,
            v4,
        }
    }

    /// Whether `ip` is in this network. An IPv4 address and its IPv4-mapped
    /// IPv6 form are the same address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = match ip {
            IpAddr::V4(v4) => mapped_bits(v4),
            IpAddr::V6(v6) => u128::from(v6),
        };
        (bits ^ self.network) & mask(self.prefix) == 0
    }
}

/// `v4`'s IPv4-mapped IPv6 form (`::ffff:a.b.c.d`), as bits.
fn mapped_bits(v4: Ipv4Addr) -> u128 {
    u128::from(v4.to_ipv6_mapped())
}

/// The leading `prefix` bits set (none for 0).
fn mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = Ipv6Addr::from(self.network);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.v4 => write!(f, "{v4}/{}", self.prefix - V4_MAPPED_PREFIX),
            _ => write!(f, "{v6}/{}", self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn cidr(text: &str) -> Cidr {
        Cidr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn ipv4_networks() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains(ip("10.0.0.0")));
        assert!(net.contains(ip("10.255.255.255")));
        assert!(!net.contains(ip("11.0.0.0")));
        assert!(!net.contains(ip("9.255.255.255")));
        let host = cidr("127.0.0.1");
        assert_eq!(host, cidr("127.0.0.1/32"));
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));
        let all = cidr("0.0.0.0/0");
        assert!(all.contains(ip("1.2.3.4")) && all.contains(ip("255.255.255.255")));
        assert!(
            !all.contains(ip("2001:db8::1")),
            "IPv4 /0 is not every IPv6"
        );
        let odd = cidr("192.168.1.128/25");
        assert!(odd.contains(ip("192.168.1.200")));
        assert!(!odd.contains(ip("192.168.1.127")));
    }

    #[test]
    fn ipv6_networks() {
        let net = cidr("2001:db8::/32");
        assert!(net.contains(ip("2001:db8::1")));
        assert!(net.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!net.contains(ip("2001:db9::")));
        assert!(!net.contains(ip("10.0.0.1")));
        let host = cidr("::1");
        assert_eq!(host, cidr("::1/128"));
        assert!(host.contains(ip("::1")) && !host.contains(ip("::2")));
        assert!(cidr("::/0").contains(ip("fe80::1")));
        assert!(cidr("fd00::/8").contains(ip("fdab:cdef::1")));
    }

    #[test]
    fn ipv4_and_its_mapped_ipv6_form_are_one_address() {
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(cidr("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
        assert_eq!(
            cidr("::ffff:10.0.0.0/104").network,
            cidr("10.0.0.0/8").network
        );
        assert!(!cidr("::ffff:10.0.0.0/104").contains(ip("11.1.2.3")));
        // Every IPv6 includes the IPv4-mapped range.
        assert!(cidr("::/0").contains(ip("10.1.2.3")));
    }

    #[test]
    fn host_bits_are_cleared_and_display_is_canonical() {
        assert_eq!(cidr("192.168.1.7/24"), cidr("192.168.1.0/24"));
        assert_eq!(cidr("192.168.1.7/24").to_string(), "192.168.1.0/24");
        assert_eq!(cidr(" 10.1.2.3/8 ").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("2001:db8::7/64").to_string(), "2001:db8::/64");
        assert_eq!(cidr("127.0.0.1").to_string(), "127.0.0.1/32");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::/0").to_string(), "::/0");
        assert_eq!(
            cidr("::ffff:10.0.0.0/104").to_string(),
            "::ffff:10.0.0.0/104"
        );
    }

    #[test]
    fn garbage_is_refused_with_what_was_expected() {
        for (bad, says) in [
            ("", "IP address"),
            ("localhost", "IP address"),
            ("10.0.0", "IP address"),
            ("10.0.0.0/", "0-32"),
            ("10.0.0.0/33", "0-32"),
            ("10.0.0.0/-1", "0-32"),
            ("10.0.0.0/+8", "0-32"),
            ("10.0.0.0/8/8", "0-32"),
            ("10.0.0.0/ 8", "0-32"),
            ("10.0.0.0/08x", "0-32"),
            ("::/129", "0-128"),
            ("::/256", "0-128"),
            ("fe80::1%eth0", "IP address"),
            ("[::1]", "IP address"),
            ("10.0.0.0 /8", "IP address"),
            ("/8", "IP address"),
            ("10.0.0.1:80", "IP address"),
        ] {
            let e = Cidr::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
