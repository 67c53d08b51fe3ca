"""Typing slips, as veil's decoding rule plain_words reads them (used by word_lexicon.py).

veil reads a misspelt plain word of TYPO_MIN+ letters as the word (decoding rule plain_words,
`PlainWords::contains` in src/detect/classifier/rules.rs); the near-name list word_lexicon.py writes keeps
that from hiding names. The edits are the same as `interior_edits` there, pinned by
fixtures/classifier/interior_edits.toml, which both run.
"""

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


if __name__ == "__main__":
    # Checks this copy against the shared fixture table (run by make test): python3 training/typos.py
    import os, tomllib
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "classifier", "interior_edits.toml")
    with open(path, "rb") as f:
        cases = tomllib.load(f)["case"]
    for case in cases:
        edits = interior_edits(case["word"])
        assert len(edits) == case["distinct"], (case["word"], len(edits))
        assert all(w in edits for w in case["contains"]), case["word"]
        assert not any(w in edits for w in case["excludes"]), case["word"]
    print(f"typos.py: {len(cases)} interior-edit fixtures pass")
