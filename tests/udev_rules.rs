//! The udev rules parse (line by line, udev's `KEY[{attr}]OP"value"` syntax), give every FIDO
//! node (the `ID_FIDO_TOKEN` rule and each device of `udev/fido-devices.tsv`) group `keygate`,
//! mode 0660 and `uaccess`, and are exactly what `udev/gen-rules.py` generates; when this
//! machine's udevadm can verify rule files, it does too.

use std::collections::HashSet;
use std::process::Command;

const RULES: &str = include_str!("../udev/70-keygate-fido.rules");
const DEVICES: &str = include_str!("../udev/fido-devices.tsv");

/// Split a rule line into (key, op, value) triples; None when the syntax is wrong.
fn parse_line(line: &str) -> Option<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for part in line.split(", ") {
        let ops = ["==", "!=", "+=", "-=", ":=", "="];
        let (pos, op) = ops
            .iter()
            .filter_map(|op| part.find(op).map(|p| (p, *op)))
            .min_by_key(|(p, _)| *p)?;
        let key = &part[..pos];
        let value = part[pos + op.len()..]
            .strip_prefix('"')?
            .strip_suffix('"')?;
        let key_ok = key.chars().all(|c| {
            c.is_ascii_uppercase() || c == '_' || c == '{' || c == '}' || c.is_ascii_alphanumeric()
        });
        if key.is_empty() || !key_ok || value.contains('"') {
            return None;
        }
        out.push((key.to_string(), op.to_string(), value.to_string()));
    }
    Some(out)
}

#[test]
fn rules_parse_and_cover_every_listed_device() {
    let mut covered = HashSet::new();
    let mut fido_token_rule = false;
    for (n, line) in RULES.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let items =
            parse_line(line).unwrap_or_else(|| panic!("line {}: bad syntax: {line}", n + 1));
        let get = |k: &str| {
            items
                .iter()
                .find(|(key, _, _)| key == k)
                .map(|(_, op, v)| (op.as_str(), v.as_str()))
        };
        if let Some(("==", "1")) = get("ENV{ID_FIDO_TOKEN}") {
            assert_eq!(get("GROUP"), Some(("=", "keygate")), "line {}", n + 1);
            assert_eq!(get("MODE"), Some(("=", "0660")), "line {}", n + 1);
            assert_eq!(get("TAG"), Some(("+=", "uaccess")), "line {}", n + 1);
            fido_token_rule = true;
        }
        if let (Some(("==", vid)), Some(("==", pid))) =
            (get("ATTRS{idVendor}"), get("ATTRS{idProduct}"))
        {
            assert_eq!(get("GROUP"), Some(("=", "keygate")), "line {}", n + 1);
            assert_eq!(get("MODE"), Some(("=", "0660")), "line {}", n + 1);
            assert_eq!(get("TAG"), Some(("+=", "uaccess")), "line {}", n + 1);
            covered.insert((vid.to_string(), pid.to_string()));
        }
    }
    assert!(
        fido_token_rule,
        "FIDO devices are matched by ID_FIDO_TOKEN (usage page 0xF1D0)"
    );
    let mut listed = 0;
    for l in DEVICES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f.len(), 3, "vendor, product, name: {l}");
        assert!(
            f[0].len() == 4
                && f[1].len() == 4
                && u16::from_str_radix(f[0], 16).is_ok()
                && u16::from_str_radix(f[1], 16).is_ok(),
            "{l}"
        );
        assert!(
            covered.contains(&(f[0].to_string(), f[1].to_string())),
            "{l} is not in the rules: run udev/gen-rules.py"
        );
        listed += 1;
    }
    assert!(listed >= 20);
    assert!(RULES.contains("LABEL=\"keygate_fido_end\""));
}

#[test]
fn the_committed_rules_are_the_generators_output() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/udev/gen-rules.py");
    let out = match Command::new("python3")
        .args([script, "--out", "-"])
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "\n*** SKIPPED: python3 is not installed, so udev/gen-rules.py cannot be run to \
                 compare its output with the committed rules (apt-get install python3) ***\n"
            );
            return;
        }
        Err(e) => panic!("running {script}: {e}"),
    };
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    assert!(
        generated == RULES,
        "udev/70-keygate-fido.rules differs from `python3 udev/gen-rules.py --out -`: \
         run `python3 udev/gen-rules.py` and commit the result"
    );
}

#[test]
fn syntax_errors_are_caught() {
    assert!(parse_line(r#"ATTRS{idVendor}=="1050", GROUP="keygate""#).is_some());
    assert!(parse_line(r#"ATTRS{idVendor}==1050"#).is_none());
    assert!(parse_line(r#"GROUP="keygate"#).is_none());
}

#[test]
fn udevadm_verifies_the_rules_where_it_can() {
    let help = Command::new("udevadm").args(["verify", "--help"]).output();
    match help {
        Ok(o) if o.status.success() => {
            let out = Command::new("udevadm")
                .args([
                    "verify",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/udev/70-keygate-fido.rules"),
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        _ => eprintln!(
            "udevadm verify is not available here (systemd < 254): covered by the parser test only"
        ),
    }
}
