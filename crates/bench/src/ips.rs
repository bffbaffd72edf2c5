//! Source-address lists for `--source-ips`.
//!
//! One source address has ~28k ephemeral ports (32768–60999), so a load test
//! past that binds its connections to several loopback addresses
//! (127.0.0.1, 127.0.0.2, …). The flag takes a comma-separated list of
//! addresses and inclusive IPv4 ranges: `127.0.0.1-127.0.0.8,127.0.1.1`.

use std::net::{IpAddr, Ipv4Addr};

/// More addresses than this in one list is a typo, not a plan.
pub const MAX_ADDRESSES: usize = 65_536;

/// Parses `a,b-c,…` into the list of addresses, in order.
pub fn parse_source_ips(text: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once('-') {
            None => out.push(parse_ip(item)?),
            Some((from, to)) => out.extend(parse_range(from.trim(), to.trim())?),
        }
        if out.len() > MAX_ADDRESSES {
            return Err(format!(
                "{text:?} names more than {MAX_ADDRESSES} addresses"
            ));
        }
    }
    if out.is_empty() {
        return Err("no source address given".to_string());
    }
    Ok(out)
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IP address"))
}

/// An inclusive IPv4 range `from-to`.
fn parse_range(from: &str, to: &str) -> Result<Vec<IpAddr>, String> {
    let (IpAddr::V4(a), IpAddr::V4(b)) = (parse_ip(from)?, parse_ip(to)?) else {
        return Err(format!(
            "{from}-{to}: ranges are IPv4 only; list IPv6 addresses one by one"
        ));
    };
    let (a, b) = (u32::from(a), u32::from(b));
    if a > b {
        return Err(format!("{from}-{to}: the range runs backwards"));
    }
    if (b - a) as usize >= MAX_ADDRESSES {
        return Err(format!("{from}-{to}: more than {MAX_ADDRESSES} addresses"));
    }
    Ok((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn single_addresses_and_ranges() {
        assert_eq!(
            parse_source_ips("127.0.0.1").unwrap(),
            vec![v4("127.0.0.1")]
        );
        let r = parse_source_ips("127.0.0.1-127.0.0.8").unwrap();
        assert_eq!(r.len(), 8);
        assert_eq!(r[0], v4("127.0.0.1"));
        assert_eq!(r[7], v4("127.0.0.8"));
        let r = parse_source_ips("127.0.0.255-127.0.1.1, 10.0.0.1 ,::1").unwrap();
        assert_eq!(
            r,
            vec![
                v4("127.0.0.255"),
                v4("127.0.1.0"),
                v4("127.0.1.1"),
                v4("10.0.0.1"),
                v4("::1")
            ]
        );
    }

    #[test]
    fn bad_lists_are_errors() {
        assert!(parse_source_ips("").is_err());
        assert!(parse_source_ips(" , ").is_err());
        assert!(parse_source_ips("127.0.0.300").is_err());
        assert!(parse_source_ips("127.0.0.8-127.0.0.1").is_err());
        assert!(parse_source_ips("::1-::2").is_err());
        assert!(parse_source_ips("10.0.0.0-10.255.255.255").is_err());
    }
}
