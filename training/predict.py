#!/usr/bin/env python3
"""Reference inference for the veil token classifier; mirrors what the Rust side does.

usage: predict.py --model ../models/classifier --input GOLD_OR_TEXT.jsonl --out PRED.jsonl
                  [--threads 2] [--batch 16] [--threshold LABEL=0.5 ...]

Input lines need "id" and "text". Output lines: {"id", "spans": [{"start","end","label","score"}]}
with offsets in Unicode code points (Python string indices), the `veil scan` JSONL shape.

Decoding (see models/README.md, "Decoding rules"):
 1. Tokenize the whole text once, without special tokens (offsets per word-piece, word index per
    word-piece from the BERT pre-tokenizer: whitespace splits words, every punctuation char is its own word).
 2. Windows: W = max_seq_len - 2 word-pieces; if the text has <= W pieces, one window. Otherwise windows
    start at 0, stride, 2*stride, ... and the last window is aligned to end exactly at the last piece
    (start = n - W). Each window is [CLS] + pieces + [SEP], attention_mask 1, padded with 0 in a batch.
 3. softmax over the labels for each piece. A piece's probabilities come from the window in which it is
    most central: maximise min(i - start, start + len - 1 - i); ties go to the earlier window.
 4. Word probabilities = mean of its pieces' probability vectors. For each entity type X,
    s(X) = p(B-X) + p(I-X). The word's type is X* = argmax s(X); the word is an entity word if
    s(X*) >= threshold[X*], otherwise it is outside. The thresholds are the manifest's [thresholds], or its
    [caseless_thresholds] (types missing there: [thresholds]) when the text does not capitalise words
    (capitalises_words: all-caps and all-lower-case notes, where the model has no case to go by).
 4a. Before step 4: (i) words inside a dotted abbreviation (DOTTED_ABBR: y.o., a.m., p.m., i.v., p.o., b.i.d., ...)
    and words for a person (NOT_NAMES: female, woman, daughter, husband, ...) get
    s(PERSON) = p(B-PERSON) = p(I-PERSON) = 0 before step 4: they are never names.
    (ii) then a word right after a title (TITLES: Dr, Mr, Mrs, Ms, Miss, Prof, ...;
    optional ".", then spaces or tabs) whose s(PERSON) >= TITLE_MIN (0.1) gets p(B-PERSON) = 1,
    p(I-PERSON) = 0: a title is strong evidence, so a weak name score after it suffices.
    (iii) likewise a word right after a relation (RELATIONS: son, dtr, wife, ...; one to three
    spaces, tabs, commas, hyphens or colons between) whose s(PERSON) >= RELATION_MIN (0.1) and which
    is not in COMMON_WORDS.
 4b. Hysteresis: a word that is not an entity word but whose type X* equals that of an adjacent entity
    word, with s(X*) >= extend[X*] (manifest [extend], default: the threshold itself) and no line break
    between the two, becomes an entity word; applied left to right, then right to left.
 5. Spans: walk the words in order. An entity word of type X continues the open span if the open
    span has type X, the previous word was part of it (no outside word between) and p(I-X) >= p(B-X);
    otherwise it closes any open span and opens a new one (so I- without B- simply starts a span).
    An outside word closes the open span. Span start = start offset of its first piece, end = end
    offset of its last piece; score = mean of s(X) over its words.
 6. Span rules (postprocess): a span with no letter or digit is dropped; a LOCATION or ORGANIZATION
    span is dropped if every word is generic (GENERIC_PLACE), else cut to its named part (articles,
    prepositions and possessives at either end removed: EDGE_WORDS); a DATE span followed by an ordinal day
    ("the" + " 3rd") takes it in (with_ordinal_day); a DATE span with no letter
    is widened to its whitespace-delimited chunk (minus leading ([{" and trailing .,;:!?)]}") and
    kept only if that chunk is a numeric date (NUMERIC_DATE: m/d, m-d-yy, m/d/yy, m/d/yyyy, m/yyyy,
    m/yy with yy > 31, 'yy, 19xx/20xx, yyyy-mm-dd), without a leading apostrophe; otherwise it is dropped.
    Then a PERSON, LOCATION or ORGANIZATION span is dropped if its words are all drug names (drug
    lexicon), or all plain words (word lexicon: English words written only in lower case) or generic
    where case cannot help (the text does not capitalise words, or the span does not mix cases), unless it
    holds a FACILITY_HEADS word or follows a title or relation (only_plain_words); in text that
    capitalises words, weak lower-case spans (weak_lower_case_span) and PERSON spans of two or three
    capitals after no title or relation (acronym_as_name) are dropped. Last, a PERSON or
    LOCATION span of a single letter or digit is dropped unless tied to a longer span of its type,
    directly or through other single letters, with at most three spaces/dots/commas/hyphens between
    (drop_lone_initials).
 7. Propagation: the text of a multi-word PERSON span, and each of its words of 4+ letters, is a PERSON
    wherever else it occurs in the text (case-insensitive, word boundaries, not overlapping a PERSON span).
"""
import argparse, json, os, re, sys, time

import numpy as np

try:
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib


NUMERIC_DATE = re.compile(
    r"(?:(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12][0-9]|3[01])(?:/(?:\d{2}|\d{4}))?"        # m/d, m/d/yy, m/d/yyyy
    r"|(?:0?[1-9]|1[0-2])-(?:0?[1-9]|[12][0-9]|3[01])-(?:\d{2}|\d{4})"               # m-d-yy, m-d-yyyy (m-d alone is a range)
    r"|(?:0?[1-9]|1[0-2])[/-](?:19|20)\d{2}"                                           # m/yyyy
    r"|(?:0?[1-9]|1[0-2])/[3-9]\d"                                                      # m/yy (yy > 31)
    r"|'\d{2}|\d{2}'|(?:19|20)\d{2}|\d{4}-\d{2}-\d{2})")                             # '92, 92', 1992, ISO
# Words that on their own never identify a place or an organisation ("the hospital", "OSH",
# "nursing home", "MICU"): a LOCATION or ORGANIZATION span made only of these is dropped.
GENERIC_PLACE = frozenset("""
the a an other outside same this that our their his her of at in to and
hospital hospitals home house nursing rehab rehabilitation facility clinic center centre unit floor
ward lab labs room bay bed office department dept service er ed ew or pacu icu micu sicu ccu csru
tsicu nicu picu cvicu vicu nsicu osh cath hosp hospice shelter pharmacy
services team institution local assisted living funeral care step down telemetry dialysis transplant
cardiology cardiac oncology neurology radiology nephrology urology psych psychiatry pulmonary renal liver
gi ep ir ct mri echo angio angiography ultrasound endoscopy radiation therapy nuclear med medicine
ortho orthopedics surg surgery surgical
""".split())
# Dotted abbreviations that are never a name ("58 y.o. woman", "i.v. zofran", "3 p.m."): their
# words get no PERSON score (step 4a). Matched case-insensitively, not preceded by a letter, digit,
# "_" or ".", not followed by a letter, digit or "_".
DOTTED_ABBR = re.compile(
    r"(?i)(?:y\.o|a\.m|p\.m|i\.v|i\.m|p\.o|b\.i\.d|t\.i\.d|q\.i\.d|q\.d|q\.h\.s|q\.h|p\.r\.n|n\.p\.o|e\.g|i\.e"
    r"|s\.p|h\.o|c\.o|r\.o|d\.c|f\.u|w\.u|s\.c|o\.d|o\.s|o\.u|a\.c|p\.c|h\.s|d\.o\.b|m\.d|r\.n)\.?")


# Titles before a name ("Dr. Varga", "MRS OKONKWO", "dr. quill").
TITLES = frozenset("dr dra drs mr mrs ms mx miss prof sr sra srta mme herr frau".split())
TITLE_MIN = 0.1


def after_title(text, start):
    """The title (as written) that the word at `start` follows, or None: spaces or tabs (at least
    one), before them an optional ".", before that a TITLES word not preceded by a letter, digit,
    "_" or "."."""
    j = start
    while j > 0 and text[j - 1] in " \t":
        j -= 1
    if j == start:
        return None
    r = listed_word_before(text, j, TITLES)
    return text[r[0]:r[1]] if r else None


def listed_word_before(text, end, words):
    """(start, end) of the `words` entry that text[:end] ends with, after an optional ".", when it is
    not part of a longer token (word_before); else None."""
    if end > 0 and text[end - 1] == ".":
        end -= 1
    w = word_before(text, end)
    return (end - len(w), end) if w and w in words else None


def capitalised(word):
    """Whether word is written capitalised: an upper-case letter, then a lower-case one."""
    return len(word) > 1 and word[0].isupper() and word[1].islower()


def word_before(text, end):
    """The letters run ending at `end`, lower-cased, or "" when it is preceded by a letter, digit,
    "_" or "." (part of a longer token)."""
    j = end
    while j > 0 and text[j - 1].isalpha():
        j -= 1
    if j > 0 and (text[j - 1].isalnum() or text[j - 1] in "_."):
        return ""
    return text[j:end].lower()


# Family and care relations before a name ("dtr marisol", "Son, Al,", "GRAND DAUGHTER-TESSA"), and
# common words that are never taken for that name ("brother just turned", "son called").
RELATIONS = frozenset("""son sons daughter daughters dtr dau wife husband hus sister sisters brother brothers sis bro
mother father mom dad niece nephew grandson granddaughter grandaughter friend fiance fiancee partner spouse aunt
uncle cousin neighbor hcp proxy""".split())
COMMON_WORDS = frozenset("""a an the and or but if then so just also still now not no yes is are was were be been has
have had will would can could should may might must do does did to of in on at by for with from up down out over
about into who what when where which that this these those he she they we you i it his her their our your my me him
them us called visited came went left says said aware updated present here there home today tonight yesterday
tomorrow very well all any some one two three""".split())
RELATION_MIN = 0.1
# Professional credentials written after a signature ("T. Reyes CRT", "ANA VOSS RRT"), upper case.
CREDENTIALS = frozenset("""RN LPN NP PA MD CRT RRT RT CNA SW MSW LICSW LCSW RD CCRN BSN MSN APRN CRNA DNP SN""".split())


def credential_surname(text, words, j, k, person_min):
    """Step 4a (iv): whether word j is a surname between a name and a credential: it starts with an
    upper-case letter, is all letters (two or more), no common word and no credential; the next word
    is an upper-case credential with only spaces, tabs or commas between; the previous word, on the
    same line and not touching it, has s(PERSON) >= the PERSON threshold."""
    if j == 0 or j + 1 >= len(words):
        return False
    a, b = words[j][0], words[j][1]
    word, nxt = text[a:b], text[words[j + 1][0]:words[j + 1][1]]
    before, after = text[words[j - 1][1]:a], text[b:words[j + 1][0]]
    return (len(word) >= 2 and word.isalpha() and word[0].isupper() and word.lower() not in COMMON_WORDS
            and word.upper() not in CREDENTIALS and nxt in CREDENTIALS and after.strip(" \t,") == ""
            and before != "" and "\n" not in before and words[j - 1][2][k] >= person_min)


def after_relation(text, start):
    """Whether the word at `start` follows a RELATIONS word with one to three spaces, tabs, commas,
    hyphens or colons between, the relation not preceded by a letter, digit, "_" or "."."""
    j = start
    while j > 0 and text[j - 1] in " \t,-:":
        j -= 1
    return 1 <= start - j <= 3 and word_before(text, j) in RELATIONS


def dotted_abbreviations(text):
    """(start, end) of the DOTTED_ABBR abbreviations in text."""
    out = []
    for m in DOTTED_ABBR.finditer(text):
        a, b = m.start(), m.end()
        if a > 0 and (text[a - 1].isalnum() or text[a - 1] in "_."):
            continue
        if b < len(text) and (text[b].isalnum() or text[b] == "_"):
            continue
        out.append((a, b))
    return out
CHUNK_BOUND = "()[]{},;"
CHUNK_STRIP_LEFT = "([{\"“‘"
CHUNK_STRIP_RIGHT = ".,;:!?)]}\"”’"


# Words that are never the first or last word of a place's or organisation's name (a subset of
# GENERIC_PLACE): a span that starts or ends with them is cut to what they enclose.
EDGE_WORDS = frozenset("the a an other outside same this that our their his her of at in to and".split())


def named_part(frag):
    """The part of a LOCATION or ORGANIZATION fragment that names something, as (start, end) in
    the fragment: all of it if it has no word (run of letters), None if every word is generic
    (GENERIC_PLACE). Otherwise EDGE_WORDS at either end are cut off with what separates them from the rest,
    so that the part starts or ends with a letter or digit where it was cut ("the Harlow house"
    -> "Harlow house", "St. Brigid, the" -> "St. Brigid")."""
    words = [m.span() for m in re.finditer(r"[^\W\d_]+", frag)]
    if not words:
        return 0, len(frag)
    if all(frag[a:b].lower() in GENERIC_PLACE for a, b in words):
        return None
    inner = [i for i, (a, b) in enumerate(words) if frag[a:b].lower() not in EDGE_WORDS]
    first, last = inner[0], inner[-1]
    start, end = 0, len(frag)
    if first > 0:
        cut = words[first - 1][1]
        start = next(i for i in range(cut, len(frag)) if frag[i].isalnum())
    if last + 1 < len(words):
        cut = words[last + 1][0]
        end = next(i for i in range(cut - 1, -1, -1) if frag[i].isalnum()) + 1
    return start, end


# Abbreviations that begin a place's name ("St. Brigid", "Mt Sinai", "Ft. Worth").
PLACE_PREFIXES = frozenset("ft mt st ste".split())


def with_place_prefix(text, start):
    """Where a place's name starting at `start` really starts: at a PLACE_PREFIXES word right before
    it (then an optional ".", then spaces or tabs), which the model often leaves out ("St. Brigid"
    tagged ". Brigid"); otherwise at `start`."""
    name = start
    while name < len(text) and not text[name].isalnum():
        name += 1
    if name == len(text):
        name = start
    j = name
    while j > 0 and text[j - 1] in " \t":
        j -= 1
    r = listed_word_before(text, j, PLACE_PREFIXES)
    return r[0] if r else start


# Words after which a four-digit number is a time of day, not a year ("at 2000", "approx 2030").
CLOCK_CUES = frozenset("about approx approximately aprox around at".split())


def clock_stamp(text, start, chunk):
    """Whether chunk (at start) is a 24-hour time 0000-2359 right after a clock cue (CLOCK_CUES, @ or ~)."""
    if not re.fullmatch(r"[0-9]{4}", chunk) or int(chunk[:2]) > 23 or chunk[2] > "5":
        return False
    before = text[:start].rstrip()
    if before.endswith(("@", "~")):
        return True
    m = re.search(r"([^\W\d_]*)$", before)
    return m.group(1).lower() in CLOCK_CUES


# Separators a span never ends or starts with (step 6a); span_rules in classifier.rs.
SPAN_TRIM = ",;:"


def postprocess(text, span):
    """Span rules applied after BIO decoding (step 6 of the decoding rules).

    a. A span with no letter or digit is dropped; others lose the commas, semicolons and colons
       at their ends (SPAN_TRIM: "14 Elm Hollow Rd, Dunmore," ends at "Dunmore"); a LOCATION or ORGANIZATION span keeps only its
       named part (named_part) and is dropped if it has none.
    b. A DATE span without any letter is checked against its chunk: the maximal run around it of
       characters other than whitespace and ()[]{},; , minus leading ([{" and trailing .,;:!?)]}"
       characters. If the chunk is a numeric date (m/d, m-d-yy, m/d/yy, m/d/yyyy, m/yyyy, 'yy,
       yy', 19xx/20xx, ISO) and not a 24-hour time after a clock cue ("at 2000", "@2030", "approx
       1415": clock_stamp), the span becomes the chunk (without its apostrophe); otherwise the span
       is dropped.
    """
    a, b = span["start"], span["end"]
    frag = text[a:b]
    if not any(c.isalnum() for c in frag):
        return None
    while text[b - 1] in SPAN_TRIM or text[b - 1].isspace():
        b -= 1
    while text[a] in SPAN_TRIM or text[a].isspace():
        a += 1
    span, frag = dict(span, start=a, end=b), text[a:b]
    if span["label"] in ("LOCATION", "ORGANIZATION"):
        core = named_part(frag)
        return None if core is None else dict(span, start=with_place_prefix(text, a + core[0]), end=a + core[1])
    if span["label"] == "DATE" and not any(c.isalpha() for c in frag):
        s, e = a, b
        while s > 0 and not text[s - 1].isspace() and text[s - 1] not in CHUNK_BOUND:
            s -= 1
        while e < len(text) and not text[e].isspace() and text[e] not in CHUNK_BOUND:
            e += 1
        while s < e and text[s] in CHUNK_STRIP_LEFT:
            s += 1
        while e > s and text[e - 1] in CHUNK_STRIP_RIGHT:
            e -= 1
        if not NUMERIC_DATE.fullmatch(text[s:e]) or clock_stamp(text, s, text[s:e]):
            return None
        if text[s] == "'":
            s += 1
        elif text[e - 1] == "'":
            e -= 1
        span = dict(span, start=s, end=e)
    return span


# Nationalities, languages, religions and ethnic groups: who a person is or what they speak, never a
# name or a place by themselves ("Cantonese speaking", "yelling in Iranian"). GROUP_WORDS in classifier.rs.
GROUP_WORDS = frozenset("""afghan african albanian algerian american amharic amish anglican arab arabic argentine argentinian armenian
asian assyrian australian austrian bangladeshi baptist belarusian belgian bengali bolivian bosnian brazilian
british buddhist bulgarian burmese cambodian cameroonian canadian cantonese caribbean catholic caucasian
chilean chinese colombian congolese creole croatian cuban czech danish dominican dutch ecuadorian
egyptian english eritrean estonian ethiopian european evangelical farsi filipino finnish french georgian
german ghanaian greek guatemalan gujarati haitian hasidic hausa hebrew hindi hindu hispanic hmong honduran
hungarian icelandic igbo indian indonesian iranian iraqi irish islamic israeli italian jamaican japanese
jewish jordanian kenyan khmer korean kurdish lao laotian latina latino latvian lebanese liberian libyan
lithuanian lutheran macedonian malay malaysian mandarin methodist mexican moldovan mongolian mormon moroccan
muslim nepalese nepali nicaraguan nigerian norwegian orthodox pakistani palestinian panamanian pashto persian
peruvian polish portuguese presbyterian protestant punjabi quaker romanian russian salvadoran samoan
saudi scottish senegalese serbian sikh slovak slovenian somali spanish sudanese swahili swedish swiss
syrian tagalog taiwanese tamil telugu thai tibetan tigrinya tongan turkish ugandan ukrainian urdu uzbek
venezuelan vietnamese welsh yemeni yiddish yoruba zulu""".split())


def drop_group_words(text, spans):
    """Step 6: a PERSON, LOCATION or ORGANIZATION span made only of GROUP_WORDS is dropped, unless a
    title or a relation precedes it ("Mr. French") or it follows a LOCATION or ADDRESS span with at most
    three spaces, commas or "(" between ("Cyprus (Greek)")."""
    def keep(s):
        if s["label"] not in ("PERSON", "LOCATION", "ORGANIZATION"):
            return True
        words = [w.lower() for w in re.findall(r"[^\W\d_]+", text[s["start"]:s["end"]])]
        if not words or not all(w in GROUP_WORDS for w in words):
            return True
        prev = previous_word(text, s["start"]).lower()
        if prev in TITLES or prev in RELATIONS:
            return True
        return any(o["label"] in ("LOCATION", "ADDRESS") and o["end"] <= s["start"]
                   and len(text[o["end"]:s["start"]]) <= 3
                   and all(c.isspace() or c in ",(" for c in text[o["end"]:s["start"]]) for o in spans)
    return [s for s in spans if keep(s)]


def drop_lone_initials(text, spans):
    """Step 6c: a PERSON or LOCATION span with a single letter or digit ("G." of "G.U.", "a." of
    "a.m.", "S" of a SOAP note's "S:") is dropped unless it is tied to a longer span of its type:
    next to it, with at most three spaces, dots, commas or hyphens between ("D." before "Wren"),
    directly or through other single letters ("J. R. Tolkien"). Two lone letters do not vouch
    for each other ("G." and "U." of "G.U.")."""
    def near(s, o):
        if s["label"] != o["label"]:
            return False
        if o["start"] >= s["end"]:
            gap = text[s["end"]:o["start"]]
        elif s["start"] >= o["end"]:
            gap = text[o["end"]:s["start"]]
        else:
            return False
        return len(gap) <= 3 and all(c.isspace() or c in ".,-" for c in gap)

    ruled = ("PERSON", "LOCATION")
    keep = [not (s["label"] in ruled and sum(c.isalnum() for c in text[s["start"]:s["end"]]) == 1)
            for s in spans]
    changed = True
    while changed:  # keeping spreads from the longer spans through chains of near single letters
        changed = False
        for i, s in enumerate(spans):
            if not keep[i] and any(j != i and keep[j] and o["label"] in ruled and near(s, o)
                                   for j, o in enumerate(spans)):
                keep[i] = changed = True
    return [s for s, k in zip(spans, keep) if k]


def propagate_names(text, spans):
    """Step 7: a multi-word PERSON span's text, and each of its words of 4+ letters, is a name
    wherever else it occurs (case-insensitive, word boundaries), with the span's score."""
    names = {}
    for s in spans:
        if s["label"] != "PERSON":
            continue
        frag = text[s["start"]:s["end"]]
        if len(frag.split()) < 2:
            continue
        for n in [frag] + [w for w in re.split(r"[^\w]|[\d_]", frag) if len(w) >= 4]:
            names.setdefault(n.lower(), s["score"])
    if not names:
        return []
    order = sorted(names, key=lambda n: (-len(n.encode("utf-8")), n))[:64]
    rx = re.compile(r"(?i)\b(?:" + "|".join(re.escape(n) for n in order) + r")\b")
    out = []
    for m in rx.finditer(text):
        if any(s["label"] == "PERSON" and s["start"] < m.end() and m.start() < s["end"] for s in spans):
            continue
        score = names.get(m.group(0).lower())
        if score is not None:
            out.append({"start": m.start(), "end": m.end(), "label": "PERSON", "score": score})
    return out


# Words for a person that are never a name ("58 year old FEMALE", "daughter and grandaughter"), step 4a (i).
# Short relation words ("son", "man") and the pronoun "he" are left out: they are surnames too.
NOT_NAMES = frozenset("""brother brothers daughter daughters father female females gentleman grandaughter
granddaughter granddaughters grandson grandsons her hers herself him himself his husband male males mother
nephew niece patient patients she sister sisters spouse their theirs them themselves they uncle woman
women""".split())


ORDINAL_DAY = re.compile(r"[ \t]?(?:0?[1-9]|[12][0-9]|3[01])(?i:st|nd|rd|th)(?!\w)")


def with_ordinal_day(text, span):
    """Step 6: a DATE span followed (after at most one space or tab) by an ordinal day (1st..31st)
    takes it in ("Monday the" + " 3rd")."""
    if span["label"] != "DATE":
        return span
    m = ORDINAL_DAY.match(text, span["end"])
    return dict(span, end=m.end()) if m else span


def load_lexicon(model_dir, man, key):
    """The manifest's lexicon `key` (key + key_sha256; drug_lexicon, word_lexicon) as a set of
    lower-case words; empty when the manifest names none."""
    f = man.get(key)
    if not f:
        return frozenset()
    import hashlib
    data = open(os.path.join(model_dir, f), "rb").read()
    if hashlib.sha256(data).hexdigest() != man.get(key + "_sha256"):
        sys.exit(f"{f}: checksum mismatch")
    return frozenset(l.strip().lower() for l in data.decode("utf-8").splitlines()
                     if l.strip() and not l.startswith("#"))


# Score a place or organisation span written all in lower case needs in text that capitalises words.
LOWER_CASE_PLACE_MIN = 0.8
# The same for a name: higher, since nurses write "son bill" in cased notes (the model is sure of such
# names; a name after a relation or title scores 1), while misspelled words score lower.
LOWER_CASE_NAME_MIN = 0.9
CAPITALISED_WORD = re.compile(r"\b[A-Z][a-z]{2}")
LOWER_CASE_WORD = re.compile(r"\b[a-z]{3}")


def capitalises_words(text):
    """Whether text has a capitalised word ([A-Z][a-z]{2,}) and a lower-case one ([a-z]{3,}) (ASCII):
    its writer uses case, so proper nouns are likely capitalised. All-caps or all-lower notes are not."""
    return bool(CAPITALISED_WORD.search(text)) and bool(LOWER_CASE_WORD.search(text))


def weak_lower_case_span(text, span, score):
    """Step 6, in text that capitalises words: a span without an upper-case letter is dropped if it is a
    LOCATION or ORGANIZATION scoring below LOWER_CASE_PLACE_MIN ("in good spirits") or a PERSON scoring
    below LOWER_CASE_NAME_MIN ("intermitenly"). The tokenizer is uncased, so the model cannot see that
    the writer did not capitalise it."""
    mins = {"LOCATION": LOWER_CASE_PLACE_MIN, "ORGANIZATION": LOWER_CASE_PLACE_MIN, "PERSON": LOWER_CASE_NAME_MIN}
    return (span["label"] in mins and score < mins[span["label"]]
            and not any(c.isupper() for c in text[span["start"]:span["end"]]))


def acronym_as_name(text, span):
    """Step 6, in text that capitalises words: a PERSON span of two or three capitals ("HO", "ENT"),
    optionally with a final ".", after no title or relation, is an abbreviation, not a name."""
    word = text[span["start"]:span["end"]].rstrip(".")
    return (span["label"] == "PERSON" and 2 <= len(word) <= 3 and all("A" <= c <= "Z" for c in word)
            and after_title(text, span["start"]) is None and not after_relation(text, span["start"]))


def only_drug_names(text, span, drugs):
    """Step 6 (after postprocess): a PERSON, LOCATION or ORGANIZATION span whose words (runs of
    letters) are all drug names is dropped: a drug is never a person or a place."""
    if not drugs or span["label"] not in ("PERSON", "LOCATION", "ORGANIZATION"):
        return False
    words = re.findall(r"[^\W\d_]+", text[span["start"]:span["end"]])
    return bool(words) and all(w.lower() in drugs for w in words)


# Words that make a name of the plain words before them ("Good Shepherd Hospital", "Larkspur House").
FACILITY_HEADS = frozenset("""center centre clinic facility home hosp hospice hospital hospitals house infirmary
institute rehab shelter""".split())


def previous_word(text, start):
    """The run of letters before `start`, past spaces, tabs and ".,:-" ("..DR TALLOW"); "" if none."""
    j = start
    while j > 0 and text[j - 1] in " \t.,:-":
        j -= 1
    i = j
    while i > 0 and text[i - 1].isalpha():
        i -= 1
    return text[i:j]


def cut_facility_nouns(text, span):
    """Step 6d: a LOCATION span ending in FACILITY_HEADS nouns ends before them when a word that is
    neither generic (GENERIC_PLACE) nor an edge word stays ("CALVERT HOSPITAL" -> "CALVERT"): the
    name identifies the place, the noun does not. After the plain-word rule ("MERCY HOSPITAL")."""
    if span["label"] != "LOCATION":
        return span
    frag = text[span["start"]:span["end"]]
    words = [m.span() for m in re.finditer(r"[^\W\d_]+", frag)]
    heads = [frag[a:b].lower() in FACILITY_HEADS for a, b in words]
    if not words or not heads[-1] or all(heads):
        return span
    last = max(i for i, h in enumerate(heads) if not h)
    if not any(frag[a:b].lower() not in GENERIC_PLACE and frag[a:b].lower() not in EDGE_WORDS
               for a, b in words[:last + 1]):
        return span
    head = frag[:words[last + 1][0]]
    end = next((i + 1 for i in range(len(head) - 1, -1, -1) if head[i].isalnum()), None)
    return span if end is None else dict(span, end=span["start"] + end)


TYPO_MIN = 7  # letters of the shortest word whose misspellings count as the word
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def interior_edits(w):
    """Words one typing slip away from w without touching its first or last letter: an inner letter
    dropped ("tomrrow"), two inner neighbours swapped ("daugther"), or a letter inserted after the
    first ("betweeen")."""
    out = set()
    for i in range(1, len(w) - 1):
        out.add(w[:i] + w[i + 1:])
        if i + 2 < len(w):
            out.add(w[:i] + w[i + 1] + w[i] + w[i + 2:])
    for i in range(1, len(w)):
        for c in LETTERS:
            out.add(w[:i] + c + w[i:])
    return out


class PlainWords:
    """The word lexicon, with the plain words one slip away from a name (near_name_lexicon): a word
    counts as plain if it is one, or a TYPO_MIN+ letter plain word not near a name with one slip."""

    def __init__(self, words, near_names):
        self.words, self.near_names = words, near_names

    def __bool__(self):
        return bool(self.words)

    def __contains__(self, w):
        if w in self.words:
            return True
        if not self.near_names or len(w) < TYPO_MIN:
            return False
        return any(len(v) >= TYPO_MIN and v in self.words and v not in self.near_names for v in interior_edits(w))


def only_plain_words(text, span, plain, cased):
    """Step 6: a PERSON, LOCATION or ORGANIZATION span made only of plain words (English words written
    only in lower case, none a name or place Faker knows; word_lexicon.py) and GENERIC_PLACE words is
    dropped where case cannot tell the model otherwise: the text does not capitalise words, or the span
    does not mix cases (no upper-case letter, or no lower-case one: all caps). Kept: spans with a
    FACILITY_HEADS word and spans whose previous word is a title or a relation."""
    if not plain or span["label"] not in ("PERSON", "LOCATION", "ORGANIZATION"):
        return False
    frag = text[span["start"]:span["end"]]
    if cased and any(c.isupper() for c in frag) and any(c.islower() for c in frag):
        return False
    words = [w.lower() for w in re.findall(r"[^\W\d_]+", frag)]
    prev = previous_word(text, span["start"]).lower()
    return (bool(words) and all(w in GENERIC_PLACE or w in plain for w in words)
            and not any(w in FACILITY_HEADS for w in words)
            and prev not in TITLES and prev not in RELATIONS)


class Classifier:
    def __init__(self, model_dir, threads=2, thresholds=None, manifest=None):
        import onnxruntime as ort
        from tokenizers import Tokenizer
        man = manifest or tomllib.load(open(os.path.join(model_dir, "manifest.toml"), "rb"))
        self.labels = man["labels"]
        self.max_seq_len = int(man["max_seq_len"])
        self.stride = int(man["stride"])
        self.thresholds = dict(man.get("thresholds", {}))
        # Thresholds for text that does not capitalise words (types missing: the cased ones).
        self.caseless_thresholds = {**self.thresholds, **man.get("caseless_thresholds", {})}
        if thresholds:  # overrides apply to cased and caseless text alike
            self.thresholds.update(thresholds)
            self.caseless_thresholds.update(thresholds)
        self.extend = dict(man.get("extend", {}))
        self.drugs = load_lexicon(model_dir, man, "drug_lexicon")
        self.plain_words = PlainWords(load_lexicon(model_dir, man, "word_lexicon"),
                                      load_lexicon(model_dir, man, "near_name_lexicon"))
        self.types = sorted({l[2:] for l in self.labels if l != "O"}, key=lambda t: self.labels.index("B-" + t))
        self.b_idx = np.array([self.labels.index("B-" + t) for t in self.types])
        self.i_idx = np.array([self.labels.index("I-" + t) for t in self.types])
        self.tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tok.no_truncation()
        self.tok.no_padding()
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), so, providers=["CPUExecutionProvider"])
        self.cls_id = self.tok.token_to_id("[CLS]")
        self.sep_id = self.tok.token_to_id("[SEP]")
        self.pad_id = self.tok.token_to_id("[PAD]") or 0

    # ---- step 1-2
    def windows(self, n):
        W = self.max_seq_len - 2
        if n <= W:
            return [(0, n)]
        starts = list(range(0, n - W, self.stride))
        starts.append(n - W)
        return [(s, s + W) for s in starts]

    # ---- step 3
    def token_probs(self, texts, batch=16):
        encs = [self.tok.encode(t, add_special_tokens=False) for t in texts]
        jobs = []  # (doc, start, end)
        for d, e in enumerate(encs):
            for s, t in self.windows(len(e.ids)):
                if t > s:
                    jobs.append((d, s, t))
        probs = [np.zeros((len(e.ids), len(self.labels)), dtype=np.float32) for e in encs]
        best = [np.full(len(e.ids), -1, dtype=np.int64) for e in encs]
        wstart = [np.full(len(e.ids), 1 << 40, dtype=np.int64) for e in encs]
        # Batches never mix texts, as in veil: the int8 graph quantizes activations per tensor
        # (DynamicQuantizeMatMul), so a window's scores depend on the other rows and the padding
        # of its batch. Batching windows of one text only keeps scores a function of that text.
        order = sorted(range(len(jobs)), key=lambda j: (jobs[j][0], jobs[j][2] - jobs[j][1]))
        batches, cur = [], []
        for j in order:
            if cur and (len(cur) == batch or jobs[cur[0]][0] != jobs[j][0]):
                batches.append(cur)
                cur = []
            cur.append(j)
        if cur:
            batches.append(cur)
        for bj in batches:
            sel = [jobs[j] for j in bj]
            L = max(t - s for _, s, t in sel) + 2
            ids = np.full((len(sel), L), self.pad_id, dtype=np.int64)
            att = np.zeros((len(sel), L), dtype=np.int64)
            for r, (d, s, t) in enumerate(sel):
                ids[r, 0] = self.cls_id
                ids[r, 1:1 + t - s] = encs[d].ids[s:t]
                ids[r, 1 + t - s] = self.sep_id
                att[r, :t - s + 2] = 1
            logits = self.sess.run(["logits"], {"input_ids": ids, "attention_mask": att})[0]
            logits = logits - logits.max(-1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(-1, keepdims=True)
            for r, (d, s, t) in enumerate(sel):
                for i in range(s, t):
                    c = min(i - s, t - 1 - i)
                    # strictly greater: ties go to the earlier window (windows are visited
                    # here in length order, so compare start positions explicitly)
                    if c > best[d][i] or (c == best[d][i] and s < wstart[d][i]):
                        best[d][i] = c
                        wstart[d][i] = s
                        probs[d][i] = p[r, 1 + i - s]
        return encs, probs

    # ---- step 4
    def word_scores(self, enc, probs):
        """list of (start, end, s[types], pB[types], pI[types]) per word, in order."""
        words = []
        cur = None
        for i, w in enumerate(enc.word_ids):
            if w is None:
                continue
            if cur is None or cur[0] != w:
                if cur is not None:
                    words.append(cur)
                cur = [w, enc.offsets[i][0], enc.offsets[i][1], [i]]
            else:
                cur[2] = enc.offsets[i][1]
                cur[3].append(i)
        if cur is not None:
            words.append(cur)
        out = []
        for w, a, b, toks in words:
            pw = probs[toks].mean(0)
            pb, pi = pw[self.b_idx], pw[self.i_idx]
            out.append((a, b, pb + pi, pb, pi))
        return out

    # ---- step 5
    def thresholds_for(self, text):
        """The manifest's thresholds for text: caseless_thresholds where it does not capitalise words."""
        return self.thresholds if text is None or capitalises_words(text) else self.caseless_thresholds

    def decode(self, words, thresholds=None, text=None, extend=None):
        th = thresholds or self.thresholds_for(text)
        ext = self.extend if extend is None else extend
        if text is not None and "PERSON" in self.types:
            # step 4a (i): words inside a dotted abbreviation, and words for a person (NOT_NAMES:
            # "female", "daughter", ...), are never part of a name
            abbr = dotted_abbreviations(text)
            k = self.types.index("PERSON")
            nw = []
            for w in words:
                if any(a <= w[0] and w[1] <= b for a, b in abbr) or text[w[0]:w[1]].lower() in NOT_NAMES:
                    s, pb, pi = w[2].copy(), w[3].copy(), w[4].copy()
                    s[k] = pb[k] = pi[k] = 0.0
                    w = (w[0], w[1], s, pb, pi)
                nw.append(w)
            words = nw
            # step 4a (ii): a word right after a title is a name when its PERSON score is >= TITLE_MIN,
            # or with any score when the text capitalises words and the title and the word are written
            # capitalised, the word no common word ("Mrs Okonkwo"; not "MS. Aspiration");
            # (iii) one right after a relation, when its score is >= RELATION_MIN and it is no common word
            k = self.types.index("PERSON")
            cased = capitalises_words(text)
            nw = []
            for w in words:
                title, word = after_title(text, w[0]), text[w[0]:w[1]]
                titled = title is not None and (w[2][k] >= TITLE_MIN or (
                    cased and capitalised(title) and capitalised(word) and word.lower() not in COMMON_WORDS))
                if titled or (
                        w[2][k] >= RELATION_MIN and text[w[0]:w[1]].lower() not in COMMON_WORDS
                        and after_relation(text, w[0])):
                    s, pb, pi = w[2].copy(), w[3].copy(), w[4].copy()
                    s[k], pb[k], pi[k] = 1.0, 1.0, 0.0
                    w = (w[0], w[1], s, pb, pi)
                nw.append(w)
            words = nw
            # step 4a (iv): a surname between a name word and a credential continues the name
            person_min = th.get("PERSON", 0.5)
            nw = list(words)
            for j, w in enumerate(words):
                if credential_surname(text, words, j, k, person_min):
                    s, pb, pi = w[2].copy(), w[3].copy(), w[4].copy()
                    s[k], pb[k], pi[k] = 1.0, 0.0, 1.0
                    nw[j] = (w[0], w[1], s, pb, pi)
            words = nw
        ks = [int(np.argmax(s)) for _, _, s, _, _ in words]
        sc = [float(w[2][k]) for w, k in zip(words, ks)]
        mark = [sc[j] >= th.get(self.types[k], 0.5) for j, k in enumerate(ks)]
        # Hysteresis (step 4b): a word next to an entity word of its own type joins it when its
        # score reaches the lower `extend` threshold; never across a line break.
        low = [min(ext.get(self.types[k], 1.0), th.get(self.types[k], 0.5)) for k in ks]

        def joins(j, n):
            if mark[j] or not mark[n] or ks[j] != ks[n] or sc[j] < low[j]:
                return False
            gap = text[min(words[j][1], words[n][1]):max(words[j][0], words[n][0])] if text is not None else ""
            return "\n" not in gap

        for j in range(1, len(words)):
            if joins(j, j - 1):
                mark[j] = True
        for j in range(len(words) - 2, -1, -1):
            if joins(j, j + 1):
                mark[j] = True
        spans = []
        open_ = None  # [start, end, type_index, scores]
        for j, (a, b, s, pb, pi) in enumerate(words):
            k = ks[j]
            if mark[j]:
                if open_ is not None and open_[2] == k and pi[k] >= pb[k]:
                    open_[1] = b
                    open_[3].append(sc[j])
                else:
                    if open_ is not None:
                        spans.append(open_)
                    open_ = [a, b, k, [sc[j]]]
            else:
                if open_ is not None:
                    spans.append(open_)
                open_ = None
        if open_ is not None:
            spans.append(open_)
        out = []
        cased = text is not None and capitalises_words(text)
        for a, b, k, sc in spans:
            span = {"start": a, "end": b, "label": self.types[k], "score": round(sum(sc) / len(sc), 4)}
            span = postprocess(text, span) if text is not None else span
            if not span or (text is not None and only_drug_names(text, span, self.drugs)):
                continue
            if text is not None:
                span = with_ordinal_day(text, span)
            if cased and (weak_lower_case_span(text, span, sum(sc) / len(sc)) or acronym_as_name(text, span)):
                continue
            if text is not None and only_plain_words(text, span, self.plain_words, cased):
                continue
            out.append(span)
        if text is not None:
            out = drop_group_words(text, out)
            out = drop_lone_initials(text, out)
            out = [cut_facility_nouns(text, s) for s in out]
            out += propagate_names(text, out)
        return out

    def predict(self, texts, batch=16):
        encs, probs = self.token_probs(texts, batch)
        words = [self.word_scores(e, p) for e, p in zip(encs, probs)]
        return words

    def __call__(self, texts, batch=16):
        return [self.decode(w, text=t) for w, t in zip(self.predict(texts, batch), texts)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "..", "models", "classifier"))
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threshold", action="append", default=[], help="LABEL=VALUE override")
    a = ap.parse_args()
    th = {k: float(v) for k, v in (x.split("=") for x in a.threshold)}
    clf = Classifier(a.model, a.threads, th)
    recs = [json.loads(l) for l in open(a.input, encoding="utf-8")]
    t0 = time.time()
    res = clf([r["text"] for r in recs], a.batch)
    el = time.time() - t0
    nbytes = sum(len(r["text"].encode("utf-8")) for r in recs)
    with open(a.out, "w", encoding="utf-8") as f:
        for r, sp in zip(recs, res):
            f.write(json.dumps({"id": r["id"], "spans": sp}) + "\n")
    print(f"{len(recs)} records, {nbytes / 1024:.0f} KB in {el:.1f} s ({nbytes / 1024 / el:.1f} KB/s incl. tokenization)", file=sys.stderr)


if __name__ == "__main__":
    main()
