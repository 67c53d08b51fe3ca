//! Contact values that are not digit runs: emails (anchored on `@`), spelled-out emails
//! (anchored on `dot` / `(at)` keywords), URLs (anchored on `http://`, `www.`) and IPv6
//! addresses (anchored on `:`).
//!
//! Invariants: every search starts at a cheap anchor found by memchr or the keyword pass;
//! the only regex runs on a small window around a spelled-out anchor; emails need a domain
//! with a dot and an alphabetic TLD, so `@decorators`, `pkg@1.2.3` and `user@localhost`
//! are not reported.

use std::net::Ipv6Addr;
use std::ops::Range;

use crate::detect::around::{word_after, word_before};
use crate::detect::keywords::class;
use crate::detect::recognizer::{names, scores};
use crate::detect::{DetectError, EntityType, Scan};

/// Regexes compiled once per detector.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    spelled: regex::Regex,
}

/// Top-level domains accepted after a spelled-out `dot` (common generic and country ones; a
/// spelled-out address with a rarer TLD is left to the classifier).
const TLDS: &str = "com|org|net|edu|gov|mil|int|io|co|uk|de|fr|us|ca|au|info|biz|me|ai|app|dev|nl|se|no|dk|fi|es|it|ch|be|jp|cn|br|ru|pl|cz|eu|mx|nz|ie|pt|hu|gr|ro|tr|il|za|kr|tv|cc|ly|xyz|online|site|health|care|email|mail";

impl Compiled {
    pub(crate) fn new() -> Result<Self, DetectError> {
        let word = r"[a-z0-9_%+\-]+";
        let dot = r"(?:\s*[\(\[\{<]\s*dot\s*[\)\]\}>]\s*|\s+dot\s+|\.)";
        let at = r"(?:\s*[\(\[\{<]\s*at\s*[\)\]\}>]\s*|\s+at\s+|@)";
        let pattern = format!(
            r"(?i)\b{word}(?:{dot}{word}){{0,3}}{at}{word}(?:{dot}{word}){{0,3}}{dot}(?:{TLDS})\b"
        );
        let spelled = regex::RegexBuilder::new(&pattern)
            .size_limit(1 << 22)
            .build()
            .map_err(|e| DetectError::Automaton {
                what: "spelled-out email pattern",
                reason: e.to_string(),
            })?;
        Ok(Self { spelled })
    }
}

/// Runs all contact recognizers.
pub(crate) fn scan(s: &mut Scan<'_>, compiled: &Compiled) {
    emails(s);
    spelled_emails(s, compiled);
    urls(s);
    ipv6(s);
}

fn is_local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-' | b'\'')
}

fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// Walks left from `at` over local-part characters (non-ASCII letters included).
fn local_start(text: &str, at: usize) -> usize {
    let mut start = at;
    let Some(head) = text.get(..at) else {
        return at;
    };
    for (i, c) in head.char_indices().rev() {
        let ok = if c.is_ascii() {
            u8::try_from(c).is_ok_and(is_local_byte)
        } else {
            c.is_alphanumeric()
        };
        if !ok || at - i > 64 {
            break;
        }
        start = i;
    }
    start
}

/// Walks right from `from` over domain characters (non-ASCII letters included).
fn domain_end(text: &str, from: usize) -> usize {
    let mut end = from;
    let Some(tail) = text.get(from..) else {
        return from;
    };
    for (i, c) in tail.char_indices() {
        let ok = if c.is_ascii() {
            u8::try_from(c).is_ok_and(is_domain_byte)
        } else {
            c.is_alphanumeric()
        };
        if !ok || i > 253 {
            break;
        }
        end = from + i + c.len_utf8();
    }
    end
}

/// Local parts that name a service rather than a person (`git@github.com:org/repo`).
const SERVICE_LOCALS: &[&str] = &[
    "git",
    "noreply",
    "no-reply",
    "donotreply",
    "do-not-reply",
    "mailer-daemon",
];

fn valid_domain(domain: &str) -> bool {
    let mut labels = domain.split('.');
    let Some(tld) = labels.next_back() else {
        return false;
    };
    let tld_ok = (2..=24).contains(&tld.chars().count()) && tld.chars().all(char::is_alphabetic);
    let mut count = 0;
    let rest_ok = labels.all(|l| {
        count += 1;
        !l.is_empty() && !l.starts_with('-') && !l.ends_with('-')
    });
    tld_ok && rest_ok && count >= 1
}

fn emails(s: &mut Scan<'_>) {
    let text = s.text;
    let mut last_end = 0;
    for at in memchr::memchr_iter(b'@', s.bytes) {
        if at < last_end {
            continue;
        }
        let mut start = local_start(text, at);
        while text
            .as_bytes()
            .get(start)
            .is_some_and(|b| matches!(b, b'.' | b'\'' | b'-'))
        {
            start += 1;
        }
        if start >= at {
            continue;
        }
        let mut end = domain_end(text, at + 1);
        while end > at + 1
            && text
                .as_bytes()
                .get(end - 1)
                .is_some_and(|b| matches!(b, b'.' | b'-'))
        {
            end -= 1;
        }
        let Some(domain) = text.get(at + 1..end) else {
            continue;
        };
        if !valid_domain(domain) {
            continue;
        }
        let local = text.get(start..at).unwrap_or_default();
        let score = if SERVICE_LOCALS.iter().any(|l| l.eq_ignore_ascii_case(local)) {
            0.4
        } else {
            scores::EMAIL
        };
        s.emit(start..end, EntityType::Email, score, names::EMAIL);
        last_end = end;
    }
}

fn spelled_emails(s: &mut Scan<'_>, compiled: &Compiled) {
    let anchors: Vec<usize> = s.hits.of(class::SPELLED).map(|h| h.start).collect();
    let mut done_until = 0;
    for anchor in anchors {
        if anchor < done_until {
            continue;
        }
        let from = floor_boundary(s.text, anchor.saturating_sub(120));
        let to = ceil_boundary(s.text, anchor.saturating_add(120));
        let Some(window) = s.text.get(from..to) else {
            continue;
        };
        let mut found = Vec::new();
        for m in compiled.spelled.find_iter(window) {
            let span = from + m.start()..from + m.end();
            let spelled = m
                .as_str()
                .bytes()
                .any(|b| matches!(b, b'(' | b'[' | b'{' | b'<'))
                || contains_word_ci(m.as_str(), "dot");
            if spelled && span.start <= anchor && anchor < span.end {
                found.push(span);
            }
        }
        for span in found {
            done_until = done_until.max(span.end);
            s.emit(span, EntityType::Email, 0.85, names::EMAIL_SPELLED);
        }
    }
}

fn contains_word_ci(hay: &str, word: &str) -> bool {
    hay.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case(word))
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while i < text.len() && !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

fn is_url_byte(b: u8) -> bool {
    b > b' '
        && b != 0x7F
        && !matches!(
            b,
            b'<' | b'>' | b'"' | b'`' | b'{' | b'}' | b'|' | b'\\' | b'^'
        )
}

fn urls(s: &mut Scan<'_>) {
    let anchors: Vec<(usize, usize, bool)> = s
        .hits
        .of(class::URL_SCHEME | class::WWW)
        .map(|h| (h.start, h.end, h.class & class::WWW != 0))
        .collect();
    let mut last_end = 0;
    for (start, anchor_end, www) in anchors {
        if start < last_end || word_before(s.text, start) {
            continue;
        }
        let mut end = anchor_end;
        while s.bytes.get(end).is_some_and(|&b| is_url_byte(b)) {
            end += 1;
        }
        let end = ceil_boundary(s.text, trim_url_end(s.bytes, start, end));
        let host_len = s
            .bytes
            .get(anchor_end..end)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
            .count();
        let host = s
            .bytes
            .get(anchor_end..anchor_end + host_len)
            .unwrap_or_default();
        let host_ok = if www {
            host.contains(&b'.') && host.iter().any(u8::is_ascii_alphabetic)
        } else {
            host_len >= 1 && (host.contains(&b'.') || host.eq_ignore_ascii_case(b"localhost"))
        };
        if !host_ok {
            continue;
        }
        s.emit(start..end, EntityType::Url, scores::URL, names::URL);
        last_end = end;
    }
}

/// Drops trailing punctuation that ends the sentence rather than the URL, and a closing
/// bracket that has no opening one inside the URL.
fn trim_url_end(bytes: &[u8], start: usize, mut end: usize) -> usize {
    loop {
        let Some(&last) = end.checked_sub(1).and_then(|i| bytes.get(i)) else {
            return end;
        };
        let url = bytes.get(start..end).unwrap_or_default();
        let unbalanced = |open: u8, close: u8| {
            last == close
                && url.iter().filter(|&&b| b == open).count()
                    < url.iter().filter(|&&b| b == close).count()
        };
        if matches!(last, b'.' | b',' | b';' | b':' | b'!' | b'?' | b'\'' | b'*')
            || unbalanced(b'(', b')')
            || unbalanced(b'[', b']')
        {
            end -= 1;
        } else {
            return end;
        }
    }
}

fn is_v6_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

fn ipv6(s: &mut Scan<'_>) {
    let bytes = s.bytes;
    let mut done_until = 0;
    for colon in memchr::memchr_iter(b':', bytes) {
        if colon < done_until {
            continue;
        }
        let mut start = colon;
        while start > 0 && bytes.get(start - 1).is_some_and(|&b| is_v6_byte(b)) {
            start -= 1;
        }
        let mut end = colon;
        while bytes.get(end).is_some_and(|&b| is_v6_byte(b)) {
            end += 1;
        }
        done_until = end;
        while end > start && bytes.get(end - 1) == Some(&b'.') {
            end -= 1;
        }
        if word_before(s.text, start) || word_after(s.text, end) {
            continue;
        }
        let Some(token) = s.text.get(start..end) else {
            continue;
        };
        if token.bytes().filter(|&b| b == b':').count() < 2 {
            continue;
        }
        let groups = token.split(':').filter(|g| !g.is_empty()).count();
        if groups < 3 || token.parse::<Ipv6Addr>().is_err() {
            continue;
        }
        let span: Range<usize> = start..end;
        s.emit(span, EntityType::IpAddress, scores::IP, names::IPV6);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use crate::detect::{EntityType, PatternConfig, PatternDetector};

    fn found(text: &str, e: EntityType) -> Vec<String> {
        let d = PatternDetector::new(&PatternConfig::default()).unwrap();
        d.detect(text)
            .into_iter()
            .filter(|f| f.entity == e && f.score >= 0.5)
            .map(|f| text[f.start..f.end].to_owned())
            .collect()
    }

    #[test]
    fn plain_emails() {
        assert_eq!(
            found("mail jane.doe+x@example.co.uk.", EntityType::Email),
            ["jane.doe+x@example.co.uk"]
        );
        assert!(
            found(
                "@app.route and pkg@1.2.3 and a@localhost",
                EntityType::Email
            )
            .is_empty()
        );
        assert!(found("git@github.com:org/repo.git", EntityType::Email).is_empty());
    }

    #[test]
    fn spelled_out() {
        assert_eq!(
            found(
                "write jane dot doe at example dot com today",
                EntityType::Email
            ),
            ["jane dot doe at example dot com"]
        );
        assert_eq!(
            found("jdoe [at] example [dot] org", EntityType::Email),
            ["jdoe [at] example [dot] org"]
        );
        assert!(found("look at the dot on the map", EntityType::Email).is_empty());
        assert!(found("available at www.example.com", EntityType::Email).is_empty());
    }

    #[test]
    fn urls_and_ipv6() {
        assert_eq!(
            found("see (https://example.com/a_(b)?q=1).", EntityType::Url),
            ["https://example.com/a_(b)?q=1"]
        );
        assert_eq!(
            found("go to www.example.org, now", EntityType::Url),
            ["www.example.org"]
        );
        assert_eq!(
            found("addr 2001:db8::8a2e:370:7334 up", EntityType::IpAddress),
            ["2001:db8::8a2e:370:7334"]
        );
        assert!(found("at 10:30:45 and std::vec::Vec", EntityType::IpAddress).is_empty());
    }
}
