#!/usr/bin/env python3
"""Build the classifier's common-word lexicon: English words that are written only in lower case.

usage: word_lexicon.py --dict /usr/share/dict/american-english-large [--dict /usr/share/dict/american-english-huge] --out ../models/classifier/words.txt

Source: SCOWL (Spell Checker Oriented Word Lists, Kevin Atkinson; permissive licence, notice
below) as Debian's wamerican-large and wamerican-huge packages install it (v8 and earlier: large
only). Kept: words of letters only (a trailing "'s" removed) that some list has only in lower case: "heart", "lumen", "aphasia", "shelter".
Removed: every word no list has only in lower case ("Bill", "Rose", "Cross", "Baltimore"), and
every first name, last name, city, state, country and street word that Faker (all its locales)
knows, so that the lexicon never holds a word that is commonly a name. Added: the charting
abbreviations that gen_data.py uses as non-entities (ABBR, HARD_NEG: "NGT", "KUB", "NKDA", "MAE"),
minus the same names and places ("HO", "LAD", "LIMA" go). veil drops a PERSON,
LOCATION or ORGANIZATION span made only of these words where the model cannot see case (decoding
rule 6, models/README.md).
"""
import argparse
import re

from drug_lexicon import NAME_ATTRS, PLACE_ATTRS, address_providers, faker_words, person_providers
from gen_data import ABBR, HARD_NEG

from typos import TYPO_MIN, interior_edits  # noqa: E402

WORD = re.compile(r"[A-Za-z]+")
NOTICE = """\
# English words written only in lower case, never names or places (one word per line).
# Built by training/word_lexicon.py from SCOWL as packaged by Debian (wamerican-large and
# wamerican-huge), keeping the words some list has only in lower case, plus the charting abbreviations training/gen_data.py uses
# as non-entities, minus every name and place Faker knows.
# SCOWL: Copyright 2000-2011 by Kevin Atkinson. Permission to use, copy, modify, distribute and
# sell these word lists, the associated scripts, the output created from the scripts, and its
# documentation for any purpose is hereby granted without fee, provided that the above copyright
# notice appears in all copies and that both that copyright notice and this permission notice
# appear in supporting documentation. Kevin Atkinson makes no representations about the
# suitability of this array for any purpose. It is provided "as is" without express or implied
# warranty. (Other contributors' notices: /usr/share/doc/wamerican-large/copyright.)
"""


def near_names(kept, names):
    """Plain words of TYPO_MIN+ letters one interior edit away from a name, place or capitalised
    word ("fetcher" ~ "Fletcher"): veil does not read a misspelling of these as a plain word."""
    return sorted(w for w in kept if len(w) >= TYPO_MIN and not interior_edits(w).isdisjoint(names))


NEAR_NOTICE = """\
# Plain words (words.txt) of 7+ letters that one typing slip inside the word (a letter dropped,
# added or swapped with its neighbour; first and last letters kept) turns into a name, place or
# capitalised word: veil does not read such a misspelling as the plain word ("fetcher" ~ "Fletcher").
# Built by training/word_lexicon.py from the same sources as words.txt (SCOWL notice there).
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dict", action="append",
                    help="a SCOWL word list; repeat for several (a word counts if any list has it only in lower case)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--near-out", help="also write the plain words whose misspellings could be names (near_names)")
    a = ap.parse_args()
    # Per list: its words written only in lower case. A larger list capitalises some common words
    # a smaller one does not ("Member", "Clover"), so the lists are not merged before the test.
    lower, capitalised, only_lower = set(), set(), set()
    for path in a.dict or ["/usr/share/dict/american-english-large"]:
        low, cap = set(), set()
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                w = line.strip().removesuffix("'s")
                if WORD.fullmatch(w):
                    (cap if w[0].isupper() else low).add(w.lower())
        lower |= low
        capitalised |= cap
        only_lower |= low - cap
    names = faker_words(person_providers, NAME_ATTRS)
    places = faker_words(address_providers, PLACE_ATTRS)
    # Charting abbreviations the generator teaches as non-entities ("NGT", "KUB", "NKDA", "yo"):
    # written in capitals, so not in the lower-case list, and never a name or place either.
    abbreviations = {w.lower() for w in ABBR + HARD_NEG if WORD.fullmatch(w)}
    kept = sorted(w for w in only_lower | abbreviations
                  if w not in names and w not in places and len(w) >= 2)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(NOTICE)
        f.write("\n".join(kept) + "\n")
    if a.near_out:
        near = near_names(kept, names | places | capitalised)
        with open(a.near_out, "w", encoding="utf-8") as f:
            f.write(NEAR_NOTICE)
            f.write("\n".join(near) + "\n")
        print(f"{len(near)} plain words of {TYPO_MIN}+ letters one slip away from a name or place")
    print(f"{len(lower)} lower-case words, {len(only_lower)} never capitalised in a list, "
          f"{len(abbreviations)} abbreviations, {len(kept)} kept")


if __name__ == "__main__":
    main()
