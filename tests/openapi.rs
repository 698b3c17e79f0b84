//! Every route the router registers is documented in /openapi.json with the same methods (and
//! nothing else is); the document is the one the daemon derives and serves.

use std::collections::{BTreeMap, BTreeSet};

/// The text of a call's arguments: from just after its `(` to the matching `)`.
fn call_args(s: &str) -> &str {
    let mut depth = 1;
    for (i, ch) in s.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &s[..i];
                }
            }
            _ => {}
        }
    }
    s
}

/// `.route("path", get(a).post(b))` -> path -> {get, post}, over every file of src/http.
fn routed() -> BTreeMap<String, BTreeSet<String>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        let mut rest = src.as_str();
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + 7..];
            let args = call_args(rest);
            let start = args.find('"').unwrap() + 1;
            let end = start + args[start..].find('"').unwrap();
            let methods = routes.entry(args[start..end].to_string()).or_default();
            let handlers = &args[end + 1..];
            for m in ["get", "post", "put", "patch", "delete"] {
                let called = handlers.match_indices(&format!("{m}(")).any(|(j, _)| {
                    let before = handlers[..j].chars().next_back();
                    !matches!(before, Some(c) if c.is_alphanumeric() || c == '_')
                });
                if called {
                    methods.insert(m.to_string());
                }
            }
        }
    }
    routes
}

#[test]
fn every_route_is_documented_with_its_methods() {
    let routes = routed();
    assert!(routes.len() > 15, "{routes:?}");
    assert_eq!(
        routes["/v1/users/{user}/credentials/{id}"],
        ["delete", "get", "patch"].map(String::from).into(),
        "the route parser itself"
    );
    let doc = keygate::http::openapi::document(&keygate::config::Config::default());
    let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, ops)| {
            (
                p.clone(),
                ops.as_object().unwrap().keys().cloned().collect(),
            )
        })
        .collect();
    let missing: Vec<_> = routes
        .keys()
        .filter(|p| !documented.contains_key(*p))
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from /openapi.json: {missing:?}"
    );
    let stale: Vec<_> = documented
        .keys()
        .filter(|p| !routes.contains_key(*p))
        .collect();
    assert!(stale.is_empty(), "documented but not routed: {stale:?}");
    for (path, methods) in &routes {
        assert_eq!(
            &documented[path], methods,
            "{path}: documented methods differ from the routed ones"
        );
    }
}
