//! Loopback addresses for simulated nodes.
//!
//! Node `i` gets its own address in 127.0.0.0/8, so a metrics server sees one address per node as
//! in a real cluster. Host parts 0 and 255 are skipped (they read as network and broadcast
//! addresses), and so is 127.0.0.1, which other local services use.

use std::net::Ipv4Addr;

/// Host parts per /24: 1..=254.
const PER_24: u64 = 254;

/// How many nodes can get an address.
pub const CAPACITY: u64 = PER_24 * 256 * 256 - 1;

/// The address of node `index`, or `None` past [`CAPACITY`].
pub fn node_ip(index: u64) -> Option<Ipv4Addr> {
    // Position 0 would be 127.0.0.1.
    let j = index.checked_add(1)?;
    if j > CAPACITY {
        return None;
    }
    let host = (1 + j % PER_24) as u8;
    let rest = j / PER_24;
    Some(Ipv4Addr::new(
        127,
        (rest / 256) as u8,
        (rest % 256) as u8,
        host,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn addresses_are_distinct_and_skip_reserved_host_parts() {
        let mut seen = HashSet::new();
        for i in 0..20_000 {
            let ip = node_ip(i).expect("in range");
            let o = ip.octets();
            assert_eq!(o[0], 127);
            assert!(o[3] != 0 && o[3] != 255, "{ip}");
            assert_ne!(ip, Ipv4Addr::new(127, 0, 0, 1));
            assert!(seen.insert(ip), "{ip} twice");
        }
        assert_eq!(node_ip(0), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(node_ip(CAPACITY), None);
        assert!(node_ip(CAPACITY - 1).is_some());
    }
}
