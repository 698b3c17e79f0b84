//! The signature of a hook delivery, the webhook SMS provider's HMAC-SHA256
//! ([`webhook_signature`]) over `timestamp + "." + body`, so that a receiver can refuse a
//! replayed body with an old timestamp.

use subtle::ConstantTimeEq;

use crate::sms::providers::webhook_signature;

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: the `X-Keygate-Signature`
/// header sent with `X-Keygate-Timestamp: <timestamp>` (Unix seconds).
pub fn hook_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    webhook_signature(secret, &signed)
}

/// A receiver's check of a delivery's headers (constant-time). The receiver also bounds the
/// timestamp's age; that is its policy, not this function's.
pub fn verify_hook_signature(secret: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let expected = hook_signature(secret, timestamp, body);
    expected.len() == signature.len() && bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let sig = hook_signature("s3cret", "1790000000", b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify_hook_signature(
            "s3cret",
            "1790000000",
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify_hook_signature(
            "s3cret",
            "1790000001",
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify_hook_signature(
            "s3cret",
            "1790000000",
            b"{\"a\":2}",
            &sig
        ));
        assert!(!verify_hook_signature(
            "other",
            "1790000000",
            b"{\"a\":1}",
            &sig
        ));
    }
}
