//! The names and base scores of every recognizer, in one place so that audit rows, policies
//! and tests agree on them.
//!
//! Invariants: names are stable identifiers (changing one is a breaking change for policies
//! and audit queries, so it bumps [`crate::detect::VERSION`]); a name for a value found inside
//! an encoded run is `"<encoding>:<inner name>"` and is a `&'static str` like every other.

/// Scores: checksum-validated values start at 0.95, shape-only values lower, and a context
/// word lifts a candidate to at least [`scores::WITH_CONTEXT`]. Policies usually act at 0.5.
pub(crate) mod scores {
    /// Luhn + issuer range + length; 1.0 with a card word nearby.
    pub const CARD: f32 = 0.95;
    /// Luhn-valid but a less common range (Maestro, UATP, 12-digit).
    pub const CARD_MINOR: f32 = 0.8;
    /// 13–19 digits after a card word that fail Luhn: not a card (Luhn stays the gate), but
    /// a long number someone labelled, kept as an account number.
    pub const CARD_LABELLED_ACCOUNT: f32 = 0.7;
    /// mod-97 IBAN with the country's exact length.
    pub const IBAN: f32 = 0.95;
    /// Syntactically valid address with a real-looking TLD.
    pub const EMAIL: f32 = 0.95;
    /// `123-45-6789` shape passing the SSA rules.
    pub const SSN_DASHED: f32 = 0.85;
    /// `123 45 6789` / `123.45.6789` shape passing the SSA rules (at the shipped policies'
    /// identifier threshold: an SSN shape is acted on without a label).
    pub const SSN_LOOSE: f32 = 0.6;
    /// `123-45-6789` shape the SSA would never issue (area 000/666/9xx, group 00, serial 0000):
    /// still typed as an SSN — people mistype, and test data is made of these — but lower.
    pub const SSN_DASHED_UNISSUED: f32 = 0.6;
    /// `123 45 6789` / `123.45.6789` shape the SSA would never issue.
    pub const SSN_LOOSE_UNISSUED: f32 = 0.45;
    /// NANP 3-3-4 with separators or parentheses.
    pub const PHONE_NANP: f32 = 0.75;
    /// The same shape with an area code or exchange NANP never assigns (`123-456-7890`):
    /// still a number someone typed, at the policies' default threshold.
    pub const PHONE_NANP_UNASSIGNED: f32 = 0.5;
    /// E.164 with a leading `+`.
    pub const PHONE_E164: f32 = 0.8;
    /// Trunk-prefixed national format (`0490 75 40 81`).
    pub const PHONE_NATIONAL: f32 = 0.5;
    /// Bare ten digits that fit NANP.
    pub const PHONE_BARE: f32 = 0.4;
    /// Full numeric dates (`3/14/2021`, `2021-03-14`).
    pub const DATE_FULL: f32 = 0.85;
    /// Two-digit-year numeric dates (`3/14/21`).
    pub const DATE_SHORT_YEAR: f32 = 0.7;
    /// Month/day without year, not next to a ratio or vital-sign word (reported: HIPAA dates need no year).
    pub const DATE_NO_YEAR: f32 = 0.55;
    /// Timestamps shaped like machine logs (ISO with `T`/`Z`/fraction, or a log level).
    pub const DATE_LOG: f32 = 0.3;
    /// IPv4 / IPv6.
    pub const IP: f32 = 0.85;
    /// URL with a scheme or `www.`.
    pub const URL: f32 = 0.6;
    /// DEA shape + check digit.
    pub const DEA: f32 = 0.6;
    /// VIN + check digit.
    pub const VIN: f32 = 0.8;
    /// Age over 89 next to an age word or suffix.
    pub const AGE: f32 = 0.85;
    /// A value right after its keyword (MRN, member id, acct #, S/N, routing, NPI, ZIP).
    pub const ANCHORED: f32 = 0.85;
    /// A value after a bare `#` or `No.`, no label of its own: above the policies' default
    /// threshold, below a labelled value.
    pub const BARE_MARKER: f32 = 0.6;
    /// The floor a context word lifts a candidate to.
    pub const WITH_CONTEXT: f32 = 0.85;
    /// Deny-list term.
    pub const DENY: f32 = 0.9;
}

macro_rules! recognizers {
    ($($id:ident = $name:literal : $doc:literal),* $(,)?) => {
        /// Recognizer names as they appear in [`crate::detect::Finding::recognizer`].
        pub mod names {
            $(#[doc = $doc] pub const $id: &str = $name;)*
            /// Every plain (not encoded) recognizer name.
            pub const ALL: &[&str] = &[$($name),*];
        }

        /// The name for a value found by `inner` inside a run of `encoding`.
        pub(crate) fn encoded_name(encoding: crate::detect::encoded::Encoding, inner: &str) -> &'static str {
            use crate::detect::encoded::Encoding;
            match encoding {
                Encoding::Base64 => match inner { $($name => concat!("base64:", $name),)* _ => "base64:nested" },
                Encoding::Hex => match inner { $($name => concat!("hex:", $name),)* _ => "hex:nested" },
                Encoding::Percent => match inner { $($name => concat!("percent:", $name),)* _ => "percent:nested" },
            }
        }
    };
}

recognizers! {
    CREDIT_CARD = "credit_card_luhn": "Luhn-valid PAN in a known issuer range (0.95; 0.8 minor ranges).",
    CARD_TRACK = "card_track_data": "Magnetic-stripe track 1 or 2 data around a Luhn-valid PAN (1.0).",
    CARD_EXPIRY = "card_expiry": "Expiry date next to a PAN (0.9).",
    CARD_CVV = "card_cvv": "CVV/CVC after its keyword next to a PAN (0.9).",
    CARD_LABELLED_ACCOUNT = "card_label_account": "13-19 digits after a card word that fail Luhn: reported as ACCOUNT (0.7).",
    SSN = "ssn": "SSN in 3-2-4 form passing SSA rules (0.85 dashed, 0.55 spaced/dotted, 0.95 with context).",
    SSN_CONTEXT = "ssn_context": "Bare nine digits passing SSA rules next to an SSN keyword (0.85).",
    PHONE_NANP = "phone_nanp": "North American number (0.75 formatted, 0.4 bare, 0.9+ with context).",
    PHONE_INTL = "phone_intl": "E.164 or national format (0.8 with '+', 0.5 trunk-prefixed).",
    PHONE_CONTEXT = "phone_context": "Digit groups next to a phone keyword, or a pager number (0.75).",
    IBAN = "iban_mod97": "IBAN with country length and mod-97 check (0.95).",
    ROUTING = "aba_routing": "ABA routing number with checksum next to a routing keyword (0.85).",
    NPI = "npi_luhn": "NPI with the 80840-prefixed Luhn check next to an NPI keyword (0.85).",
    DEA = "dea_checksum": "DEA number with check digit (0.6; 0.95 with context).",
    IPV4 = "ipv4": "Dotted-quad IPv4 address (0.85; 0.3 next to version words).",
    IPV6 = "ipv6": "IPv6 address (0.85).",
    URL = "url": "URL with a scheme or www. (0.6).",
    EMAIL = "email": "Email address, after homoglyph and fullwidth folding (0.95).",
    EMAIL_SPELLED = "email_spelled": "Spelled-out email: `jane dot doe at example dot com` (0.85).",
    DATE_NUMERIC = "date_numeric": "Numeric date with a year (0.85; 0.7 two-digit year; 0.3 log timestamps).",
    DATE_SHORT = "date_short": "Month/day or month/year without ratio or vital-sign context (0.55; 0.8 with a date word).",
    DATE_MONTH = "date_month_name": "Date with a month name and a day or year (0.85 with year, 0.6 without).",
    AGE = "age_over_89": "Age of 90 or more next to an age word or suffix (0.85).",
    ZIP = "zip_context": "ZIP or ZIP+4 after a state code, or a postal code after a ZIP keyword (0.85).",
    MRN = "mrn_context": "Value after an MRN keyword (0.85).",
    MRN_FORMAT = "mrn_format": "Configured MRN format after an MRN keyword (0.9).",
    HEALTH_PLAN = "health_plan_context": "Value after a member/policy/plan keyword (0.85).",
    ACCOUNT = "account_context": "Value after an account keyword (0.85).",
    VIN = "vin_check_digit": "17-character VIN with valid check digit (0.8; 0.95 with context).",
    LICENSE = "license_context": "Value after a driver's-license keyword, as DRIVERS_LICENSE (0.85).",
    ID = "id_context": "Value after an identifier label of no more specific kind (claim, case, ref, Rx, ID), as ID (0.85).",
    ID_BARE = "id_marker": "Value after a bare '#' or 'No.' (5+ characters, 3 digits in a row), as ID (0.6).",
    DEVICE = "device_serial_context": "Value after a serial-number or device-id keyword (0.85).",
    DENY = "deny_list": "Whole-word match of a configured deny-list term (0.9).",
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_recognizer_and_its_score_scale_is_documented() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/detection.md"))
                .unwrap();
        for name in super::names::ALL {
            assert!(
                doc.contains(&format!("| `{name}` |")),
                "docs/detection.md has no row for {name}"
            );
        }
    }
}
