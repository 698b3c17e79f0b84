//! Certificates: PEM files of roots, the built-in FIDO Alliance root, and the one chain check
//! every trust decision of this module goes through (crypto-glue's `X509Store`, the verifier
//! webauthn-rs itself uses for attestation chains).

use std::path::Path;
use std::time::SystemTime;

use crypto_glue::der::Decode;
use crypto_glue::x509::{Certificate, X509Store};

/// The root the FIDO Alliance signs its Metadata Service BLOB under: GlobalSign Root CA - R3
/// (SHA-256 fingerprint CBB522D7B7F127AD6A0113865BDF1CD4102E7D0759AF635A7CF4720DC963C53B,
/// valid until 2029-03-18). `[attestation] mds_root_ca` replaces it.
pub const FIDO_MDS_ROOT_PEM: &str = include_str!("fido-mds-root-r3.pem");

/// DER bodies of the `CERTIFICATE` blocks of a PEM text (the relying party's reader).
pub fn pem_blocks(text: &str) -> Result<Vec<Vec<u8>>, String> {
    crate::ceremony::rp::pem_certificates(text).map_err(|e| e.to_string())
}

/// An X.509 certificate from its DER.
pub fn certificate(der: &[u8]) -> Result<Certificate, String> {
    Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))
}

/// Every certificate of a PEM text; at least one.
pub fn pem_certificates(text: &str) -> Result<Vec<Certificate>, String> {
    let certs = pem_blocks(text)?
        .iter()
        .map(|der| certificate(der))
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

/// [`pem_certificates`] of a file.
pub fn read_pem_certificates(path: &Path) -> Result<Vec<Certificate>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    pem_certificates(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The built-in FIDO Alliance root.
pub fn fido_mds_root() -> Certificate {
    pem_certificates(FIDO_MDS_ROOT_PEM)
        .ok()
        .and_then(|mut c| c.pop())
        .expect("the built-in FIDO MDS root parses")
}

/// Whether `leaf`, through `intermediates` (nearest first), chains to one of `roots` with every
/// certificate valid at `now`; the index of that root. Each root is tried on its own: the
/// store matches an issuer by name, and two roots may share a name.
pub fn chain_root(
    leaf: &Certificate,
    intermediates: &[Certificate],
    roots: &[&Certificate],
    now: SystemTime,
) -> Result<usize, String> {
    let mut last = String::from("no trusted root");
    for (i, root) in roots.iter().enumerate() {
        // Attestation leaves of some vendors carry no basicConstraints (as in webauthn-rs).
        let mut store = X509Store::new(std::slice::from_ref(*root));
        store.leaf_basic_constraints_required(false);
        match store.verify(leaf, intermediates, now) {
            Ok(_) => return Ok(i),
            Err(e) => last = format!("{e:?}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn the_built_in_root_is_globalsign_r3() {
        let der = &pem_blocks(FIDO_MDS_ROOT_PEM).unwrap()[0];
        assert_eq!(
            hex::encode(Sha256::digest(der)),
            "cbb522d7b7f127ad6a0113865bdf1cd4102e7d0759af635a7cf4720dc963c53b"
        );
        let root = fido_mds_root();
        assert!(root
            .tbs_certificate()
            .subject()
            .to_string()
            .contains("GlobalSign Root CA - R3"));
    }

    #[test]
    fn pem_errors_are_named() {
        assert!(pem_certificates("hello").unwrap_err().contains("no PEM"));
        assert!(pem_certificates("-----BEGIN CERTIFICATE-----\nAAAA\n")
            .unwrap_err()
            .contains("no PEM"));
        assert!(
            pem_certificates("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n")
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            pem_certificates("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .unwrap_err()
                .contains("not an X.509")
        );
    }
}
