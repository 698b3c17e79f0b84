//! Phone numbers: parsed with the `phonenumber` crate (a libphonenumber port), stored in E.164,
//! shown masked. Only mobile numbers from allowed countries are accepted.
//!
//! The crate's built-in database holds every territory (~3 MiB of heap once loaded). keygate
//! loads only what its config needs: the allowed countries, the default region and every
//! territory sharing a calling code with them (so that a Jersey number is recognised as
//! Jersey's, not mistaken for an invalid British one), from the same metadata packed by
//! `build.rs`. Numbers with any other assigned calling code are `country_not_allowed` without
//! looking further. Numbers are written out here ([`e164`], [`international`]), not with the
//! crate's formatter, which loads the built-in database on its first use whatever database it
//! is given (it evaluates `unwrap_or(&DATABASE)`): 1.8 MiB resident from the first request
//! on.

use phonenumber::country::Id;
use phonenumber::metadata::Database;
use phonenumber::{PhoneNumber, Type};

use super::error::SmsError;

mod packed {
    include!(concat!(env!("OUT_DIR"), "/phone_territories.rs"));
    pub(crate) const DEFLATED: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/phone_territories.deflate"));
}

/// A number that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPhone {
    pub e164: String,
    /// Country calling code (32 for Belgium).
    pub country_code: u16,
    /// ISO 3166 alpha-2, e.g. "BE".
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a region in libphonenumber's metadata")]
pub struct UnknownRegion(pub String);

fn calling_code(region: &str) -> Option<u16> {
    packed::TERRITORIES
        .iter()
        .find(|(id, ..)| id.eq_ignore_ascii_case(region))
        .map(|&(_, code, ..)| code)
}

/// Whether libphonenumber knows `region` (ISO 3166 alpha-2, any case).
pub fn is_known_region(region: &str) -> bool {
    region.len() == 2 && calling_code(region).is_some()
}

/// The first of `allowed` and `default_region` that libphonenumber does not know, if any: what
/// config validation and [`Numbering::new`] refuse.
pub fn unknown_region<'a>(default_region: &'a str, allowed: &'a [String]) -> Option<&'a str> {
    regions(default_region, allowed).find(|r| !is_known_region(r))
}

fn regions<'a>(default_region: &'a str, allowed: &'a [String]) -> impl Iterator<Item = &'a str> {
    allowed.iter().map(String::as_str).chain([default_region])
}

/// The numbering plans keygate accepts numbers from, parsed once (at start-up: the parse costs
/// a few milliseconds) and then only read.
pub struct Numbering {
    db: Database,
    default_region: Id,
    /// Upper case.
    allowed: Vec<String>,
    /// Calling codes whose territories are in `db`.
    loaded_codes: Vec<u16>,
}

impl std::fmt::Debug for Numbering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Numbering")
            .field("allowed", &self.allowed)
            .field("loaded_codes", &self.loaded_codes)
            .finish_non_exhaustive()
    }
}

impl Numbering {
    pub fn new(default_region: &str, allowed: &[String]) -> Result<Numbering, UnknownRegion> {
        if let Some(r) = unknown_region(default_region, allowed) {
            return Err(UnknownRegion(r.to_ascii_uppercase()));
        }
        let mut loaded_codes: Vec<u16> = regions(default_region, allowed)
            .filter_map(calling_code)
            .collect();
        loaded_codes.sort_unstable();
        loaded_codes.dedup();
        let default_id: Id = default_region
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| UnknownRegion(default_region.to_string()))?;
        // Contract: build.rs packed this blob from the same metadata file; inflating or parsing
        // it can only fail if the build is broken (the unit tests load every territory).
        let inflated = miniz_oxide::inflate::decompress_to_vec_with_limit(
            packed::DEFLATED,
            packed::INFLATED_LEN,
        )
        .expect("the packed phone metadata inflates");
        let inflated = std::str::from_utf8(&inflated).expect("the phone metadata is UTF-8");
        let mut xml = String::from("<phoneNumberMetadata><territories>");
        for &(_, code, from, to) in packed::TERRITORIES {
            if loaded_codes.binary_search(&code).is_ok() {
                xml.push_str(&inflated[from..to]);
            }
        }
        xml.push_str("</territories></phoneNumberMetadata>");
        let db = Database::parse(&xml).expect("the packed phone metadata parses");
        Ok(Numbering {
            db,
            default_region: default_id,
            allowed: allowed.iter().map(|r| r.to_ascii_uppercase()).collect(),
            loaded_codes,
        })
    }

    /// Parse what a student typed ("0475/34.56.78", "+32 475 34 56 78", "0032475345678", ...).
    pub fn parse(&self, input: &str) -> Result<ParsedPhone, SmsError> {
        let trimmed = input.trim();
        if trimmed.is_empty() || trimmed.len() > 32 {
            return Err(SmsError::InvalidPhoneNumber);
        }
        // "00" is the international prefix in all allowed countries; libphonenumber only applies
        // it for the default region, so normalise it first.
        let normalised = match trimmed.strip_prefix("00") {
            Some(rest) => format!("+{rest}"),
            None => trimmed.to_string(),
        };
        if let Some(code) = international_calling_code(&normalised) {
            if self.loaded_codes.binary_search(&code).is_err() {
                return Err(SmsError::CountryNotAllowed);
            }
        }
        let number: PhoneNumber =
            phonenumber::parse_with(&self.db, Some(self.default_region), &normalised)
                .map_err(|_| SmsError::InvalidPhoneNumber)?;
        if !phonenumber::is_valid_with(&self.db, &number) {
            return Err(SmsError::InvalidPhoneNumber);
        }
        let country = number
            .metadata(&self.db)
            .map(|m| m.id().to_string())
            .ok_or(SmsError::InvalidPhoneNumber)?;
        if !self.allowed.contains(&country) {
            return Err(SmsError::CountryNotAllowed);
        }
        match number.number_type(&self.db) {
            Type::Mobile | Type::FixedLineOrMobile => {}
            _ => return Err(SmsError::NotAMobileNumber),
        }
        Ok(ParsedPhone {
            e164: e164(&number),
            country_code: number.code().value(),
            country,
        })
    }

    /// "+32 412 34 56 78" -> "+32 4•• •• •• 78": country code, the first national digit and
    /// the last two digits stay; enough for a student to recognise their number, useless to
    /// anyone else. A number outside the loaded plans is masked ungrouped.
    pub fn mask(&self, e164: &str) -> String {
        let international = phonenumber::parse_with(&self.db, None, e164)
            .ok()
            .and_then(|n| international(&self.db, &n))
            .unwrap_or_else(|| e164.to_string());
        mask_international(&international)
    }
}

/// E.164 ("+32475345678"), as libphonenumber writes it: the calling code, then the national
/// number with any leading zeros it keeps.
fn e164(number: &PhoneNumber) -> String {
    format!("+{}{}", number.code().value(), number.national())
}

/// The international format ("+32 475 34 56 78"), as libphonenumber writes it from `db`: of
/// the country's international formats (its national ones when it has none), the first with
/// no leading-digits rule, or whose last leading-digits pattern matches at the start of the
/// national number and whose pattern matches all of it; the national number ungrouped when
/// none does. None when `db` has no plan for the number's calling code. (No extension: the
/// numbers keygate keeps have none.)
fn international(db: &Database, number: &PhoneNumber) -> Option<String> {
    let code = number.code().value();
    let meta = db.by_code(&code)?.into_iter().next()?;
    let national = number.national().to_string();
    let formats = if meta.international_formats().is_empty() {
        meta.formats()
    } else {
        meta.international_formats()
    };
    let format = formats.iter().find(|f| {
        let leading = f.leading_digits();
        leading.is_empty()
            || (leading
                .last()
                .is_some_and(|l| l.find(&national).is_some_and(|m| m.start() == 0))
                && f.pattern()
                    .find(&national)
                    .is_some_and(|m| m.start() == 0 && m.end() == national.len()))
    });
    let grouped = match format {
        Some(f) => f.pattern().replace(&national, f.format()).into_owned(),
        None => national,
    };
    Some(format!("+{code} {grouped}"))
}

/// The assigned calling code a "+..." number starts with (E.164 codes are prefix-free), or
/// None when it does not start with "+" or with any assigned code.
pub(crate) fn international_calling_code(number: &str) -> Option<u16> {
    let digits: String = number
        .strip_prefix('+')?
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(3)
        .collect();
    (1..=digits.len()).find_map(|len| {
        let code: u16 = digits[..len].parse().ok()?;
        packed::TERRITORIES
            .iter()
            .any(|&(_, c, ..)| c == code)
            .then_some(code)
    })
}

/// For `Debug` output, where no numbering plan is at hand: "+•••••••••78".
pub fn redact(e164: &str) -> String {
    let digits = e164.chars().filter(|c| c.is_ascii_digit()).count();
    let mut seen = 0;
    e164.chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen + 2 > digits {
                c
            } else {
                '•'
            }
        })
        .collect()
}

fn mask_international(international: &str) -> String {
    let (cc, national) = match international.split_once(' ') {
        Some((cc, rest)) => (cc.to_string(), rest.to_string()),
        None => (String::new(), international.to_string()),
    };
    let digits = national.chars().filter(|c| c.is_ascii_digit()).count();
    let mut seen = 0;
    let masked: String = national
        .chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen == 1 || seen + 2 > digits {
                c
            } else {
                '•'
            }
        })
        .collect();
    if cc.is_empty() {
        masked
    } else {
        format!("{cc} {masked}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        ["BE", "NL", "LU", "FR", "DE"].map(String::from).to_vec()
    }

    fn plans() -> Numbering {
        Numbering::new("BE", &allowed()).unwrap()
    }

    /// Every territory allowed (slow to load: shared by the tests that need it).
    fn world() -> &'static Numbering {
        static WORLD: std::sync::OnceLock<Numbering> = std::sync::OnceLock::new();
        WORLD.get_or_init(|| {
            let all: Vec<String> = packed::TERRITORIES
                .iter()
                .filter(|(id, ..)| id.len() == 2)
                .map(|(id, ..)| id.to_string())
                .collect();
            assert!(all.len() > 240, "{}", all.len());
            Numbering::new("BE", &all).unwrap()
        })
    }

    #[test]
    fn belgian_formats_table() {
        for input in [
            "0475 34 56 78",
            "0475/34.56.78",
            "0475345678",
            "+32 475 34 56 78",
            "+32475345678",
            "0032475345678",
            "0032 475 34 56 78",
            " 0475-34-56-78 ",
            "(0475) 34 56 78",
        ] {
            let p = plans()
                .parse(input)
                .unwrap_or_else(|e| panic!("{input}: {e:?}"));
            assert_eq!(p.e164, "+32475345678", "{input}");
            assert_eq!(p.country_code, 32);
            assert_eq!(p.country, "BE");
        }
    }

    /// The issue's own examples use 0412. The bundled libphonenumber metadata (9.0.33) gives
    /// Belgian mobiles as `4[5-9]\d{7}` (0450-0499) and no other Belgian type has 9 national
    /// digits starting with 4, so +32 412 34 56 78 is not a valid number at all: every way of
    /// writing it is `invalid_phone_number` (not `not_a_mobile_number`), and the formats
    /// themselves are shown to work with 0475 above.
    #[test]
    fn the_issues_0412_examples_are_not_valid_belgian_numbers() {
        for input in [
            "0412 34 56 78",
            "0412/34.56.78",
            "+32 412 34 56 78",
            "0032412345678",
        ] {
            assert_eq!(
                plans().parse(input).unwrap_err(),
                SmsError::InvalidPhoneNumber,
                "{input}"
            );
        }
        let db = &plans().db;
        let n = phonenumber::parse_with(db, Some(Id::BE), "0412345678").unwrap();
        assert!(
            !phonenumber::is_valid_with(db, &n),
            "the metadata has no 041x range"
        );
        // The same formats with the lowest mobile prefix the metadata knows.
        for input in [
            "0450 34 56 78",
            "0450/34.56.78",
            "+32 450 34 56 78",
            "0032450345678",
        ] {
            assert_eq!(
                plans().parse(input).unwrap().e164,
                "+32450345678",
                "{input}"
            );
        }
    }

    #[test]
    fn other_countries_and_rejections() {
        assert_eq!(
            plans().parse("+31 6 12345678").unwrap().e164,
            "+31612345678"
        );
        assert_eq!(
            Numbering::new("FR", &allowed())
                .unwrap()
                .parse("06 12 34 56 78")
                .unwrap()
                .e164,
            "+33612345678"
        );
        assert_eq!(
            plans().parse("+1 415 555 2671").unwrap_err(),
            SmsError::CountryNotAllowed
        );
        // A Belgian landline (Brussels) is not a mobile number.
        assert_eq!(
            plans().parse("02 555 12 34").unwrap_err(),
            SmsError::NotAMobileNumber
        );
        for bad in [
            "",
            "hello",
            "0412",
            "+32 475 34 56 78 99 99",
            "04123456789012345678901234567890123",
        ] {
            assert_eq!(
                plans().parse(bad).unwrap_err(),
                SmsError::InvalidPhoneNumber,
                "{bad}"
            );
        }
    }

    #[test]
    fn masking_keeps_only_what_a_student_recognises() {
        assert_eq!(plans().mask("+32475345678"), "+32 4•• •• •• 78");
        let nl = plans().mask("+31612345678");
        assert!(
            nl.starts_with("+31 6") && nl.ends_with("78") && !nl.contains("2345"),
            "{nl}"
        );
    }

    #[test]
    fn only_the_needed_plans_are_loaded() {
        let p = plans();
        assert_eq!(p.loaded_codes, vec![31, 32, 33, 49, 352]);
        assert!(is_known_region("be") && is_known_region("JE"));
        assert!(!is_known_region("XX") && !is_known_region("001"));
        assert_eq!(
            Numbering::new("BE", &["BE".into(), "XX".into()]).unwrap_err(),
            UnknownRegion("XX".into())
        );
        // An unassigned calling code is not a number; an assigned one not loaded is refused.
        assert_eq!(
            p.parse("+999 123 4567").unwrap_err(),
            SmsError::InvalidPhoneNumber
        );
        assert_eq!(
            p.parse("0044 7400 123456").unwrap_err(),
            SmsError::CountryNotAllowed
        );
    }

    /// Territories sharing a calling code are loaded together, so a Jersey number is Jersey's.
    #[test]
    fn a_shared_calling_code_still_tells_the_territories_apart() {
        let gb = Numbering::new("GB", &["GB".into()]).unwrap();
        assert_eq!(gb.parse("07400 123456").unwrap().e164, "+447400123456");
        assert_eq!(
            gb.parse("+44 7797 712345").unwrap_err(),
            SmsError::CountryNotAllowed
        );
        let je = Numbering::new("GB", &["JE".into()]).unwrap();
        assert_eq!(je.parse("+44 7797 712345").unwrap().country, "JE");
    }

    /// Every packed territory inflates and parses: loading them all must work.
    #[test]
    fn every_packed_territory_parses() {
        let world = world();
        let us = world.parse("+1 201 555 0123").unwrap();
        assert_eq!((us.country.as_str(), us.country_code), ("US", 1));
        assert_eq!(world.parse("+32 475 34 56 78").unwrap().country, "BE");
    }

    /// The first `take` example numbers of every territory in the vendored metadata, as
    /// (territory id, region, number).
    fn examples(take: usize) -> Vec<(&'static str, Id, String)> {
        let inflated = miniz_oxide::inflate::decompress_to_vec(packed::DEFLATED).unwrap();
        let inflated = String::from_utf8(inflated).unwrap();
        let mut out = Vec::new();
        for &(id, _, from, to) in packed::TERRITORIES {
            let Ok(region) = id.parse::<Id>() else {
                continue;
            };
            for chunk in inflated[from..to]
                .split("<exampleNumber>")
                .skip(1)
                .take(take)
            {
                out.push((id, region, chunk[..chunk.find('<').unwrap()].to_string()));
            }
        }
        out
    }

    /// The vendored metadata is the one the crate was built from: for example numbers of every
    /// territory, our packed plans and the crate's own database agree on validity and
    /// type (a crate upgrade without the matching `data/libphonenumber` file shows up here).
    #[test]
    fn packed_metadata_agrees_with_the_crates_own() {
        let world = world();
        // The first two (fixed line, mobile): all of them thrash the crates' regex caches.
        let examples = examples(2);
        for (id, region, example) in &examples {
            let ours = phonenumber::parse_with(&world.db, Some(*region), example).unwrap();
            let theirs = phonenumber::parse(Some(*region), example).unwrap();
            assert_eq!(
                (
                    phonenumber::is_valid_with(&world.db, &ours),
                    ours.number_type(&world.db)
                ),
                (
                    phonenumber::is_valid(&theirs),
                    theirs.number_type(&phonenumber::metadata::DATABASE)
                ),
                "{id} {example}"
            );
        }
        assert!(examples.len() > 400, "{}", examples.len());
    }

    /// E.164 and the international format, written here, as the crate's formatter writes them,
    /// for the example numbers of every territory.
    #[test]
    fn numbers_are_written_as_the_crates_formatter_writes_them() {
        use phonenumber::Mode;
        let world = world();
        let examples = examples(4);
        for (id, region, example) in &examples {
            let n = phonenumber::parse_with(&world.db, Some(*region), example).unwrap();
            let crates = |mode| n.format_with(&world.db).mode(mode).to_string();
            assert_eq!(e164(&n), crates(Mode::E164), "{id} {example}");
            assert_eq!(
                international(&world.db, &n).as_deref(),
                Some(crates(Mode::International).as_str()),
                "{id} {example}"
            );
        }
        assert!(examples.len() > 800, "{}", examples.len());
    }

    #[test]
    fn redaction_keeps_the_last_two_digits() {
        assert_eq!(redact("+32475345678"), "+•••••••••78");
    }
}
