#!/usr/bin/env python3
"""Score `veil scan --jsonl` output on the two fixed halves of a dev set.

usage: eval_halves.py GOLD.jsonl PRED.jsonl [--json] [--recognizers]

Rules and thresholds are chosen on the *tune* half and reported on the *report* half, so a
change that only fits the text it was tuned on shows. Halves are fixed by record: physionet
notes by patient (`patient // 2` even: tune; the set holds odd patient ids only, and notes of
one patient share names, so they stay together), other sets by the number ending the id (even:
tune). Scoring is `../shared/eval/score.py` (SHARED overrides the directory holding `eval/`),
run on each half.

--recognizers adds, per recognizer of PRED and per half, the scorer's figures for that
recognizer's spans alone: char precision (against every gold span), and char recall on the gold
spans of the labels it reports (PHONE answers for PHONE and FAX gold spans, YEAR for DATE).
"""
import json, os, re, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("SHARED", os.path.join(HERE, "..", "..", "shared"))
SCORER = os.path.join(SHARED, "eval", "score.py")
sys.path.insert(0, os.path.dirname(SCORER))
from score import NEUTRAL  # noqa: E402  gold labels the scorer neither requires nor penalises

FIELDS = ["char_recall", "char_precision", "entity_leak_rate", "identifying_leak_rate", "doc_fpr"]


def half(record):
    """'tune' or 'report' for a gold record."""
    if "patient" in record:
        return "tune" if record["patient"] // 2 % 2 == 0 else "report"
    m = re.search(r"(\d+)$", str(record["id"]))
    return "tune" if m and int(m.group(1)) % 2 == 0 else "report"


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def score(gold, pred):
    """score.py's --json figures for lists of gold and predicted records."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, recs in (("gold", gold), ("pred", pred)):
            paths.append(os.path.join(tmp, name + ".jsonl"))
            with open(paths[-1], "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in recs)
        out = subprocess.run([sys.executable, SCORER, *paths, "--json"], check=True,
                             capture_output=True, text=True).stdout
    return json.loads(out)


def halves(gold_path, pred_path):
    """{half: (gold records, predicted records)}."""
    gold, pred = load(gold_path), {r["id"]: r for r in load(pred_path)}
    out = {"tune": ([], []), "report": ([], [])}
    for g in gold:
        g_recs, p_recs = out[half(g)]
        g_recs.append(g)
        p_recs.append(pred.get(g["id"], {"id": g["id"], "spans": []}))
    return out


def evaluate(gold_path, pred_path):
    """{half: score.py figures}."""
    return {h: score(g, p) for h, (g, p) in halves(gold_path, pred_path).items()}


# Gold labels each veil label answers for (recall of a recognizer is measured on these).
GOLD_LABELS = {"PHONE": {"PHONE", "FAX"}, "IP_ADDRESS": {"IP"}, "DRIVERS_LICENSE": {"LICENSE"},
               "YEAR": {"DATE"}}


def recognizers(gold_path, pred_path):
    """{recognizer: {half: {"labels", "spans", "precision", "recall"}}}: the scorer's char
    precision of the recognizer's spans alone (against every gold span), and its char recall on
    the gold spans of the labels it reports (None when the half has none)."""
    out = {}
    for h, (gold, pred) in halves(gold_path, pred_path).items():
        names = sorted({s.get("recognizer", "?") for r in pred for s in r["spans"]})
        for name in names:
            only = [{"id": r["id"], "spans": [s for s in r["spans"] if s.get("recognizer") == name]}
                    for r in pred]
            labels = sorted({s["label"] for r in only for s in r["spans"]})
            wanted = set().union(*(GOLD_LABELS.get(l, {l}) for l in labels))
            sub = [dict(g, spans=[s for s in g["spans"] if s["label"] in wanted]) for g in gold]
            has_gold = any(s["end"] > s["start"] and s["label"] not in NEUTRAL for g in sub for s in g["spans"])
            recall = score(sub, only)["char_recall"] if has_gold else None
            # Spans of neutral types only (AGE, ORGANIZATION) are never right or wrong.
            precision = None if set(labels) <= NEUTRAL else score(gold, only)["char_precision"]
            out.setdefault(name, {})[h] = {
                "labels": labels, "spans": sum(len(r["spans"]) for r in only),
                "precision": precision, "recall": recall}
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        sys.exit(__doc__)
    result = {"halves": evaluate(*args)}
    if "--recognizers" in sys.argv:
        result["recognizers"] = recognizers(*args)
    if "--json" in sys.argv:
        print(json.dumps(result))
        return
    print(f"{'half':8}" + "".join(f"{k:>23}" for k in FIELDS))
    for h, s in result["halves"].items():
        print(f"{h:8}" + "".join(f"{s[k]:>23}" for k in FIELDS))
    for name, by_half in result.get("recognizers", {}).items():
        for h, s in by_half.items():
            shown = {k: "n/a" if s[k] is None else s[k] for k in ("precision", "recall")}
            print(f"{name:28} {h:7} spans {s['spans']:6}  precision {shown['precision']:<7} "
                  f"recall {shown['recall']:<7} {' '.join(s['labels'])}")


if __name__ == "__main__":
    main()
