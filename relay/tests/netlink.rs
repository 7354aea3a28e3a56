//! The neighbour cache against a real kernel in a network namespace: static entries added
//! with `ip neigh add`, a default route's gateway, the interface MAC, and resolution of an
//! unknown neighbour through the kernel's ARP. Needs root.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use relay::io::netlink::{NeighborCache, RouteSocket};
use relay::io::netns::{ifindex, NetNs, VethPair};
use relay::wire::EthernetAddress;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn neighbour_cache_in_a_namespace() {
    if !common::can_run("neighbour_cache_in_a_namespace") {
        return;
    }
    let a = NetNs::new("na").unwrap();
    let b = NetNs::new("nb").unwrap();
    let veth = VethPair::new(&a, &["198.18.3.1/24", "2001:db8:3::1/64"], &b, &["198.18.3.2/24"]).unwrap();
    let dev = veth.name_a.as_str();
    a.ip(&["link", "set", "dev", dev, "address", "02:00:00:00:03:01"]).unwrap();
    b.ip(&["link", "set", "dev", &veth.name_b, "address", "02:00:00:00:03:02"]).unwrap();
    a.ip(&["neigh", "add", "198.18.3.5", "lladdr", "02:00:00:00:03:05", "dev", dev, "nud", "permanent"]).unwrap();
    a.ip(&["-6", "neigh", "add", "2001:db8:3::5", "lladdr", "02:00:00:00:03:06", "dev", dev, "nud", "permanent"])
        .unwrap();
    a.ip(&["neigh", "add", "198.18.3.254", "lladdr", "02:00:00:00:03:fe", "dev", dev, "nud", "permanent"]).unwrap();
    a.ip(&["route", "add", "default", "via", "198.18.3.254", "dev", dev]).unwrap();

    let _g = a.enter().unwrap();
    let i = ifindex(dev).unwrap();
    let mut rs = RouteSocket::open().unwrap();
    assert_eq!(rs.link_mac(i).unwrap(), Some(EthernetAddress([2, 0, 0, 0, 3, 1])));

    let mut c = NeighborCache::new(i);
    c.refresh(&mut rs).unwrap();
    assert_eq!(c.lookup(ip("198.18.3.5")), Some(EthernetAddress([2, 0, 0, 0, 3, 5])));
    assert_eq!(c.lookup(ip("2001:db8:3::5")), Some(EthernetAddress([2, 0, 0, 0, 3, 6])));
    assert_eq!(c.lookup(ip("198.19.200.1")), Some(EthernetAddress([2, 0, 0, 0, 3, 0xfe])), "off-link: gateway");
    assert_eq!(c.lookup(ip("198.18.3.2")), None, "not resolved yet");

    // The kernel ARPs for the peer when the cache asks it to.
    let mac = c.resolve(&mut rs, ip("198.18.3.2"), Duration::from_secs(3)).unwrap();
    assert_eq!(mac, Some(EthernetAddress([2, 0, 0, 0, 3, 2])));
    assert_eq!(c.lookup(ip("198.18.3.2")), mac);
    // Nobody answers for this one.
    let none = c.resolve(&mut rs, ip("198.18.3.99"), Duration::from_millis(300)).unwrap();
    assert_eq!(none, None);
}
