//! Which VIP addresses to announce: while the node is `serving`, each address one of whose
//! VIPs has a backend that takes new flows (up, weight above 0) and that no operator withdrew
//! by hand. Several VIPs (ports) may share an address: it stays announced while any of them
//! can serve, since withdrawing it would take the healthy ports away too.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

/// One VIP as the route decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipState {
    pub name: String,
    pub address: IpAddr,
    pub backends_taking_new_flows: usize,
}

/// Address → communities (the union of those of the VIPs announced at it, sorted).
pub fn wanted(
    serving: bool,
    vips: &[VipState],
    held: &BTreeSet<String>,
    communities: &BTreeMap<String, Vec<u32>>,
) -> BTreeMap<IpAddr, Vec<u32>> {
    let mut out: BTreeMap<IpAddr, Vec<u32>> = BTreeMap::new();
    if !serving {
        return out;
    }
    for v in vips {
        if v.backends_taking_new_flows == 0 || held.contains(&v.name) {
            continue;
        }
        let c = out.entry(v.address).or_default();
        c.extend(communities.get(&v.name).into_iter().flatten());
        c.sort_unstable();
        c.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(name: &str, address: &str, taking: usize) -> VipState {
        VipState {
            name: name.into(),
            address: address.parse().unwrap(),
            backends_taking_new_flows: taking,
        }
    }

    #[test]
    fn only_serving_vips_with_a_backend_taking_flows_and_not_held() {
        let vips = [
            vip("web", "198.51.100.10", 2),
            vip("dns", "198.51.100.10", 0),
            vip("down", "198.51.100.11", 0),
            vip("held", "198.51.100.12", 1),
            vip("v6", "2001:db8::10", 1),
        ];
        let held = BTreeSet::from(["held".to_owned()]);
        let communities = BTreeMap::from([
            ("web".to_owned(), vec![0xfde8_0064]),
            ("dns".to_owned(), vec![0xfde8_0065]),
        ]);
        let got = wanted(true, &vips, &held, &communities);
        assert_eq!(
            got,
            BTreeMap::from([
                ("198.51.100.10".parse().unwrap(), vec![0xfde8_0064]),
                ("2001:db8::10".parse().unwrap(), vec![]),
            ])
        );
        assert_eq!(wanted(false, &vips, &held, &communities), BTreeMap::new());
    }
}
