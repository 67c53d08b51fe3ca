//! Check-digit and structure validators for identifiers: pure functions over ASCII digits and
//! letters.
//!
//! Invariants: every function takes already-extracted ASCII (digits as `b'0'..=b'9'`), never
//! panics on any input (wrong lengths and foreign bytes return `false`/`None`), and knows
//! nothing about where the value came from.

/// Luhn (mod 10) check over ASCII digits. Empty or non-digit input fails.
pub fn luhn(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// Card networks, used to pick a confidence for a Luhn-valid number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardBrand {
    /// Visa, Mastercard (51–55 and 2221–2720), Amex, Discover, JCB, Diners, UnionPay.
    Major,
    /// Maestro, UATP, RuPay, Mir and other ranges seen less often; also 12-digit Maestro.
    Minor,
}

fn prefix(digits: &[u8], n: usize) -> u32 {
    digits.iter().take(n).fold(0u32, |acc, b| {
        acc * 10 + u32::from(b.wrapping_sub(b'0') % 10)
    })
}

/// Classifies a digit string by issuer range and length (IIN tables as published by the
/// networks). `None` means no network issues this length with this prefix.
pub fn card_brand(digits: &[u8]) -> Option<CardBrand> {
    let len = digits.len();
    if !(12..=19).contains(&len) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let p1 = prefix(digits, 1);
    let p2 = prefix(digits, 2);
    let p3 = prefix(digits, 3);
    let p4 = prefix(digits, 4);
    let p6 = prefix(digits, 6);
    let major = match p1 {
        4 => matches!(len, 13 | 16 | 19),
        5 => (51..=55).contains(&p2) && len == 16,
        2 => (2221..=2720).contains(&p4) && len == 16,
        3 => {
            ((p2 == 34 || p2 == 37) && len == 15)
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&len))
                || (((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39)
                    && (14..=19).contains(&len))
        }
        6 => {
            (p4 == 6011
                || (644..=649).contains(&p3)
                || p2 == 65
                || (622_126..=622_925).contains(&p6)
                || p2 == 62)
                && (16..=19).contains(&len)
        }
        _ => false,
    };
    if major && len >= 13 {
        return Some(CardBrand::Major);
    }
    let minor = match p1 {
        // UATP
        1 => len == 15,
        // JCB's older 15-digit ranges and Mir
        2 => ((p4 == 2131 && len == 15) || (2200..=2204).contains(&p4)) && len >= 15,
        // JCB and Diners ranges as issued by smaller networks and test generators
        3 => (14..=19).contains(&len),
        // Maestro (including 12-digit), Verve, RuPay
        5 => p2 == 50 || (56..=59).contains(&p2),
        6 => true,
        8 => p2 == 81 || p2 == 82,
        _ => false,
    } || (p4 == 1800 && len == 15);
    minor.then_some(CardBrand::Minor)
}

/// IBAN length by ISO 3166 country code (SWIFT IBAN registry).
pub fn iban_length(country: [u8; 2]) -> Option<usize> {
    let [a, b] = country;
    let c = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
    Some(match &c {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"CH" | b"CR" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        b"RU" => 33,
        _ => return None,
    })
}

/// IBAN check: known country, its exact length, alphanumeric body, mod 97 == 1.
/// Accepts upper or lower case; `compact` must not contain spaces.
pub fn iban_valid(compact: &[u8]) -> bool {
    let (Some(&a), Some(&b)) = (compact.first(), compact.get(1)) else {
        return false;
    };
    if !a.is_ascii_alphabetic() || !b.is_ascii_alphabetic() {
        return false;
    }
    if iban_length([a, b]) != Some(compact.len()) {
        return false;
    }
    if !compact
        .get(2..4)
        .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    {
        return false;
    }
    let rotated = compact.iter().skip(4).chain(compact.iter().take(4));
    let mut rem = 0u32;
    for &ch in rotated {
        let ch = ch.to_ascii_uppercase();
        match ch {
            b'0'..=b'9' => rem = (rem * 10 + u32::from(ch - b'0')) % 97,
            b'A'..=b'Z' => rem = (rem * 100 + u32::from(ch - b'A') + 10) % 97,
            _ => return false,
        }
    }
    rem == 1
}

/// ABA routing transit number: nine digits, weights 3-7-1, sum divisible by ten, and a
/// Federal Reserve prefix (00–12, 21–32, 61–72, 80).
pub fn aba_valid(digits: &[u8]) -> bool {
    if digits.len() != 9 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let p = prefix(digits, 2);
    if !(p <= 12 || (21..=32).contains(&p) || (61..=72).contains(&p) || p == 80) {
        return false;
    }
    let w = [3u32, 7, 1];
    let sum: u32 = digits
        .iter()
        .zip(w.iter().cycle())
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    sum.is_multiple_of(10)
}

/// National Provider Identifier: ten digits starting 1 or 2, Luhn over "80840" + the number.
pub fn npi_valid(digits: &[u8]) -> bool {
    if digits.len() != 10 || !matches!(digits.first(), Some(b'1' | b'2')) {
        return false;
    }
    let mut buf = [0u8; 15];
    for (dst, src) in buf.iter_mut().zip(b"80840".iter().chain(digits)) {
        *dst = *src;
    }
    luhn(&buf)
}

/// DEA registration number: registrant-type letter, a letter (or 9), seven digits whose
/// check digit is `(d1+d3+d5 + 2*(d2+d4+d6)) mod 10`.
pub fn dea_valid(s: &[u8]) -> bool {
    let [t, l, rest @ ..] = s else {
        return false;
    };
    if rest.len() != 7 || !rest.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let t = t.to_ascii_uppercase();
    if !b"ABCDEFGHJKLMPRSTUX".contains(&t) || !(l.is_ascii_alphabetic() || *l == b'9') {
        return false;
    }
    let d: Vec<u32> = rest.iter().map(|b| u32::from(b - b'0')).collect();
    let (Some(d1), Some(d2), Some(d3), Some(d4), Some(d5), Some(d6), Some(check)) = (
        d.first(),
        d.get(1),
        d.get(2),
        d.get(3),
        d.get(4),
        d.get(5),
        d.get(6),
    ) else {
        return false;
    };
    (d1 + d3 + d5 + 2 * (d2 + d4 + d6)) % 10 == *check
}

fn vin_value(c: u8) -> Option<u32> {
    Some(match c.to_ascii_uppercase() {
        c @ b'0'..=b'9' => u32::from(c - b'0'),
        b'A' | b'J' => 1,
        b'B' | b'K' | b'S' => 2,
        b'C' | b'L' | b'T' => 3,
        b'D' | b'M' | b'U' => 4,
        b'E' | b'N' | b'V' => 5,
        b'F' | b'W' => 6,
        b'G' | b'P' | b'X' => 7,
        b'H' | b'Y' => 8,
        b'R' | b'Z' => 9,
        _ => return None,
    })
}

/// Vehicle identification number: 17 characters without I, O, Q, check digit in position 9
/// (North American rule, weights 8-7-6-5-4-3-2-10-0-9-8-7-6-5-4-3-2, mod 11, 10 = 'X').
pub fn vin_valid(s: &[u8]) -> bool {
    const W: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    if s.len() != 17 {
        return false;
    }
    let mut sum = 0u32;
    for (c, w) in s.iter().zip(W) {
        let Some(v) = vin_value(*c) else {
            return false;
        };
        sum += v * w;
    }
    let expected = match sum % 11 {
        10 => b'X',
        r => b'0' + u8::try_from(r).unwrap_or(0),
    };
    s.get(8).map(u8::to_ascii_uppercase) == Some(expected)
}

/// SSA rules for a nine-digit SSN: area not 000, 666 or 9xx; group not 00; serial not 0000.
/// Also rejects 536-22-8726, printed on wallet inserts and never issued to anyone.
pub fn ssn_valid(digits: &[u8]) -> bool {
    if digits.len() != 9 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let area = prefix(digits, 3);
    let group = prefix(digits.get(3..).unwrap_or_default(), 2);
    let serial = prefix(digits.get(5..).unwrap_or_default(), 4);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && digits != b"078051120"
}

/// NANP area code or exchange: three digits, first 2–9 (N11 service codes excluded for areas).
pub fn nanp_area_valid(d: &[u8]) -> bool {
    d.len() == 3
        && matches!(d.first(), Some(b'2'..=b'9'))
        && d.iter().all(u8::is_ascii_digit)
        && !(d.get(1) == Some(&b'1') && d.get(2) == Some(&b'1'))
}

/// NANP exchange code: three digits, first 2–9.
pub fn nanp_exchange_valid(d: &[u8]) -> bool {
    d.len() == 3 && matches!(d.first(), Some(b'2'..=b'9')) && d.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn digits(s: &str) -> Vec<u8> {
        s.bytes().filter(u8::is_ascii_alphanumeric).collect()
    }

    #[test]
    fn luhn_known_test_cards() {
        for good in [
            "4111 1111 1111 1111",
            "5555 5555 5555 4444",
            "2223 0000 4840 0011",
            "3782 822463 10005",
            "6011 1111 1111 1117",
            "3530 1113 3330 0000",
            "4000 0000 0000 0002",
            "4111 1111 1111 1111 110",
        ] {
            let d = digits(good);
            assert!(luhn(&d), "{good}");
            assert_eq!(card_brand(&d), Some(CardBrand::Major), "{good}");
        }
        for bad in [
            "4111 1111 1111 1112",
            "5555 5555 5555 4445",
            "1234 5678 9012 3456",
        ] {
            assert!(!luhn(&digits(bad)), "{bad}");
        }
        assert!(!luhn(b""));
        assert!(!luhn(b"12a4"));
    }

    #[test]
    fn card_brand_rejects_wrong_lengths() {
        assert_eq!(card_brand(b"41111111111111"), None); // Visa is never 14
        assert_eq!(card_brand(b"378282246310005"), Some(CardBrand::Major));
        assert_ne!(card_brand(b"3782822463100050"), Some(CardBrand::Major)); // Amex is never 16
        assert_eq!(card_brand(b"9111111111111111"), None);
        assert_eq!(card_brand(b"1111111111111"), None); // 13-digit epoch-millis shape
        assert_eq!(card_brand(b"501864667909"), Some(CardBrand::Minor));
    }

    #[test]
    fn iban_mod97() {
        assert!(iban_valid(&digits("GB82 WEST 1234 5698 7654 32")));
        assert!(iban_valid(&digits("gb82 west 1234 5698 7654 32")));
        assert!(iban_valid(&digits("DE89 3704 0044 0532 0130 00")));
        assert!(iban_valid(&digits("FR14 2004 1010 0505 0001 3M02 606")));
        assert!(!iban_valid(&digits("GB82 WEST 1234 5698 7654 33")));
        assert!(!iban_valid(&digits("GB82 WEST 1234 5698 7654")));
        assert!(!iban_valid(&digits("ZZ82 WEST 1234 5698 7654 32")));
        assert!(!iban_valid(b"G"));
    }

    #[test]
    fn aba_checksum() {
        assert!(aba_valid(b"011000015"));
        assert!(aba_valid(b"021000021"));
        assert!(!aba_valid(b"011000016"));
        assert!(!aba_valid(b"991000015"));
        assert!(!aba_valid(b"01100001"));
    }

    #[test]
    fn npi_checksum() {
        assert!(npi_valid(b"1234567893"));
        assert!(!npi_valid(b"1234567890"));
        assert!(!npi_valid(b"3234567893"));
    }

    #[test]
    fn dea_checksum() {
        assert!(dea_valid(b"AB1234563"));
        assert!(dea_valid(b"ab1234563"));
        assert!(!dea_valid(b"AB1234564"));
        assert!(!dea_valid(b"IB1234563")); // I is no registrant type
        assert!(!dea_valid(b"AB123456"));
    }

    #[test]
    fn vin_check_digit() {
        assert!(vin_valid(b"1M8GDM9AXKP042788"));
        assert!(vin_valid(b"11111111111111111"));
        assert!(!vin_valid(b"1M8GDM9A1KP042788"));
        assert!(!vin_valid(b"1M8GDM9AXKP04278O"));
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn_valid(b"123456789"));
        assert!(ssn_valid(b"219099999"));
        assert!(!ssn_valid(b"000456789"));
        assert!(!ssn_valid(b"666456789"));
        assert!(!ssn_valid(b"912456789"));
        assert!(!ssn_valid(b"123006789"));
        assert!(!ssn_valid(b"123450000"));
        assert!(!ssn_valid(b"078051120"));
    }

    #[test]
    fn nanp_codes() {
        assert!(nanp_area_valid(b"212"));
        assert!(!nanp_area_valid(b"112"));
        assert!(!nanp_area_valid(b"911"));
        assert!(nanp_exchange_valid(b"555"));
        assert!(!nanp_exchange_valid(b"055"));
    }
}
