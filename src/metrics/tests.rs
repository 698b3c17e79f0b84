use super::*;

#[test]
fn accept_headers_choose_the_format() {
    use Format::{OpenMetrics, Prometheus};
    let cases = [
        (None, Prometheus),
        (Some("*/*"), Prometheus),
        (Some("text/plain"), Prometheus),
        (Some("application/json"), Prometheus),
        (Some("application/openmetrics-text"), OpenMetrics),
        // Prometheus 2.x scrapes.
        (
            Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            OpenMetrics,
        ),
        // Prometheus with OpenMetrics turned off.
        (Some("text/plain;version=0.0.4;q=0.9,*/*;q=0.1"), Prometheus),
        (
            Some("text/plain;version=0.0.4,application/openmetrics-text;version=1.0.0;q=0.5"),
            Prometheus,
        ),
        // A version this encoder does not write is not chosen.
        (Some("application/openmetrics-text;version=2.0.0"), Prometheus),
        (Some("application/openmetrics-text;q=0"), Prometheus),
    ];
    for (accept, want) in cases {
        assert_eq!(Format::negotiate(accept), want, "{accept:?}");
    }
}

#[test]
fn unknown_http_methods_are_one_label() {
    let m = Metrics::new();
    m.http_request("BREW", None, 404, Duration::from_millis(1));
    m.http_request(
        "GET",
        Some("/v1/enrollments/{id}"),
        200,
        Duration::from_millis(2),
    );
    let text = m.encode(Format::Prometheus).unwrap();
    assert!(
        text.contains(r#"method="other",route="unmatched",status="404""#),
        "{text}"
    );
    assert!(!text.contains("BREW"));
    assert!(text.contains(r#"route="/v1/enrollments/{id}",status="200""#));
}

#[test]
fn every_family_is_exposed_under_its_documented_name() {
    let m = Metrics::new();
    m.ceremony_ended(CeremonyEnd {
        kind: "enrollment",
        target: "local",
        outcome: "succeeded",
        state: "succeeded",
        elapsed: Duration::from_secs(1),
        in_key: Duration::from_millis(30),
    });
    m.sms_challenge("sign_in", SmsOutcome::Refused(ErrorCode::WrongCode));
    m.sms_challenge("made_up", SmsOutcome::Created);
    m.sms_message("console", MessageStatus::Sent);
    m.set_sms_circuit_open("console", false);
    m.http_request("GET", Some("/healthz"), 200, Duration::from_millis(1));
    m.entra_request("GET", "users/{upn}/authentication/fido2Methods", Some(200));
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let text = m.encode(format).unwrap();
        for name in FAMILY_NAMES {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing from {format:?}:\n{text}"
            );
        }
        assert!(
            text.contains(r#"purpose="other",outcome="created""#),
            "{text}"
        );
        assert!(text.contains(&format!(
            r#"keygate_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        )));
    }
    assert!(m.encode(Format::OpenMetrics).unwrap().ends_with("# EOF\n"));
}
