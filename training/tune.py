#!/usr/bin/env python3
"""Choose per-entity thresholds on the dev sets and write manifest.toml.

usage: tune.py --model ../models/classifier --labels runs/x/labels.json --gold A.jsonl --gold B.jsonl
               --fpr-set physionet --max-fpr 0.14 --version veil-ner-minilm-L3-int8-v1

Dev data is used only to choose thresholds (never for training). Scored is what veil reports:
with --patterns PRED.jsonl (one per --gold, in order; `veil scan --jsonl` output with the
classifier off) the pattern findings are added to the classifier's before scoring, so thresholds
are chosen for the combined output. Objective: mean over the gold files of char F2 minus entity
leak rate (times --leak-weight), minus penalties when char precision falls below --min-precision
(times --precision-weight, 0 by default: recall first), when char recall falls below --min-recall
(times --recall-weight, 0 by default), when the entity leak rate exceeds --max-leak (times
--max-leak-weight, 0 by default) and when the document
false-positive rate of the --fpr-set file exceeds --max-fpr (ordinary notes must stay silent).
Coordinate search over a grid (--rounds): each type's threshold, its threshold for text that does not
capitalise words ([caseless_thresholds]; --cased-only leaves it out), then its hysteresis threshold.
"""
import argparse, hashlib, json, os, pickle, sys, tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from predict import Classifier, capitalises_words  # noqa: E402
from scoring import score  # noqa: E402

# Lexicons used when present in the model directory: manifest key prefix -> file.
LEXICONS = {"drug_lexicon": "drugs.txt", "word_lexicon": "words.txt",  # drug_lexicon.py, word_lexicon.py
            "near_name_lexicon": "near_names.txt"}  # word_lexicon.py --near-out
GRID = [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99]


def sha256(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def lexicons(model_dir):
    """Manifest entries (key, key_sha256) for the LEXICONS present in model_dir."""
    out = {}
    for key, name in LEXICONS.items():
        if os.path.exists(os.path.join(model_dir, name)):
            out.update({key: name, f"{key}_sha256": sha256(os.path.join(model_dir, name))})
    return out


def write_manifest(path, labels, max_seq_len, stride, thresholds, version, model_dir, extra="", extend=None,
                   caseless=None):
    lines = [
        f'version = "{version}"',
        f"labels = [{', '.join(json.dumps(l) for l in labels)}]",
        f"max_seq_len = {max_seq_len}",
        f"stride = {stride}",
        f"overlap = {max_seq_len - 2 - stride}",
        'span_score = "mean"',
        f'model_sha256 = "{sha256(os.path.join(model_dir, "model.onnx"))}"',
        f'tokenizer_sha256 = "{sha256(os.path.join(model_dir, "tokenizer.json"))}"',
    ]
    for key, value in lexicons(model_dir).items():
        lines.append(f'{key} = "{value}"')
    lines += ["", "[thresholds]"] + [f"{k} = {v}" for k, v in thresholds.items()]
    caseless = {k: v for k, v in (caseless or {}).items() if v != thresholds.get(k, 0.5)}
    if caseless:
        lines += ["", "# Text that does not capitalise words (all caps, all lower case): types missing use [thresholds]."]
        lines += ["[caseless_thresholds]"] + [f"{k} = {v}" for k, v in caseless.items()]
    ext = {k: v for k, v in (extend or {}).items() if v < thresholds.get(k, 0.5)}
    if ext:
        lines += ["", "# Hysteresis: a word next to an entity word of its type joins it from this score on."]
        lines += ["[extend]"] + [f"{k} = {v}" for k, v in ext.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + extra)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--gold", action="append", required=True)
    ap.add_argument("--fpr-set", default="physionet")
    ap.add_argument("--max-fpr", type=float, default=0.14)
    ap.add_argument("--min-precision", type=float, default=0.80)
    ap.add_argument("--cache", help="keep the model's word scores in CACHE.N.pkl to re-run the search without inference")
    ap.add_argument("--precision-weight", type=float, default=0.0, help="penalty per point of precision below --min-precision")
    ap.add_argument("--leak-weight", type=float, default=1.0, help="weight of the entity leak rate against char F2")
    ap.add_argument("--min-recall", type=float, default=0.95)
    ap.add_argument("--recall-weight", type=float, default=0.0, help="penalty per point of char recall below --min-recall")
    ap.add_argument("--max-leak", type=float, default=0.08)
    ap.add_argument("--max-leak-weight", type=float, default=0.0, help="penalty per point of leak rate above --max-leak")
    ap.add_argument("--patterns", action="append", default=[], help="veil scan --jsonl output per --gold (classifier off)")
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--stride", type=int, default=96)
    ap.add_argument("--version", default="veil-ner-minilm-L3-int8-v1")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fixed", action="append", default=[], help="LABEL=VALUE, not tuned")
    ap.add_argument("--cased-only", action="store_true", help="one threshold per type, whatever the text's case")
    ap.add_argument("--caseless-only", action="store_true",
                    help="keep --model's manifest thresholds and hysteresis; search its caseless thresholds alone")
    a = ap.parse_args()

    labels = json.load(open(a.labels))
    types = [l[2:] for l in labels if l.startswith("B-")]
    man = {"labels": labels, "max_seq_len": a.max_seq_len, "stride": a.stride, "thresholds": {t: 0.5 for t in types}}
    man.update(lexicons(a.model))
    clf = Classifier(a.model, 2, manifest=man)
    if a.patterns and len(a.patterns) != len(a.gold):
        sys.exit("--patterns must be given once per --gold, in the same order")
    sets = []
    for i, g in enumerate(a.gold):
        recs = [json.loads(l) for l in open(g, encoding="utf-8")]
        cache = f"{a.cache}.{i}.pkl" if a.cache else None
        if cache and os.path.exists(cache):
            with open(cache, "rb") as f:
                words = pickle.load(f)
        else:
            words = clf.predict([r["text"] for r in recs])
            if cache:
                with open(cache, "wb") as f:
                    pickle.dump(words, f)
        pats = {}
        if a.patterns:
            for line in open(a.patterns[i], encoding="utf-8"):
                p = json.loads(line)
                pats[p["id"]] = [x for x in p["spans"] if x.get("recognizer") != "classifier"]
        cased = [capitalises_words(r["text"]) for r in recs]
        sets.append((g, recs, words, pats, cased))
        print(f"inferred {g}", file=sys.stderr)

    def evaluate(th, ext=None, thl=None):
        """Scores with thresholds th (thl in text that does not capitalise words; None: th)."""
        res = {}
        for g, recs, words, pats, cased in sets:
            preds = {r["id"]: clf.decode(w, th if c or thl is None else thl, text=r["text"], extend=ext or {})
                     + pats.get(r["id"], []) for r, w, c in zip(recs, words, cased)}
            res[g] = score(recs, preds)
        return res

    def objective(res):
        gain = sum(r["char_f2"] - a.leak_weight * r["entity_leak_rate"] for r in res.values()) / len(res)
        pen = 0.0
        for g, r in res.items():
            pen += a.precision_weight * max(0.0, a.min_precision - r["char_precision"])
            pen += a.recall_weight * max(0.0, a.min_recall - r["char_recall"])
            pen += a.max_leak_weight * max(0.0, r["entity_leak_rate"] - a.max_leak)
            if a.fpr_set in os.path.basename(g) and r["doc_fpr"] > a.max_fpr:
                pen += 3 * (r["doc_fpr"] - a.max_fpr)
        return gain - pen

    th = {t: 0.5 for t in types}
    fixed = {k: float(v) for k, v in (x.split("=") for x in a.fixed)}
    th.update(fixed)
    thl = dict(th)  # caseless text; a cased threshold moves it along until it is searched itself
    ext = {}
    if a.caseless_only:
        with open(os.path.join(a.model, "manifest.toml"), "rb") as f:
            old = tomllib.load(f)
        th = {t: old["thresholds"].get(t, 0.5) for t in types}
        thl = {t: old.get("caseless_thresholds", {}).get(t, th[t]) for t in types}
        ext = dict(old.get("extend", {}))

    def thl_with(cand, t):
        """Caseless thresholds to try with cased ones cand: the same with --cased-only; in the first
        round t's caseless threshold follows its cased one until it is searched itself."""
        if a.cased_only:
            return cand
        return dict(thl, **{t: cand[t]}) if rnd == 0 else thl

    rnd = 0
    best = objective(evaluate(th, ext, thl))
    # Coordinate search: each type's threshold, its caseless threshold, then its hysteresis
    # threshold (below both thresholds, or none).
    for rnd in range(a.rounds):
        for t in types:
            if t not in fixed and not a.caseless_only:
                for v in GRID:
                    cand = dict(th, **{t: v})
                    cthl = thl_with(cand, t)
                    cext = {k: e for k, e in ext.items() if e < min(cand[k], cthl[k])}
                    o = objective(evaluate(cand, cext, cthl))
                    if o > best + 1e-6:
                        best, th, thl, ext = o, cand, cthl, cext
            if t not in fixed and not a.cased_only:
                for v in GRID:
                    cthl = dict(thl, **{t: v})
                    cext = {k: e for k, e in ext.items() if e < min(th[k], cthl[k])}
                    o = objective(evaluate(th, cext, cthl))
                    if o > best + 1e-6:
                        best, thl, ext = o, cthl, cext
            for v in [] if a.caseless_only else [None] + [g for g in GRID if g < min(th[t], thl[t])]:
                cext = {k: e for k, e in ext.items() if k != t}
                if v is not None:
                    cext[t] = v
                o = objective(evaluate(th, cext, thl))
                if o > best + 1e-6:
                    best, ext = o, cext
        print(f"round {rnd}: {th} caseless {thl} extend {ext} objective {best:.4f}", file=sys.stderr)
    res = evaluate(th, ext, thl)
    for g, r in res.items():
        print(os.path.basename(g), json.dumps(r))
    write_manifest(os.path.join(a.model, "manifest.toml"), labels, a.max_seq_len, a.stride, th, a.version, a.model,
                   extend=ext, caseless=thl)
    print("thresholds", th, "caseless", thl, "extend", ext)


if __name__ == "__main__":
    main()
