//! COSE_Key encoding and decoding for EC2 P-256 keys (RFC 9052; CTAP 2.1 §6.5.6 getPublicKey):
//! credential public keys (alg -7) and the PIN key-agreement key (alg -25).

use ciborium::value::Value;
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use p256::{EncodedPoint, PublicKey};

use super::cbor::{bytes, get_int_key, int, int_map, need_bytes};
use crate::device::DeviceError;

/// COSE_Key for an EC2 P-256 public key with the given `alg` (-7 ES256 for credentials,
/// -25 ECDH-ES+HKDF-256 for PIN key agreement, per §6.5.6).
pub fn cose_ec2(pk: &PublicKey, alg: i64) -> Value {
    cose_ec2_sec1(pk.to_encoded_point(false).as_bytes(), alg)
}

/// COSE_Key for an uncompressed SEC1 P-256 point (`04 || x || y`, 65 bytes).
pub(super) fn cose_ec2_sec1(point: &[u8], alg: i64) -> Value {
    int_map(vec![
        (1, int(2)),
        (3, int(alg)),
        (-1, int(1)),
        (-2, bytes(&point[1..33])),
        (-3, bytes(&point[33..65])),
    ])
}

pub fn parse_cose_ec2(v: &Value) -> Result<PublicKey, DeviceError> {
    let x = need_bytes(get_int_key(v, -2), "COSE x")?;
    let y = need_bytes(get_int_key(v, -3), "COSE y")?;
    if x.len() != 32 || y.len() != 32 {
        return Err(DeviceError::Protocol(
            "COSE key coordinates are not 32 bytes".into(),
        ));
    }
    let point = EncodedPoint::from_affine_coordinates(
        p256::FieldBytes::from_slice(&x),
        p256::FieldBytes::from_slice(&y),
        false,
    );
    Option::<PublicKey>::from(PublicKey::from_encoded_point(&point))
        .ok_or_else(|| DeviceError::Protocol("COSE key is not on P-256".into()))
}
