//! One pass over the digits of the text: every run of digit groups (joined by short separator
//! clusters such as `-`, ` `, `.`, `/`, `_`, `) `) is cut into candidate sub-runs and classified
//! as card, SSN, date, phone, IPv4, ZIP, routing number, NPI, age, expiry or CVV.
//!
//! Invariants: the text is walked once; each run is classified by looking only at its groups
//! and a few bytes around it, plus keyword hits already found; groups claimed by a stronger
//! recognizer (checksum first) are not reused by a weaker one in the same run; candidates
//! always start and end on digit-group boundaries, so they never split a number.

use std::ops::Range;

use crate::detect::anchored::value_start;
use crate::detect::around::{prev_word, word_after, word_before};
use crate::detect::checksum::{self, CardBrand};
use crate::detect::dates::{self, DateContext};
use crate::detect::keywords::class;
use crate::detect::recognizer::{names, scores};
use crate::detect::{EntityType, Scan};

const MAX_GROUPS: usize = 16;
/// Longest digit string assembled for checks (19-digit PANs; longer runs are not values).
const MAX_DIGITS: usize = 24;

#[derive(Debug, Clone, Copy, Default)]
struct Group {
    start: usize,
    end: usize,
}

impl Group {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// One run of digit groups and what touches it.
struct Run<'t> {
    bytes: &'t [u8],
    groups: [Group; MAX_GROUPS],
    n: usize,
    /// A `+` right before the first group (or before its parenthesis).
    plus: bool,
    /// A `(` right before the first group.
    paren: bool,
    /// A letter or digit touches the run (before its `+`/`(` prefix) on the left.
    glued_left: bool,
    /// A letter or digit touches the last group on the right.
    glued_right: bool,
}

impl Run<'_> {
    fn g(&self, i: usize) -> Group {
        self.groups.get(i).copied().unwrap_or_default()
    }

    fn len(&self, i: usize) -> usize {
        self.g(i).len()
    }

    /// The separator bytes between group `i` and group `i + 1`.
    fn sep(&self, i: usize) -> &[u8] {
        let (a, b) = (self.g(i), self.g(i + 1));
        self.bytes.get(a.end..b.start).unwrap_or_default()
    }

    fn span(&self, i: usize, j: usize) -> Range<usize> {
        self.g(i).start..self.g(j).end
    }

    fn total(&self, i: usize, j: usize) -> usize {
        (i..=j).map(|k| self.len(k)).sum()
    }

    /// The digits of groups `i..=j`, or `None` past [`MAX_DIGITS`].
    fn digits(&self, i: usize, j: usize) -> Option<Digits> {
        let mut d = Digits {
            buf: [0; MAX_DIGITS],
            len: 0,
        };
        for k in i..=j {
            let g = self.g(k);
            for &b in self.bytes.get(g.start..g.end)? {
                *d.buf.get_mut(d.len)? = b;
                d.len += 1;
            }
        }
        Some(d)
    }

    fn value(&self, i: usize) -> u32 {
        let g = self.g(i);
        self.bytes
            .get(g.start..g.end)
            .unwrap_or_default()
            .iter()
            .take(9)
            .fold(0, |acc, b| acc * 10 + u32::from(b - b'0'))
    }

    /// Whether groups `i..=j` stand apart from the rest of the run: each neighbour is
    /// separated by whitespace while the sub-run's own separators are not whitespace, or the
    /// sub-run reaches the end of the run on that side (and nothing is glued there).
    fn clean(&self, i: usize, j: usize, internal_ws: bool) -> bool {
        let left = if i == 0 {
            !self.glued_left
        } else {
            !internal_ws && self.sep(i - 1).contains(&b' ')
        };
        left && self.clean_right(j, internal_ws)
    }

    /// Whether group `j` ends the run with nothing glued to it on the right (or, unless
    /// `internal_ws`, a space-separated group follows).
    fn clean_right(&self, j: usize, internal_ws: bool) -> bool {
        if j + 1 >= self.n {
            !self.glued_right
        } else {
            !internal_ws && self.sep(j).contains(&b' ')
        }
    }
}

struct Digits {
    buf: [u8; MAX_DIGITS],
    len: usize,
}

impl Digits {
    fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// What the pass remembers between runs.
#[derive(Default)]
struct State {
    /// End of the last card number found, for expiry and CVV next to it.
    last_card_end: Option<usize>,
}

/// Finds and classifies every digit run of `s.text`.
pub(crate) fn scan(s: &mut Scan<'_>) {
    let bytes = s.bytes;
    let starts = std::mem::take(&mut s.hits.digit_runs);
    let mut state = State::default();
    let mut done_until = 0;
    for start in starts {
        if start < done_until {
            continue;
        }
        let run = build_run(s.text, bytes, start);
        done_until = run.g(run.n.saturating_sub(1)).end.max(start + 1);
        classify(s, &run, &mut state);
    }
}

fn is_sep_punct(b: u8) -> bool {
    matches!(b, b'-' | b'.' | b'/' | b'_' | b'(' | b')')
}

fn build_run<'t>(text: &str, bytes: &'t [u8], start: usize) -> Run<'t> {
    let mut run = Run {
        bytes,
        groups: [Group::default(); MAX_GROUPS],
        n: 0,
        plus: false,
        paren: false,
        glued_left: false,
        glued_right: false,
    };
    let mut pos = start;
    loop {
        let gstart = pos;
        while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        if let Some(slot) = run.groups.get_mut(run.n) {
            *slot = Group {
                start: gstart,
                end: pos,
            };
            run.n += 1;
        }
        if run.n >= MAX_GROUPS {
            break;
        }
        // Separator cluster: optional space, optional one punctuation, optional space.
        let mut k = pos;
        if bytes.get(k) == Some(&b' ') {
            k += 1;
        }
        if bytes.get(k).copied().is_some_and(is_sep_punct) {
            k += 1;
        }
        if k > pos && bytes.get(k) == Some(&b' ') {
            k += 1;
        }
        if k == pos || !bytes.get(k).is_some_and(u8::is_ascii_digit) {
            break;
        }
        pos = k;
    }
    let mut left = start;
    if left > 0 && bytes.get(left - 1) == Some(&b'(') {
        run.paren = true;
        left -= 1;
    }
    if left > 0 && bytes.get(left - 1) == Some(&b'+') {
        run.plus = true;
        left -= 1;
    }
    run.glued_left = word_before(text, left);
    run.glued_right = word_after(text, run.g(run.n.saturating_sub(1)).end);
    run
}

fn classify(s: &mut Scan<'_>, run: &Run<'_>, state: &mut State) {
    let mut claimed: u32 = 0;
    cards(s, run, &mut claimed, state);
    card_extras(s, run, &mut claimed, state);
    ssn(s, run, &mut claimed);
    numeric_dates(s, run, &mut claimed);
    singles(s, run, &mut claimed);
    nanp(s, run, &mut claimed);
    international(s, run, &mut claimed);
    ipv4(s, run, &mut claimed);
    context_phone(s, run, &mut claimed);
}

fn mask(i: usize, j: usize) -> u32 {
    (i..=j).fold(0u32, |m, k| {
        m | 1u32
            .checked_shl(u32::try_from(k).unwrap_or(31))
            .unwrap_or(0)
    })
}

fn free(claimed: u32, i: usize, j: usize) -> bool {
    claimed & mask(i, j) == 0
}

fn starts_with_ci(bytes: &[u8], at: usize, pat: &[u8]) -> bool {
    bytes
        .get(at..at.saturating_add(pat.len()))
        .is_some_and(|w| w.eq_ignore_ascii_case(pat))
}

// ---------------------------------------------------------------------------------------
// Cards
// ---------------------------------------------------------------------------------------

/// Track 1 (`%B<PAN>^NAME^...?`) or track 2 (`;<PAN>=...?`) around a PAN at `pan`.
fn track_span(bytes: &[u8], pan: &Range<usize>) -> Option<Range<usize>> {
    let (start, close, limit) = if pan.start >= 2 && starts_with_ci(bytes, pan.start - 2, b"%B") {
        (pan.start - 2, b'^', 120)
    } else if pan.start >= 1 && bytes.get(pan.start - 1) == Some(&b';') {
        (pan.start - 1, b'=', 60)
    } else {
        return None;
    };
    if bytes.get(pan.end) != Some(&close) {
        return None;
    }
    let tail = bytes.get(pan.end..pan.end.saturating_add(limit).min(bytes.len()))?;
    let q = tail.iter().position(|&b| b == b'?' || b == b'\n')?;
    (tail.get(q) == Some(&b'?')).then(|| start..pan.end + q + 1)
}

fn cards(s: &mut Scan<'_>, run: &Run<'_>, claimed: &mut u32, state: &mut State) {
    // Long numbers that failed Luhn after a card word, kept for after the cards: a real card
    // later in the run wins over them (`2023 4111 1111 1111 1111`).
    let mut fallbacks: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < run.n {
        let g0 = run.g(i);
        let track_left = g0.start >= 2 && starts_with_ci(run.bytes, g0.start - 2, b"%B");
        if i == 0 && run.glued_left && !track_left {
            i += 1;
            continue;
        }
        // A card that does not start the run must stand apart from what precedes it
        // (`2023 4111 1111 1111 1111`), not continue it (`1_546_300_800_000_000`).
        if i > 0 && !run.sep(i - 1).contains(&b' ') {
            i += 1;
            continue;
        }
        let mut best: Option<(usize, CardBrand)> = None;
        // The longest 13–19-digit candidate that failed Luhn: an account number if a card word
        // labels it.
        let mut labelled: Option<usize> = None;
        let mut total = 0;
        for j in i..run.n {
            if j > i {
                let sep = run.sep(j - 1);
                if run.len(j) < 3 || run.len(i) < 3 || sep.iter().any(|b| matches!(b, b'(' | b')'))
                {
                    break;
                }
            }
            total += run.len(j);
            if total > 19 {
                break;
            }
            if total < 12 {
                continue;
            }
            let end = run.g(j).end;
            let right_ok = (j + 1 < run.n && run.sep(j).contains(&b' '))
                || (j + 1 == run.n && !run.glued_right)
                || matches!(run.bytes.get(end), Some(b'^' | b'='));
            if !right_ok {
                continue;
            }
            let Some(d) = run.digits(i, j) else { break };
            if checksum::luhn(d.as_slice())
                && let Some(brand) = checksum::card_brand(d.as_slice())
            {
                best = Some((j, brand));
            } else if total >= 13 {
                labelled = Some(j);
            }
        }
        let Some((j, brand)) = best else {
            fallbacks.extend(labelled.map(|j| (i, j)));
            i += 1;
            continue;
        };
        let span = run.span(i, j);
        let card_ctx = s.ctx(span.clone(), class::CARD);
        let len = run.total(i, j);
        let mut score = match brand {
            CardBrand::Major => scores::CARD,
            CardBrand::Minor => scores::CARD_MINOR,
        };
        if len == 12 && !card_ctx {
            i += 1;
            continue;
        }
        if card_ctx {
            score = score.max(1.0);
        } else if s.ctx(span.clone(), class::NOT_CARD) || in_number_table(run.bytes, &span) {
            score -= 0.5;
        }
        if let Some(track) = track_span(run.bytes, &span) {
            s.emit(track, EntityType::CreditCard, 1.0, names::CARD_TRACK);
        }
        s.emit(
            span.clone(),
            EntityType::CreditCard,
            score,
            names::CREDIT_CARD,
        );
        state.last_card_end = Some(span.end);
        *claimed |= mask(i, j);
        i = j + 1;
    }
    for (i, j) in fallbacks {
        let span = run.span(i, j);
        if *claimed & mask(i, j) == 0 && s.ctx(span.clone(), class::CARD) {
            s.emit(
                span,
                EntityType::Account,
                scores::CARD_LABELLED_ACCOUNT,
                names::CARD_LABELLED_ACCOUNT,
            );
            *claimed |= mask(i, j);
        }
    }
}

/// Whether a long number sits in a list of other long numbers (`(4951…, 2037…)`): test
/// vectors and data tables, where one in ten values passes Luhn by chance.
fn in_number_table(bytes: &[u8], span: &Range<usize>) -> bool {
    let long_digits = |it: &mut dyn Iterator<Item = &u8>| {
        let mut gap = 0;
        let mut digits = 0;
        for &b in it {
            if b.is_ascii_digit() {
                digits += 1;
            } else if digits == 0
                && gap < 24
                && matches!(
                    b,
                    b',' | b' ' | b'(' | b')' | b'[' | b']' | b';' | b'\t' | b'\n' | b'\r'
                )
            {
                gap += 1;
            } else {
                break;
            }
        }
        digits >= 10
    };
    let before = bytes.get(..span.start).unwrap_or_default();
    let after = bytes.get(span.end..).unwrap_or_default();
    // The digits before are read backwards, which does not change their count.
    long_digits(&mut before.iter().rev()) || long_digits(&mut after.iter())
}

/// Expiry (`12/27`, `12/2027`) and CVV after a card number or their keywords.
fn card_extras(s: &mut Scan<'_>, run: &Run<'_>, claimed: &mut u32, state: &State) {
    let start = run.g(0).start;
    let near_card = state
        .last_card_end
        .is_some_and(|e| start >= e && start - e <= 60);
    let kw_before = |mask: u64| {
        s.hits
            .last_before(start.saturating_sub(16), start, mask)
            .is_some()
    };
    if run.n == 2 && free(*claimed, 0, 1) && run.clean(0, 1, false) {
        let sep = run.sep(0);
        let month = run.value(0);
        let year_len = run.len(1);
        if (sep == b"/" || sep == b"-")
            && run.len(0) <= 2
            && (1..=12).contains(&month)
            && (year_len == 2 || year_len == 4)
            && (near_card || kw_before(class::EXPIRY))
        {
            s.emit(
                run.span(0, 1),
                EntityType::CreditCard,
                0.9,
                names::CARD_EXPIRY,
            );
            *claimed |= mask(0, 1);
            return;
        }
    }
    if run.n == 1 && free(*claimed, 0, 0) && (3..=4).contains(&run.len(0)) && !run.glued_left {
        let card_near = near_card || s.ctx(run.span(0, 0), class::CARD);
        if kw_before(class::CVV) && card_near {
            s.emit(run.span(0, 0), EntityType::CreditCard, 0.9, names::CARD_CVV);
            *claimed |= 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// SSN
// ---------------------------------------------------------------------------------------

fn ssn(s: &mut Scan<'_>, run: &Run<'_>, claimed: &mut u32) {
    if run.n < 3 {
        return;
    }
    for i in 0..run.n - 2 {
        if !free(*claimed, i, i + 2)
            || run.len(i) != 3
            || run.len(i + 1) != 2
            || run.len(i + 2) != 4
        {
            continue;
        }
        let (a, b) = (run.sep(i), run.sep(i + 1));
        if a != b || !matches!(a, b"-" | b" " | b".") {
            continue;
        }
        if !run.clean(i, i + 2, a == b" ") || (i == 0 && run.plus) {
            continue;
        }
        let Some(d) = run.digits(i, i + 2) else {
            continue;
        };
        // The SSA rules raise confidence; they do not veto the shape (see `scores`).
        let issued = checksum::ssn_valid(d.as_slice());
        let span = run.span(i, i + 2);
        let mut score = match (a == b"-", issued) {
            (true, true) => scores::SSN_DASHED,
            (true, false) => scores::SSN_DASHED_UNISSUED,
            (false, true) => scores::SSN_LOOSE,
            (false, false) => scores::SSN_LOOSE_UNISSUED,
        };
        if s.ctx(span.clone(), class::SSN) {
            score = score.max(0.95);
        }
        s.emit(span, EntityType::Ssn, score, names::SSN);
        *claimed |= mask(i, i + 2);
    }
}

// ---------------------------------------------------------------------------------------
// Numeric dates
// ---------------------------------------------------------------------------------------

fn numeric_dates(s: &mut Scan<'_>, run: &Run<'_>, claimed: &mut u32) {
    // Three groups: m/d/y, d.m.y, y-m-d.
    if run.n >= 3 {
        for i in 0..run.n - 2 {
            let j = i + 2;
            if !free(*claimed, i, j) {
                continue;
            }
            let (a, b) = (run.sep(i), run.sep(i + 1));
            // A slashed date may touch a word on its left ("drawn on03/11/79", a space lost in
            // fast typing): the calendar check below keeps that safe.
            let glued_word = i == 0 && a == b"/" && run.glued_left && run.clean_right(j, false);
            if a != b || !matches!(a, b"/" | b"-" | b".") || !(run.clean(i, j, false) || glued_word)
            {
                continue;
            }
            let (l0, l1, l2) = (run.len(i), run.len(i + 1), run.len(j));
            let (v0, v1, v2) = (run.value(i), run.value(i + 1), run.value(j));
            let sep = a.first().copied().unwrap_or(b'/');
            let iso = l0 == 4 && (1..=2).contains(&l1) && (1..=2).contains(&l2);
            let dmy = (1..=2).contains(&l0) && (1..=2).contains(&l1) && (l2 == 4 || l2 == 2);
            let valid = if iso {
                dates::year4_ok(v0) && dates::month_day_ok(v1, v2)
            } else if dmy {
                (l2 == 2 || dates::year4_ok(v2))
                    && (dates::month_day_ok(v0, v1) || dates::month_day_ok(v1, v0))
            } else {
                false
            };
            if !valid {
                continue;
            }
            let mut span = run.span(i, j);
            let two_digit_year = dmy && l2 == 2;
            if two_digit_year && sep == b'.' {
                continue; // `1.2.34` is a version number far more often than a date
            }
            let mut score = if two_digit_year {
                scores::DATE_SHORT_YEAR
            } else {
                scores::DATE_FULL
            };
            if two_digit_year
                && dates::short_date_context(s.text, span.clone(), false) == DateContext::Negative
            {
                continue;
            }
            let (end, logish) = dates::extend_time(s.text, span.clone());
            span.end = end;
            if logish {
                score = scores::DATE_LOG;
            }
            let mut last = j;
            while last + 1 < run.n && run.g(last + 1).start < span.end {
                last += 1;
            }
            if s.ctx(span.clone(), class::DOB) {
                score = score.max(0.95);
            }
            s.emit(span, EntityType::Date, score, names::DATE_NUMERIC);
            *claimed |= mask(i, last);
        }
    }
    // Two groups with a slash: m/d, m/yy, m/yyyy.
    if run.n >= 2 {
        for i in 0..run.n - 1 {
            let j = i + 1;
            if !free(*claimed, i, j) || run.sep(i) != b"/" || !run.clean(i, j, false) {
                continue;
            }
            let (l0, l1) = (run.len(i), run.len(j));
            let (m, v) = (run.value(i), run.value(j));
            if l0 > 2 || !(1..=12).contains(&m) || l0 == 0 {
                continue;
            }
            let span = run.span(i, j);
            if run.bytes.get(span.end) == Some(&b'%') {
                continue;
            }
            let mut ctx = dates::short_date_context(s.text, span.clone(), true);
            // `5/5`, `10/10` are strengths and vent settings; `1/2`, `3/4` fractions; `4/10`
            // pain scores: dates only when a date word says so, and never when equal.
            let looks_like_ratio =
                (l1 <= 2 && m < v && matches!(v, 2 | 3 | 4 | 8 | 10)) || (l1 <= 2 && v == 10);
            if (m == v && l1 <= 2) || (looks_like_ratio && ctx != DateContext::Positive) {
                ctx = DateContext::Negative;
            }
            if ctx == DateContext::Negative {
                continue;
            }
            let score = if l1 == 4 && dates::year4_ok(v) {
                scores::DATE_SHORT_YEAR
            } else if (l1 <= 2 && dates::month_day_ok(m, v)) || (l1 == 2 && v > 31) {
                match ctx {
                    DateContext::Positive => 0.8,
                    _ if s.ctx_before(span.start, class::DOB) => 0.8,
                    _ => scores::DATE_NO_YEAR,
                }
            } else {
                continue;
            };
            s.emit(span, EntityType::Date, score, names::DATE_SHORT);
            *claimed |= mask(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Phones
// ---------------------------------------------------------------------------------------

/// `x123`, ` ext 123`, ` ext. 123` right after a phone number.
fn extension_end(bytes: &[u8], end: usize) -> Option<usize> {
    let mut k = end;
    if bytes.get(k) == Some(&b' ') {
        k += 1;
    }
    if starts_with_ci(bytes, k, b"ext.") {
        k += 4;
    } else if starts_with_ci(bytes, k, b"ext") {
        k += 3;
    } else if matches!(bytes.get(k), Some(b'x' | b'X')) {
        k += 1;
    } else {
        return None;
    }
    if bytes.get(k) == Some(&b' ') {
        k += 1;
    }
    let digits = bytes
        .get(k..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let after = bytes.get(k + digits).copied();
    ((1..=6).contains(&digits) && !after.is_some_and(|b| b.is_ascii_alphanumeric()))
        .then_some(k + digits)
}

/// Right edge of a phone ending at group `j`: free of glue (an extension is fine).
fn phone_right(run: &Run<'_>, j: usize) -> Option<usize> {
    let end = run.g(j).end;
    if j + 1 < run.n {
        let sep = run.sep(j);
        return (sep.contains(&b' ') || sep == b"-").then_some(end);
    }
    if !run.glued_right {
        return Some(extension_end(run.bytes, end).unwrap_or(end));
    }
    extension_end(run.bytes, end)
}

fn phone_score(s: &Scan<'_>, span: &Range<usize>, base: f32, with_ctx: f32) -> f32 {
    if s.ctx(span.clone(), class::PHONE) {
        base.max(with_ctx)
    } else {
        base
    }
}

fn nanp(s: &mut Scan<'_>, run: &Run<'_>, claimed: &mut u32) {
    // Formatted: [1 sep] (area) sep exchange sep line.
    if run.n >= 3 {
        for a in 0..run.n - 2 {
            let (e, l) = (a + 1, a + 2);
            if !free(*claimed, a, l) || run.len(a) != 3 || run.len(e) != 3 || run.len(l) != 4 {
                continue;
            }
            let (Some(area), Some(exch)) = (run.digits(a, a), run.digits(e, e)) else {
                continue;
            };
            // The NANP rules raise confidence; a number typed outside them is still a number.
            let issued = checksum::nanp_area_valid(area.as_slice())
                && checksum::nanp_exchange_valid(exch.as_slice());
            let s1 = run.sep(a);
            let s2 = run.sep(e);
            // `617/555-0142` and `617/555/0142` are numbers too: three-three-four groups are no
            // date.
            let slashed = s1 == b"/" && matches!(s2, b"-" | b"/");
            // Spaces around the separator are how people type too: `617 555  0142`,
            // `617 - 555 - 0142`.
            let s2_core: Vec<u8> = s2.iter().copied().filter(|b| *b != b' ').collect();
            let plain = matches!(s2_core.as_slice(), b"-" | b"." | b"")
                && !s1.iter().any(|b| matches!(b, b'/' | b'_' | b'('));
            if !(plain || slashed) {
                continue;
            }
            let opened = if a == 0 {
                run.paren
            } else {
                run.sep(a - 1).ends_with(b"(")
            };
            if s1.contains(&b')') != opened {
                continue;
            }
            // Optional country code 1 before the area code.
            let mut first = a;
            let mut score = if issued {
                scores::PHONE_NANP
            } else {
                scores::PHONE_NANP_UNASSIGNED
            };
            if a >= 1
                && run.len(a - 1) == 1
                && run.value(a - 1) == 1
                && free(*claimed, a - 1, a - 1)
            {
                first = a - 1;
                score = 0.85;
            } else if a >= 1 && run.len(a - 1) == 3 && run.value(a - 1) == 1 {
                first = a - 1; // `001-518-...`: international access code
                score = 0.85;
            }
            // `21 284 698 2548`: a short leading group belongs to the same number.
            if first == 1
                && a == 1
                && run.sep(0) == b" "
                && run.len(0) <= 3
                && !run.glued_left
                && !run.plus
                && free(*claimed, 0, 0)
            {
                first = 0;
            }
            let left_ok = if first == 0 {
                !run.glued_left
            } else {
                let sep = run.sep(first - 1);
                sep.contains(&b' ') || sep == b"("
            };
            let Some(end) = phone_right(run, l) else {
                continue;
            };
            if !left_ok {
                continue;
            }
            if first == 0 && run.plus {
                score = score.max(0.85);
            }
            let mut span = run.g(first).start..end;
            if first == 0 && run.plus {
                span.start = span.start.saturating_sub(1 + usize::from(run.paren));
            } else if opened && first == a && a == 0 {
                span.start = span.start.saturating_sub(1);
            }
            // Groups joined by spaces alone that NANP never assigns read as measurements or
            // lists ("100 200 4000 units") unless a phone word says otherwise.
            let spaced = [s1, s2].iter().all(|sep| sep.iter().all(|b| *b == b' '));
            if !issued && spaced && !s.ctx(span.clone(), class::PHONE) {
                continue;
            }
            let score = phone_score(s, &span, score, 0.95);
            s.emit(span, EntityType::Phone, score, names::PHONE_NANP);
            *claimed |= mask(first, l);
        }
    }
    // Bare ten digits (or eleven starting with 1).
    if run.n == 1 && free(*claimed, 0, 0) && !run.glued_left {
        let len = run.len(0);
        let Some(d) = run.digits(0, 0) else { return };
        let d = d.as_slice();
        let body = match (len, d.first()) {
            (10, _) => d,
            (11, Some(b'1')) => d.get(1..).unwrap_or_default(),
            _ => return,
        };
        let (Some(area), Some(exch)) = (body.get(0..3), body.get(3..6)) else {
            return;
        };
        if !checksum::nanp_area_valid(area) || !checksum::nanp_exchange_valid(exch) {
            return;
        }
        let Some(end) = phone_right(run, 0) else {
            return;
        };
        let span = run.g(0).start.saturating_sub(usize::from(run.plus))..end;
        let base = if run.plus {
            scores::PHONE_E164
        } else {
            scores::PHONE_BARE
        };
        let score = phone_score(s, &span, base, scores::WITH_CONTEXT);
        s.emit(span, EntityType::Phone, score, names::PHONE_NANP);
        *claimed |= 1;
    }
}

/// `+` numbers (E.164 with any grouping, a `(0)` trunk allowed) and trunk-prefixed national
/// numbers (`0490 75 40 81`, `03.93.92.16.85`).
fn international(s: &mut Scan<'_>, run: &Run<'_>, claimed: &mut u32) {
    if run.glued_left || !free(*claimed, 0, 0) {
        return;
    }
    if run.plus {
        if run.n >= 3
            && run.len(0) >= 4
            && run.sep(0) == b"-"
            && run.sep(1) == b"-"
            && run.len(1) == 2
            && run.len(2) == 2
        {
            return; // `+9999-12-31`: an extended-year date
        }
        let mut best = None;
        let mut digits = 0;
        for j in 0..run.n {
            if !free(*claimed, j, j) {
                break;
            }
            if j > 0 && run.sep(j - 1).iter().any(|b| matches!(b, b'/' | b'_')) {
                break;
            }
            let trunk =
                j > 0 && run.len(j) == 1 && run.value(j) == 0 && run.sep(j - 1).ends_with(b"(");
            if !trunk {
                digits += run.len(j);
            }
            if digits > 15 {
                break;
            }
            if digits >= 8
                && let Some(end) = phone_right(run, j)
            {
                best = Some((j, end));
            }
        }
        if let Some((j, end)) = best {
            let span = run.g(0).start - 1 - usize::from(run.paren)..end;
            let score = phone_score(s, &span, scores::PHONE_E164, 0.95);
            s.emit(span, EntityType::Phone, score, names::PHONE_INTL);
            *claimed |= mask(0, j);
        }
        return;
    }
    // National format with a trunk 0 and one kind of separator throughout.
    if run.n < 2 || run.bytes.get(run.g(0).start).is_none_or(|&b| b != b'0') || run.len(0) < 2 {
        return;
    }
    let first_sep = if run.paren { 1 } else { 0 };
    let Some(sep) = (first_sep < run.n - 1).then(|| run.sep(first_sep)) else {
        return;
    };
    if !matches!(sep, b" " | b"-" | b".") {
        return;
    }
    if run.paren && !matches!(run.sep(0), b")" | b") ") {
        return;
    }
    let j = run.n - 1;
    if (first_sep..j).any(|k| run.sep(k) != sep) || !free(*claimed, 0, j) {
        return;
    }
    let total = run.total(0, j);
    if !(9..=12).contains(&total) || (1..=j).any(|k| run.len(k) < 2) {
        return;
    }
    if run.n == 3 && run.len(0) == 3 && run.len(1) == 2 && run.len(2) == 4 {
        return; // SSN-shaped; the SSN rules already had their say
    }
    let Some(end) = phone_right(run, j) else {
        return;
    };
    let span = run.g(0).start - usize::from(run.paren)..end;
    let score = phone_score(s, &span, scores::PHONE_NATIONAL, scores::WITH_CONTEXT);
    s.emit(span, EntityType::Phone, score, names::PHONE_INTL);
    *claimed |= mask(0, j);
}

/// Any other grouping of 7–13 digits, but only with a phone word next to it.
fn context_phone(s: &mut Scan<'_>, run: &Run<'_>, claimed: &mut u32) {
    if run.glued_left || *claimed != 0 {
        return;
    }
    let j = run.n - 1;
    let total = run.total(0, j);
    if !(7..=13).contains(&total) {
        return;
    }
    let hhmm = |k: usize| run.len(k) == 4 && run.value(k) / 100 <= 24 && run.value(k) % 100 <= 59;
    if run.n == 2 && hhmm(0) && hhmm(1) {
        return; // `1900-0700`: a shift, not a number
    }
    for k in 0..j {
        let sep = run.sep(k);
        if sep.iter().any(|b| matches!(b, b'/' | b'_')) || sep == b"." && run.n == 2 {
            return;
        }
    }
    if run.n > 1 && (0..=j).any(|k| run.len(k) < 2) {
        return;
    }
    let Some(end) = phone_right(run, j) else {
        return;
    };
    let span = run.g(0).start - usize::from(run.paren)..end;
    let near = {
        let from = crate::detect::around::back_chars(s.text, span.start, 24, s.ascii);
        let to = crate::detect::around::fwd_chars(s.text, span.end, 12, s.ascii);
        s.hits.any_in(from, span.start, class::PHONE) || s.hits.any_in(span.end, to, class::PHONE)
    };
    if near {
        s.emit(span, EntityType::Phone, 0.75, names::PHONE_CONTEXT);
        *claimed |= mask(0, j);
    }
}

// ---------------------------------------------------------------------------------------
// IPv4
// ---------------------------------------------------------------------------------------

fn ipv4(s: &mut Scan<'_>, run: &Run<'_>, claimed: &mut u32) {
    if run.n < 4 {
        return;
    }
    for i in 0..=run.n - 4 {
        let j = i + 3;
        if !free(*claimed, i, j) || (i..j).any(|k| run.sep(k) != b".") {
            continue;
        }
        if !run.clean(i, j, false)
            || (i == 0 && run.bytes.get(run.g(0).start.wrapping_sub(1)) == Some(&b'.'))
        {
            continue;
        }
        if run.bytes.get(run.g(j).end) == Some(&b'.')
            && run
                .bytes
                .get(run.g(j).end + 1)
                .is_some_and(u8::is_ascii_digit)
        {
            continue;
        }
        let ok = (i..=j).all(|k| {
            let l = run.len(k);
            let leading_zero = l > 1 && run.bytes.get(run.g(k).start) == Some(&b'0');
            (1..=3).contains(&l) && run.value(k) <= 255 && !leading_zero
        });
        if !ok {
            continue;
        }
        let span = run.span(i, j);
        let mut score = scores::IP;
        let (a, b, c, d) = (
            run.value(i),
            run.value(i + 1),
            run.value(i + 2),
            run.value(j),
        );
        // Loopback, "any" and broadcast addresses identify no one.
        let section =
            span.start >= 2 && run.bytes.get(span.start - 2..span.start) == Some("§".as_bytes());
        let unspecific = section
            || a == 127
            || (a == 0 && b == 0 && c == 0 && d == 0)
            || (a == 255 && b == 255 && c == 255 && d == 255);
        if unspecific || (i..=j).all(|k| run.len(k) == 1) || s.ctx(span.clone(), class::VERSION) {
            score = 0.3;
        } else if s.ctx(span.clone(), class::IP) {
            score = 0.95;
        }
        s.emit(span, EntityType::IpAddress, score, names::IPV4);
        *claimed |= mask(i, j);
    }
}

// ---------------------------------------------------------------------------------------
// Single numbers: age, ZIP, routing, NPI, bare SSN, pager numbers
// ---------------------------------------------------------------------------------------

const STATES: &[&[u8; 2]] = &[
    b"AL", b"AK", b"AZ", b"AR", b"CA", b"CO", b"CT", b"DE", b"DC", b"FL", b"GA", b"HI", b"ID",
    b"IL", b"IN", b"IA", b"KS", b"KY", b"LA", b"ME", b"MD", b"MA", b"MI", b"MN", b"MS", b"MO",
    b"MT", b"NE", b"NV", b"NH", b"NJ", b"NM", b"NY", b"NC", b"ND", b"OH", b"OK", b"OR", b"PA",
    b"RI", b"SC", b"SD", b"TN", b"TX", b"UT", b"VT", b"VA", b"WA", b"WV", b"WI", b"WY", b"PR",
    b"VI", b"GU", b"AS", b"MP", b"AA", b"AE", b"AP",
];

fn after_state(s: &Scan<'_>, start: usize) -> bool {
    let Some((ws, we)) = prev_word(s.text, start, 3) else {
        return false;
    };
    let gap = s.bytes.get(we..start).unwrap_or_default();
    if !gap.iter().all(|b| matches!(b, b' ' | b',' | b'.')) {
        return false;
    }
    s.bytes
        .get(ws..we)
        .is_some_and(|w| w.len() == 2 && STATES.iter().any(|st| st.as_slice() == w))
}

fn is_age_suffix(bytes: &[u8], end: usize) -> bool {
    let mut k = end;
    if matches!(bytes.get(k), Some(b' ' | b'-')) {
        k += 1;
    }
    for suffix in [
        &b"y/o"[..],
        b"y.o.",
        b"y.o",
        b"yo",
        b"yr old",
        b"yr-old",
        b"yrs old",
        b"yrs",
        b"yr",
        b"year old",
        b"year-old",
        b"years old",
        b"years of age",
        b"years",
        b"yoa",
    ] {
        if starts_with_ci(bytes, k, suffix)
            && !bytes
                .get(k + suffix.len())
                .is_some_and(|b| b.is_ascii_alphabetic())
        {
            return true;
        }
    }
    false
}

fn singles(s: &mut Scan<'_>, run: &Run<'_>, claimed: &mut u32) {
    let g = run.g(0);
    let lonely = run.n == 1 && free(*claimed, 0, 0) && !run.glued_left;
    let len = g.len();
    // Age over 89.
    if lonely && (2..=3).contains(&len) {
        let v = run.value(0);
        if (90..=125).contains(&v) {
            let suffix = is_age_suffix(run.bytes, g.end);
            let prefix = !run.glued_right
                && s.hits
                    .last_before(g.start.saturating_sub(8), g.start, class::AGE)
                    .is_some_and(|h| {
                        s.bytes.get(h.end..g.start).is_some_and(|gap| {
                            gap.iter().all(|b| matches!(b, b' ' | b':' | b'=' | b'-'))
                        })
                    });
            if suffix || prefix {
                s.emit(g.start..g.end, EntityType::Age, scores::AGE, names::AGE);
                *claimed |= 1;
                return;
            }
        }
    }
    // ZIP and ZIP+4.
    let zip4 = run.n == 2 && run.len(0) == 5 && run.len(1) == 4 && run.sep(0) == b"-";
    if (lonely && len == 5 && !run.glued_right && !run.paren)
        || (zip4 && free(*claimed, 0, 1) && run.clean(0, 1, false))
    {
        let span = if zip4 { run.span(0, 1) } else { g.start..g.end };
        if after_state(s, span.start) || s.ctx_before(span.start, class::ZIP) {
            s.emit(span, EntityType::Zip, scores::ANCHORED, names::ZIP);
            *claimed |= mask(0, run.n - 1);
            return;
        }
    }
    if !lonely || run.glued_right {
        return;
    }
    let span = g.start..g.end;
    let Some(d) = run.digits(0, 0) else { return };
    let d = d.as_slice();
    if len == 9 {
        // Labelled: an SSN whether or not the SSA would issue it.
        if s.ctx(span.clone(), class::SSN) {
            s.emit(
                span.clone(),
                EntityType::Ssn,
                scores::ANCHORED,
                names::SSN_CONTEXT,
            );
            *claimed |= 1;
        }
        if s.ctx(span.clone(), class::ROUTING) && checksum::aba_valid(d) {
            s.emit(
                span.clone(),
                EntityType::RoutingNumber,
                scores::ANCHORED,
                names::ROUTING,
            );
            *claimed |= 1;
        }
    }
    if len == 10 && s.ctx(span.clone(), class::NPI) && checksum::npi_valid(d) {
        s.emit(span.clone(), EntityType::Npi, scores::ANCHORED, names::NPI);
    }
    // Pager / beeper numbers: `Pager #54321`, `beeper number 55037`.
    if (4..=7).contains(&len) {
        let pager = s
            .hits
            .last_before(span.start.saturating_sub(24), span.start, class::PAGER)
            .is_some_and(|h| value_start(s.bytes, h.end) == Some(span.start));
        if pager {
            s.emit(span, EntityType::Phone, 0.75, names::PHONE_CONTEXT);
            *claimed |= 1;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use crate::detect::{EntityType, PatternConfig, PatternDetector};

    fn found(text: &str) -> Vec<(EntityType, String, f32)> {
        let d = PatternDetector::new(&PatternConfig::default()).unwrap();
        d.detect(text)
            .into_iter()
            .map(|f| (f.entity, text[f.start..f.end].to_owned(), f.score))
            .collect()
    }

    fn has(text: &str, e: EntityType, value: &str) -> bool {
        found(text)
            .iter()
            .any(|(fe, v, s)| *fe == e && v == value && *s >= 0.5)
    }

    #[test]
    fn cards_with_separators_and_year_before() {
        assert!(has(
            "pay 4111 1111 1111 1111 now",
            EntityType::CreditCard,
            "4111 1111 1111 1111"
        ));
        assert!(has(
            "2023 4111 1111 1111 1111",
            EntityType::CreditCard,
            "4111 1111 1111 1111"
        ));
        assert!(has(
            "5555-5555.5555/4444",
            EntityType::CreditCard,
            "5555-5555.5555/4444"
        ));
        assert!(has(
            "3782 822463 10005",
            EntityType::CreditCard,
            "3782 822463 10005"
        ));
        assert!(!has(
            "4111 1111 1111 1112",
            EntityType::CreditCard,
            "4111 1111 1111 1112"
        ));
        assert!(!has(
            "id x4111111111111111",
            EntityType::CreditCard,
            "4111111111111111"
        ));
    }

    #[test]
    fn track_data() {
        let t = "%B4111111111111111^DOE/JANE^2512101000000000000?";
        assert!(has(t, EntityType::CreditCard, t));
        let t2 = ";4111111111111111=25121010000000000?";
        assert!(has(t2, EntityType::CreditCard, t2));
    }

    #[test]
    fn ssn_forms() {
        assert!(has("ssn 123-45-6789", EntityType::Ssn, "123-45-6789"));
        assert!(has("123 45 6789", EntityType::Ssn, "123 45 6789"));
        assert!(has("SSN: 123456789", EntityType::Ssn, "123456789"));
        assert!(!has("order 123456789", EntityType::Ssn, "123456789"));
        assert!(has("my social is 536228745", EntityType::Ssn, "536228745"));
    }

    /// The SSA rules raise confidence; they do not veto an SSN shape.
    #[test]
    fn unissued_ssns_are_still_ssns() {
        let score = |text: &str, value: &str| {
            found(text)
                .into_iter()
                .find(|(e, v, _)| *e == EntityType::Ssn && v == value)
                .map(|(_, _, s)| s)
        };
        // Area 000 and 9xx are never issued; still SSNs, lower unless labelled.
        assert_eq!(score("id 000-12-3456 on file", "000-12-3456"), Some(0.6));
        assert_eq!(score("SSN: 912-45-6789", "912-45-6789"), Some(0.95));
        assert_eq!(score("SSN 666456789", "666456789"), Some(0.85));
        assert_eq!(score("ref 900 12 3456", "900 12 3456"), Some(0.45));
        // Issued ones keep their scores.
        assert_eq!(score("id 536-22-8745 on file", "536-22-8745"), Some(0.85));
        assert_eq!(score("id 536 22 8745 on file", "536 22 8745"), Some(0.6));
    }

    #[test]
    fn phones() {
        assert!(has(
            "call (212) 555-0187 today",
            EntityType::Phone,
            "(212) 555-0187"
        ));
        assert!(has("+1 212 555 0187", EntityType::Phone, "+1 212 555 0187"));
        assert!(has("212.555.0187", EntityType::Phone, "212.555.0187"));
        assert!(has(
            "+44 20 7946 0958",
            EntityType::Phone,
            "+44 20 7946 0958"
        ));
        assert!(has(
            "Fax: 345-899-3560x4587",
            EntityType::Phone,
            "345-899-3560x4587"
        ));
    }

    #[test]
    fn ages_and_zips() {
        assert!(has("a 92 y/o woman", EntityType::Age, "92"));
        assert!(has("aged 95", EntityType::Age, "95"));
        assert!(has("95-year-old", EntityType::Age, "95"));
        assert!(!has("a 45 y/o woman", EntityType::Age, "45"));
        assert!(has("Boston, MA 02139", EntityType::Zip, "02139"));
        assert!(!has("gave 02139 units", EntityType::Zip, "02139"));
    }
}
