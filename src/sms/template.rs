//! Message texts per locale (nl default, en, fr), kept to the GSM 03.38 basic character set so
//! that a message is one 160-character segment, ending with the WebOTP line `@domain #code`.

use super::code::Code;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    Default,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    #[default]
    Nl,
    En,
    Fr,
}

impl Locale {
    pub fn as_str(self) -> &'static str {
        match self {
            Locale::Nl => "nl",
            Locale::En => "en",
            Locale::Fr => "fr",
        }
    }
    pub fn parse(s: &str) -> Option<Locale> {
        match s {
            "nl" => Some(Locale::Nl),
            "en" => Some(Locale::En),
            "fr" => Some(Locale::Fr),
            _ => None,
        }
    }
}

/// The text for one code. `minutes` is the code's lifetime.
pub fn render(locale: Locale, code: &Code, minutes: u64, webotp_domain: Option<&str>) -> String {
    let c = code.expose();
    let mut text = match locale {
        Locale::Nl => format!("{c} is je Odisee-verificatiecode. Hij vervalt na {minutes} minuten. Deel hem met niemand."),
        Locale::En => format!("{c} is your Odisee verification code. It expires in {minutes} minutes. Do not share it."),
        Locale::Fr => format!("{c} est votre code de vérification Odisee. Il expire dans {minutes} minutes. Ne le partagez pas."),
    };
    if let Some(d) = webotp_domain {
        // WebOTP (https://wicg.github.io/sms-one-time-codes/): last line "@<domain> #<code>".
        text.push_str(&format!("\n\n@{d} #{c}"));
    }
    text
}

/// GSM 03.38 basic character set (no escape table).
const GSM7: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| GSM7.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_locale_is_one_gsm7_segment_with_webotp() {
        let code = Code::parse_typed("042917").unwrap();
        for l in [Locale::Nl, Locale::En, Locale::Fr] {
            let t = render(l, &code, 5, Some("kiosk.odisee.be"));
            assert!(is_gsm7(&t), "{l:?}: {t}");
            assert!(
                t.chars().count() <= 160,
                "{l:?}: {} chars",
                t.chars().count()
            );
            assert!(t.starts_with("042917"));
            assert!(t.ends_with("\n@kiosk.odisee.be #042917"), "{t}");
        }
        assert!(render(Locale::Nl, &code, 5, None).contains("vervalt na 5 minuten"));
        assert!(!is_gsm7("code: 123 ✓"));
    }
}
