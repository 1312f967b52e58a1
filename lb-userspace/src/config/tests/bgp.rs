//! `[bgp]`: a good section's typed values, and each broken one with its line, field and fix.

use std::{collections::BTreeMap, time::Duration};

use super::super::{Bgp, BgpPeer, Config};
use super::broken::{check_cases, Case};
use super::edit_lines;

/// Line numbers matter: the cases below edit single lines.
const BASE: &str = r#"instance = "gw1"
interfaces = ["eth0"]

[encap]
source_v4 = "198.19.255.0/24"

[[vip]]
name = "web"
address = "198.51.100.10:80"

[[vip.backend]]
address = "198.18.10.2"

[[vip]]
name = "web6"
address = "[2001:db8:100::10]:80"

[[vip.backend]]
address = "198.18.10.3"

[bgp]
local_as = 4200000001
router_id = "10.0.0.2"
next_hop_v4 = "10.0.0.2"
next_hop_v6 = "2001:db8::2"
communities = { web = ["65000:100", "65535:0"] }

[[bgp.peer]]
address = "10.0.0.1"
as = 65000
hold_time = 3
port = 1179
"#;

fn edit(edits: &[(usize, &str)]) -> String {
    edit_lines(BASE, edits)
}

#[test]
fn a_good_section_has_typed_values_and_defaults() {
    let config = Config::parse(BASE).unwrap();
    assert_eq!(
        config.bgp,
        Some(Bgp {
            local_as: 4_200_000_001,
            router_id: "10.0.0.2".parse().unwrap(),
            next_hop_v4: Some("10.0.0.2".parse().unwrap()),
            next_hop_v6: Some("2001:db8::2".parse().unwrap()),
            peers: vec![BgpPeer {
                address: "10.0.0.1".parse().unwrap(),
                remote_as: 65000,
                port: 1179,
                hold_time: 3,
                password: None,
            }],
            communities: BTreeMap::from([("web".to_owned(), vec![0xfde8_0064, 0xffff_0000])]),
            graceful_shutdown: Duration::ZERO,
        })
    );
    // Port and hold time default to 179 and 90; no [bgp] at all is no speaker.
    let defaults = Config::parse(&edit(&[(31, ""), (32, "")])).unwrap();
    let peer = &defaults.bgp.unwrap().peers[0];
    assert_eq!((peer.port, peer.hold_time), (179, 90));
    let none: String = BASE.lines().take(19).collect::<Vec<_>>().join("\n");
    assert_eq!(Config::parse(&none).unwrap().bgp, None);
}

#[test]
fn graceful_shutdown_and_tcp_md5_keys_are_read_and_never_shown() {
    let dir = std::env::temp_dir().join(format!("sluice-bgp-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("router.key");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let text = edit(&[
        (26, "graceful_shutdown = \"5s\""),
        (32, "port = 1179\npassword = \"s3cret-key\""),
    ]) + &format!(
        "[[bgp.peer]]\naddress = \"10.0.0.5\"\nas = 65000\npassword_file = \"{}\"\n",
        file.display()
    );
    let bgp = Config::parse(&text).unwrap().bgp.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(bgp.graceful_shutdown, Duration::from_secs(5));
    let keys: Vec<&[u8]> = bgp
        .peers
        .iter()
        .map(|p| p.password.as_ref().unwrap().bytes())
        .collect();
    assert_eq!(keys, [&b"s3cret-key"[..], b"from-a-file"]);
    let debug = format!("{bgp:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("from-a-file"),
        "{debug}"
    );
    assert!(debug.contains("Password(<redacted>)"), "{debug}");
}

const CASES: &[Case] = &[
    Case {
        name: "missing router id",
        edits: &[(23, "")],
        line: 21,
        message: "bgp.router_id: missing",
    },
    Case {
        name: "router id not IPv4",
        edits: &[(23, "router_id = \"2001:db8::2\"")],
        line: 23,
        message: "bgp.router_id: \"2001:db8::2\" is not a usable router id; write a non-zero \
                  IPv4 address",
    },
    Case {
        name: "AS 0",
        edits: &[(22, "local_as = 0")],
        line: 22,
        message: "bgp.local_as: 0 is out of range: must be at least 1 (AS 0 is reserved",
    },
    Case {
        name: "peer AS 0",
        edits: &[(30, "as = 0")],
        line: 30,
        message: "bgp.peer[0].as: 0 is out of range: must be at least 1 (AS 0 is reserved",
    },
    Case {
        name: "peer address not an IP",
        edits: &[(29, "address = \"router1\"")],
        line: 29,
        message: "bgp.peer[0].address: \"router1\" is not an IP address; write the router's \
                  address",
    },
    Case {
        name: "peer address with a port",
        edits: &[(29, "address = \"10.0.0.1:179\"")],
        line: 29,
        message: "(no port: that is `port`; host names are not resolved)",
    },
    Case {
        name: "hold time 1",
        edits: &[(31, "hold_time = 1")],
        line: 31,
        message: "bgp.peer[0].hold_time: 1 seconds is not allowed: RFC 4271 needs 0 (no \
                  keepalives) or at least 3",
    },
    Case {
        name: "hold time 2",
        edits: &[(31, "hold_time = 2")],
        line: 31,
        message: "bgp.peer[0].hold_time: 2 seconds is not allowed",
    },
    Case {
        name: "hold time too long",
        edits: &[(31, "hold_time = 65536")],
        line: 31,
        message: "bgp.peer[0].hold_time: 65536 is out of range: must be between 0 and 65535",
    },
    Case {
        name: "port 0",
        edits: &[(32, "port = 0")],
        line: 32,
        message: "bgp.peer[0].port: 0 is out of range: must be between 1 and 65535",
    },
    Case {
        name: "IPv6 VIP without an IPv6 next hop",
        edits: &[(25, "")],
        line: 21,
        message: "bgp.next_hop_v6: VIP \"web6\" is IPv6, so its announcements need a next hop: \
                  add bgp.next_hop_v6 = \"2001:db8::2\"",
    },
    Case {
        name: "IPv4 VIP without an IPv4 next hop",
        edits: &[(24, "")],
        line: 21,
        message: "bgp.next_hop_v4: VIP \"web\" is IPv4",
    },
    Case {
        name: "next hop of the wrong family",
        edits: &[(24, "next_hop_v4 = \"2001:db8::2\"")],
        line: 24,
        message: "bgp.next_hop_v4: \"2001:db8::2\" is not an IPv4 address",
    },
    Case {
        name: "community out of range",
        edits: &[(26, "communities = { web = [\"65000:65536\"] }")],
        line: 26,
        message: "bgp.communities.web: \"65000:65536\" is not a community; write \"ASN:value\"",
    },
    Case {
        name: "communities of an unknown VIP",
        edits: &[(26, "communities = { www = [\"65000:1\"] }")],
        line: 26,
        message: "bgp.communities.www: there is no [[vip]] named \"www\"",
    },
    Case {
        name: "no peer",
        edits: &[(28, ""), (29, ""), (30, ""), (31, ""), (32, "")],
        line: 21,
        message: "bgp.peer: add at least one [[bgp.peer]]",
    },
    Case {
        name: "the same peer twice",
        edits: &[(
            32,
            "port = 1179\n[[bgp.peer]]\naddress = \"10.0.0.1\"\nas = 65000\nport = 1179",
        )],
        line: 34,
        message: "bgp.peer[1].address: bgp.peer[0] is already this peer",
    },
    Case {
        name: "misspelled peer key",
        edits: &[(31, "hodl_time = 3")],
        line: 31,
        message: "bgp.peer[0].hodl_time: unknown key `hodl_time`; did you mean `hold_time`?",
    },
    Case {
        name: "graceful shutdown not a duration",
        edits: &[(26, "graceful_shutdown = \"5\"")],
        line: 26,
        message: "bgp.graceful_shutdown: \"5\" is not a duration",
    },
    Case {
        name: "empty password",
        edits: &[(32, "port = 1179\npassword = \"\"")],
        line: 33,
        message: "bgp.peer[0].password: the password is empty; give the key the router has for \
                  this neighbour (1 to 80 bytes), or leave password out for no TCP MD5",
    },
    Case {
        name: "password longer than TCP_MD5SIG_MAXKEYLEN",
        edits: &[(
            32,
            "port = 1179\npassword = \"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijX\"",
        )],
        line: 33,
        message: "bgp.peer[0].password: the password is 81 bytes long; Linux takes TCP MD5 keys \
                  of at most 80 bytes (TCP_MD5SIG_MAXKEYLEN)",
    },
    Case {
        name: "unreadable password file",
        edits: &[(32, "port = 1179\npassword_file = \"/nonexistent/bgp.key\"")],
        line: 33,
        message: "bgp.peer[0].password_file: cannot read /nonexistent/bgp.key: No such file or \
                  directory (os error 2); give a file the daemon can read",
    },
    Case {
        name: "relative password file",
        edits: &[(32, "port = 1179\npassword_file = \"bgp.key\"")],
        line: 33,
        message: "bgp.peer[0].password_file: \"bgp.key\" is not an absolute path",
    },
    Case {
        name: "password and password file",
        edits: &[(
            32,
            "port = 1179\npassword = \"k\"\npassword_file = \"/etc/sluice/bgp.key\"",
        )],
        line: 34,
        message: "bgp.peer[0].password_file: give the key once: either password or \
                  password_file, not both",
    },
];

#[test]
fn broken_sections_give_line_field_and_fix() {
    check_cases(CASES, edit);
}
