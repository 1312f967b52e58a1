//! Expected bytes are written out field by field from RFC 4271 §4, RFC 4760 §3/§4, RFC 5492
//! §4 and RFC 6793 §3, not produced by the encoder.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const M: &str = "ffffffffffffffffffffffffffffffff";

#[test]
fn keepalive_is_a_bare_header() {
    assert_eq!(keepalive(), hex(&format!("{M} 0013 04")));
}

#[test]
fn open_carries_mp_and_four_octet_as_capabilities() {
    let open = Open {
        local_as: 65001,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        families: vec![Family::Ipv4, Family::Ipv6],
    };
    let expected = hex(&format!(
        "{M} 0031 01 \
         04 fde9 005a c0000201 \
         14 02 12 \
            01 04 0001 00 01 \
            01 04 0002 00 01 \
            41 04 0000fde9"
    ));
    assert_eq!(open.encode(), expected);
}

#[test]
fn an_as_above_65535_is_as_trans_in_the_two_octet_field() {
    let open = Open {
        local_as: 4_200_000_000,
        hold_time: 3,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        families: vec![Family::Ipv4],
    };
    let expected = hex(&format!(
        "{M} 002b 01 04 5ba0 0003 0a000001 0e 02 0c 01 04 0001 00 01 41 04 fa56ea00"
    ));
    assert_eq!(open.encode(), expected);
}

#[test]
fn a_peers_open_is_read_with_its_capabilities() {
    // As FRR sends it: route refresh (2), 4-octet AS, MP IPv4, an unknown one (70).
    let body = hex("04 fde8 0003 0a000001 18 02 16 \
         02 00 \
         41 04 0000fde8 \
         01 04 0001 00 01 \
         01 04 0002 00 01 \
         46 00");
    let open = parse_open(&body).unwrap();
    assert_eq!(
        open,
        PeerOpen {
            version: 4,
            peer_as: 65000,
            four_octet_as: true,
            hold_time: 3,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            families: vec![Family::Ipv4, Family::Ipv6],
        }
    );
}

#[test]
fn malformed_opens_are_refused_with_their_notification() {
    assert_eq!(
        parse_open(&hex("03 fde8 0003 0a000001 00")),
        Err(UNSUPPORTED_VERSION)
    );
    assert_eq!(
        parse_open(&hex("04 fde8 0003 0a000001 05 02 03")),
        Err(BAD_OPEN)
    );
    assert_eq!(parse_open(&hex("04 fde8")), Err(BAD_OPEN));
}

#[test]
fn headers_are_checked_as_rfc_4271_section_6_1_asks() {
    let h = |s: &str| -> [u8; HEADER_LEN] { hex(s).try_into().unwrap() };
    assert_eq!(header(&h(&format!("{M} 0013 04"))), Ok((KEEPALIVE, 19)));
    assert_eq!(header(&h(&format!("{M} 0014 04"))), Err(BAD_LENGTH));
    assert_eq!(header(&h(&format!("{M} 1001 02"))), Err(BAD_LENGTH));
    assert_eq!(header(&h(&format!("{M} 0013 07"))), Err(BAD_TYPE));
    assert_eq!(
        header(&h("00ffffffffffffffffffffffffffffff 0013 04")),
        Err(NOT_SYNCHRONIZED)
    );
}

fn ebgp() -> Path {
    Path {
        local_as: 65001,
        internal: false,
        next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
        next_hop_v6: Some("2001:db8::2".parse().unwrap()),
    }
}

#[test]
fn ipv4_announcement_has_origin_as_path_next_hop_and_nlri() {
    let vip: IpAddr = "198.51.100.10".parse().unwrap();
    let expected = hex(&format!(
        "{M} 0030 02 0000 0014 \
         40 01 01 00 \
         40 02 06 02 01 0000fde9 \
         40 03 04 0a000002 \
         20 c6336 40a"
    ));
    assert_eq!(announce(&ebgp(), vip, &[]), expected);
}

#[test]
fn communities_follow_in_one_attribute() {
    let vip: IpAddr = "198.51.100.10".parse().unwrap();
    let expected = hex(&format!(
        "{M} 003b 02 0000 001f \
         40 01 01 00 \
         40 02 06 02 01 0000fde9 \
         40 03 04 0a000002 \
         c0 08 08 fde80064 ffff0000 \
         20 c633640a"
    ));
    assert_eq!(
        announce(&ebgp(), vip, &[0xfde8_0064, GRACEFUL_SHUTDOWN]),
        expected
    );
}

#[test]
fn graceful_shutdown_alone_is_a_communities_attribute_of_one() {
    // RFC 8326 §4: 65535:0 in an optional transitive COMMUNITIES attribute (RFC 1997, type 8),
    // also on a VIP with no configured communities.
    let vip: IpAddr = "198.51.100.10".parse().unwrap();
    let expected = hex(&format!(
        "{M} 0037 02 0000 001b \
         40 01 01 00 \
         40 02 06 02 01 0000fde9 \
         40 03 04 0a000002 \
         c0 08 04 ffff0000 \
         20 c633640a"
    ));
    assert_eq!(announce(&ebgp(), vip, &[GRACEFUL_SHUTDOWN]), expected);
}

#[test]
fn graceful_shutdown_on_an_ipv6_vip_follows_mp_reach_nlri() {
    let vip: IpAddr = "2001:db8:100::10".parse().unwrap();
    let expected = hex(&format!(
        "{M} 0054 02 0000 003d \
         40 01 01 00 \
         40 02 06 02 01 0000fde9 \
         80 0e 26 0002 01 10 20010db8000000000000000000000002 00 \
                  80 20010db8010000000000000000000010 \
         c0 08 04 ffff0000"
    ));
    assert_eq!(announce(&ebgp(), vip, &[GRACEFUL_SHUTDOWN]), expected);
}

#[test]
fn ibgp_announcement_has_an_empty_as_path_and_local_pref() {
    let vip: IpAddr = "198.51.100.10".parse().unwrap();
    let path = Path {
        internal: true,
        ..ebgp()
    };
    let expected = hex(&format!(
        "{M} 0031 02 0000 0015 \
         40 01 01 00 \
         40 02 00 \
         40 03 04 0a000002 \
         40 05 04 00000064 \
         20 c633640a"
    ));
    assert_eq!(announce(&path, vip, &[]), expected);
}

#[test]
fn ipv4_withdrawal_lists_the_prefix_and_no_attributes() {
    let vip: IpAddr = "198.51.100.10".parse().unwrap();
    assert_eq!(
        withdraw(vip),
        hex(&format!("{M} 001c 02 0005 20c633640a 0000"))
    );
}

#[test]
fn ipv6_announcement_is_mp_reach_nlri() {
    let vip: IpAddr = "2001:db8:100::10".parse().unwrap();
    let expected = hex(&format!(
        "{M} 004d 02 0000 0036 \
         40 01 01 00 \
         40 02 06 02 01 0000fde9 \
         80 0e 26 0002 01 10 20010db8000000000000000000000002 00 \
                  80 20010db8010000000000000000000010"
    ));
    assert_eq!(announce(&ebgp(), vip, &[]), expected);
}

#[test]
fn ipv6_withdrawal_is_mp_unreach_nlri() {
    let vip: IpAddr = "2001:db8:100::10".parse().unwrap();
    let expected = hex(&format!(
        "{M} 002e 02 0000 0017 \
         80 0f 14 0002 01 80 20010db8010000000000000000000010"
    ));
    assert_eq!(withdraw(vip), expected);
}

#[test]
fn notifications_carry_code_and_subcode() {
    assert_eq!(
        notification(HOLD_TIMER_EXPIRED),
        hex(&format!("{M} 0015 03 04 00"))
    );
    assert_eq!(
        HOLD_TIMER_EXPIRED.to_string(),
        "hold timer expired (NOTIFICATION 4/0)"
    );
}
