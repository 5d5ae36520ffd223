//! The config file's parsing and validation.
use super::*;

#[test]
fn translations_parse_and_bad_ones_say_why() {
    let t = parse_translation("198.18.100.1:80/tcp=198.18.0.11:8080").unwrap();
    assert_eq!(t.frontend.to_string(), "198.18.100.1:80/tcp");
    assert_eq!(t.endpoint, "198.18.0.11".parse::<IpAddr>().unwrap());
    assert_eq!(t.target_port, 8080);
    let any = parse_translation("0.0.0.0:30080/udp=198.18.0.11:53").unwrap();
    assert!(any.frontend.vip.is_unspecified());
    let v6 = parse_translation("[2001:db8::1]:80/tcp=[2001:db8::11]:8080").unwrap();
    assert_eq!(v6.target_port, 8080);
    for (text, says) in [
        ("198.18.100.1:80/tcp", "FRONTEND=ENDPOINT:PORT"),
        ("198.18.100.1:80=198.18.0.11:8080", "protocol"),
        ("198.18.100.1:80/sctp=198.18.0.11:8080", "sctp"),
        ("198.18.100.1/tcp=198.18.0.11:8080", "frontend"),
        ("198.18.100.1:80/tcp=198.18.0.11", "endpoint"),
        ("198.18.100.1:0/tcp=198.18.0.11:80", "port 0"),
        ("198.18.100.1:80/tcp=198.18.0.11:0", "port 0"),
        ("198.18.100.1:80/tcp=[2001:db8::11]:80", "family"),
        ("198.18.100.1:80/tcp=0.0.0.0:80", "real address"),
        ("198.18.100.1:80/tcp=198.18.0.11:65536", "endpoint"),
    ] {
        let err = parse_translation(text).unwrap_err().to_string();
        assert!(err.contains(says), "{text}: {err}");
    }
}

const GOOD: &str = "
services:
  - name: web
    vip: 198.18.100.1
    port: 80
    protocol: tcp
    backends:
      - address: 198.18.0.12
      - address: 198.18.0.11
        weight: 3
  - name: dns
    vip: 198.18.100.1
    port: 53
    protocol: udp
    table_size: 251
    backends: []
";

#[test]
fn parses_services_and_sorts_backends() {
    let state = parse(GOOD).unwrap();
    assert_eq!(state.services.len(), 2);
    let web = state.services.values().find(|s| s.name == "web").unwrap();
    assert_eq!(web.backends[0].address.to_string(), "198.18.0.11");
    assert_eq!(web.backends[0].weight, 3);
    assert_eq!(web.backends[1].weight, 1);
    assert_eq!(web.table_size, Settings::default().table_size_for(2));
    let dns = state.services.values().find(|s| s.name == "dns").unwrap();
    assert_eq!(dns.table_size, 251);
    assert!(dns.backends.is_empty());
}

#[test]
fn demo_config_is_valid() {
    let state = parse(DEMO_CONFIG).unwrap();
    assert!(!state.services.is_empty());
}

fn error_of(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn syntax_errors_name_the_line() {
    let msg = error_of("services:\n  - name: a\n    vip: 198.18.0.1\n    port: [\n");
    assert!(msg.contains("line"), "{msg}");
}

#[test]
fn bad_values_name_the_field() {
    let cases = [
        ("port: 0", "services[0].port"),
        ("port: 70000", "port"),
        ("vip: 300.1.1.1", "vip"),
        ("protocol: sctp", "protocol"),
        ("table_size: 1000", "services[0].table_size"),
        ("colour: blue", "colour"),
    ];
    for (line, field) in cases {
        let key = line.split(':').next().unwrap();
        let mut fields = vec!["name: a", "vip: 198.18.100.1", "port: 80", "protocol: tcp"];
        fields.retain(|f| !f.starts_with(key));
        fields.push(line);
        let text = format!("services:\n  - {}\n", fields.join("\n    "));
        let msg = error_of(&text);
        assert!(msg.contains(field), "{line}: {msg}");
    }
}

#[test]
fn duplicates_are_rejected() {
    let dup_backend = "
services:
  - {name: a, vip: 198.18.100.1, port: 80, protocol: tcp, backends: [{address: 198.18.0.1}, {address: 198.18.0.1}]}
";
    assert!(error_of(dup_backend).contains("services[0].backends[1].address"));
    let dup_frontend = "
services:
  - {name: a, vip: 198.18.100.1, port: 80, protocol: tcp}
  - {name: b, vip: 198.18.100.1, port: 80, protocol: tcp}
";
    assert!(error_of(dup_frontend).contains("already served by service \"a\""));
    let dup_name = "
services:
  - {name: a, vip: 198.18.100.1, port: 80, protocol: tcp}
  - {name: a, vip: 198.18.100.1, port: 81, protocol: tcp}
";
    assert!(error_of(dup_name).contains("services[1].name"));
}

#[test]
fn ipv6_services_parse_and_mixed_families_are_refused_clearly() {
    let v6 = "
services:
  - {name: a, vip: '2001:db8::1', port: 80, protocol: tcp,
     backends: [{address: '2001:db8::11'}, {address: '2001:db8::12'}]}
";
    let state = parse(v6).unwrap();
    let spec = state.services.values().next().unwrap();
    assert_eq!(spec.backends.len(), 2);
    let mixed = "
services:
  - {name: a, vip: '2001:db8::1', port: 80, protocol: tcp, backends: [{address: 198.18.0.11}]}
";
    let err = error_of(mixed);
    assert!(
        err.contains("services[0].backends[0].address") && err.contains("another address family"),
        "{err}"
    );
}

#[test]
fn an_empty_or_comments_only_file_is_an_error_not_zero_services() {
    for text in [
        "",
        "\n\n",
        "# all services moved elsewhere\n# nothing here\n",
        "---\n",
    ] {
        assert!(
            matches!(parse(text), Err(ConfigError::Empty)),
            "{text:?}: {:?}",
            parse(text)
        );
    }
    let msg = error_of("");
    assert!(msg.contains("allow_empty: true"), "{msg}");
}

#[test]
fn a_missing_or_null_service_list_is_an_error() {
    for text in [
        "services:\n",
        "services:\n# - name: web\n",
        "settings:\n  maglev_seed: 1\n",
    ] {
        let msg = error_of(text);
        assert!(msg.contains("services: missing or null"), "{text:?}: {msg}");
    }
}

#[test]
fn an_empty_service_list_is_applied_only_with_allow_empty() {
    let msg = error_of("services: []\n");
    assert!(msg.contains("allow_empty: true"), "{msg}");
    let state = parse("allow_empty: true\nservices: []\n").unwrap();
    assert!(state.services.is_empty());
    assert_eq!(
        parse("allow_empty: false\nservices: []\n")
            .unwrap_err()
            .to_string(),
        msg
    );
}

#[test]
fn unusable_vips_and_backends_are_rejected_with_the_reason() {
    let one = |vip: &str, backend: &str| {
        format!(
            "services:\n  - {{name: a, vip: '{vip}', port: 80, protocol: tcp, backends: [{{address: '{backend}'}}]}}\n"
        )
    };
    for (vip, backend, field, says) in [
        (
            "169.254.1.1",
            "198.18.0.11",
            "services[0].vip",
            "link-local",
        ),
        ("127.0.0.1", "198.18.0.11", "services[0].vip", "loopback"),
        ("fe80::1", "2001:db8::11", "services[0].vip", "link-local"),
        ("::1", "2001:db8::11", "services[0].vip", "loopback"),
        (
            "198.18.100.1",
            "127.0.0.1",
            "services[0].backends[0].address",
            "loopback",
        ),
        (
            "198.18.100.1",
            "169.254.0.7",
            "services[0].backends[0].address",
            "link-local",
        ),
        (
            "198.18.100.1",
            "224.0.0.5",
            "services[0].backends[0].address",
            "multicast",
        ),
        (
            "198.18.100.1",
            "0.0.0.0",
            "services[0].backends[0].address",
            "unspecified",
        ),
        (
            "198.18.100.1",
            "255.255.255.255",
            "services[0].backends[0].address",
            "broadcast",
        ),
        (
            "2001:db8::1",
            "fe80::11",
            "services[0].backends[0].address",
            "link-local",
        ),
        (
            "2001:db8::1",
            "::",
            "services[0].backends[0].address",
            "unspecified",
        ),
        (
            "2001:db8::1",
            "ff02::1",
            "services[0].backends[0].address",
            "multicast",
        ),
    ] {
        let msg = error_of(&one(vip, backend));
        assert!(
            msg.contains(field) && msg.contains(says),
            "{vip} / {backend}: {msg}"
        );
    }
}

#[test]
fn a_backend_that_is_a_vip_is_rejected() {
    let own = "
services:
  - {name: a, vip: 198.18.100.1, port: 80, protocol: tcp, backends: [{address: 198.18.100.1}]}
";
    let msg = error_of(own);
    assert!(msg.contains("is the VIP of service \"a\""), "{msg}");
    let other = "
services:
  - {name: a, vip: 198.18.100.1, port: 80, protocol: tcp, backends: [{address: 198.18.0.11}]}
  - {name: b, vip: 198.18.100.2, port: 80, protocol: tcp, backends: [{address: 198.18.100.1}]}
";
    let msg = error_of(other);
    assert!(
        msg.contains("service \"b\": backend 198.18.100.1") && msg.contains("\"a\""),
        "{msg}"
    );
}

#[test]
fn more_backends_than_the_capped_table_holds_are_rejected_at_parse() {
    let backends: Vec<String> = (0..300)
        .map(|i| format!("{{address: 10.0.{}.{}}}", i / 250, 1 + i % 250))
        .collect();
    let text = format!(
        "settings: {{max_table_size: 251}}\nservices:\n  - {{name: a, vip: 198.18.100.1, port: 80, protocol: tcp, backends: [{}]}}\n",
        backends.join(", ")
    );
    let msg = error_of(&text);
    assert!(
        msg.contains("services[0].backends") && msg.contains("300 active backends"),
        "{msg}"
    );
}

#[test]
fn an_unreadable_file_names_the_os_error() {
    let err = load(std::path::Path::new("/nonexistent/fl-hard/config.yaml")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("No such file or directory"), "{msg}");
}

#[test]
fn scaling_three_backends_to_two_and_back_keeps_the_table_size() {
    let with = |n: usize| {
        let backends: Vec<String> = (0..n)
            .map(|i| format!("{{address: 198.18.0.{}}}", 11 + i))
            .collect();
        let text = format!(
            "services:\n  - {{name: a, vip: 198.18.100.1, port: 80, protocol: tcp, backends: [{}]}}\n",
            backends.join(", ")
        );
        parse(&text)
            .unwrap()
            .services
            .values()
            .next()
            .unwrap()
            .table_size
    };
    assert_eq!(with(3), with(2));
    assert_eq!(with(1), with(10));
}

#[test]
fn session_affinity_takes_a_timeout_in_kubernetes_range() {
    let with = |affinity: &str| {
        format!(
            "services:\n  - {{name: a, vip: 198.18.100.1, port: 80, protocol: tcp{affinity}}}\n"
        )
    };
    let timeout = |text: &str| {
        parse(text)
            .unwrap()
            .services
            .values()
            .next()
            .unwrap()
            .affinity_timeout_s
    };
    assert_eq!(timeout(&with("")), None);
    assert_eq!(timeout(&with(", session_affinity: {}")), Some(10_800));
    assert_eq!(
        timeout(&with(", session_affinity: {timeout_seconds: 30}")),
        Some(30)
    );
    for bad in ["0", "86401"] {
        let msg = error_of(&with(&format!(
            ", session_affinity: {{timeout_seconds: {bad}}}"
        )));
        assert!(
            msg.contains("services[0].session_affinity.timeout_seconds"),
            "{msg}"
        );
        assert!(msg.contains("outside 1-86400"), "{msg}");
    }
    let msg = error_of(&with(", session_affinity: {timeout: 5}"));
    assert!(msg.contains("timeout"), "{msg}");
}

#[test]
fn source_ranges_parse_and_bad_ones_name_the_entry() {
    let ok = "services:\n  - {name: a, vip: 198.18.100.1, port: 80, protocol: tcp, \
              source_ranges: ['198.18.1.0/24', 198.18.0.10/32]}\n";
    let spec = parse(ok)
        .unwrap()
        .services
        .values()
        .next()
        .cloned()
        .unwrap();
    let shown: Vec<String> = spec.source_ranges.iter().map(|r| r.to_string()).collect();
    assert_eq!(shown, ["198.18.0.10/32", "198.18.1.0/24"]);
    for (range, says) in [
        ("banana", "not ADDRESS/PREFIX-LENGTH"),
        ("198.18.1.0", "not ADDRESS/PREFIX-LENGTH"),
        ("198.18.1.0/255.255.255.0", "not ADDRESS/PREFIX-LENGTH"),
        ("198.18.1.0/33", "not a CIDR"),
        ("2001:db8::/32", "another address family"),
        ("198.18.1.7/24", "host bits set; the range is 198.18.1.0/24"),
    ] {
        let text = format!(
            "services:\n  - {{name: a, vip: 198.18.100.1, port: 80, protocol: tcp, \
             source_ranges: ['198.18.9.0/24', '{range}']}}\n"
        );
        let err = error_of(&text);
        assert!(
            err.contains("services[0].source_ranges[1]") && err.contains(says),
            "{range}: {err}"
        );
    }
    let twice = "services:\n  - {name: a, vip: 198.18.100.1, port: 80, protocol: tcp, \
                 source_ranges: ['198.18.9.0/24', '198.18.9.0/24']}\n";
    assert!(error_of(twice).contains("listed twice"));
}
