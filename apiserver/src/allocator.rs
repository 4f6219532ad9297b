//! Service IP ranges.

use std::net::Ipv4Addr;

/// Parses `a.b.c.d/n` (IPv4).
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, bits) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    (bits <= 30).then_some((ip, bits))
}

/// The first usable address of the range: the `kubernetes` Service's IP.
pub fn first_ip(cidr: &str) -> Option<Ipv4Addr> {
    let (ip, bits) = parse_cidr(cidr)?;
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    Some(Ipv4Addr::from((u32::from(ip) & mask) + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_service_ip() {
        assert_eq!(first_ip("10.43.0.0/16"), Some(Ipv4Addr::new(10, 43, 0, 1)));
        assert!(parse_cidr("10.43.0.0").is_none());
        assert!(parse_cidr("nonsense/8").is_none());
    }
}
