#!/usr/bin/env python3
"""Choose per-entity thresholds on the dev sets and write manifest.toml.

usage: tune.py --model ../models/classifier --gold A.jsonl --gold B.jsonl [--veil ../target/release/veil]
               --fpr-set physionet --max-fpr 0.14 --version veil-ner-minilm-L3-int8-v1

Dev data is used only to choose thresholds (never for training). Every figure comes from veil:
the model runs once per dev set (`veil scan --jsonl --word-scores-out`), then each candidate set
of thresholds is written into a manifest in a scratch copy of the model directory and veil decodes
the stored word scores with it (`veil scan --jsonl --word-scores-in`: patterns, decoding rules and
thresholds exactly as veil applies them; there is no second decoder). Only the records of the
*tune* half of each set (scripts/eval_halves.py) are searched on; the report half is scored at
the end and printed, so a choice that fits only the text it was tuned on shows.

Objective: mean over the gold files of char F2 minus entity leak rate (times --leak-weight), minus
penalties when char precision falls below --min-precision (times --precision-weight, 0 by default:
recall first), when char recall falls below --min-recall (times --recall-weight, 0 by default),
when the entity leak rate exceeds --max-leak (times --max-leak-weight, 0 by default) and when the
document false-positive rate of the --fpr-set file exceeds --max-fpr (ordinary notes must stay
silent). Coordinate search over a grid (--rounds): each type's threshold, its threshold for text
that does not capitalise words ([caseless_thresholds]; --cased-only leaves it out), then its
hysteresis threshold.
"""
import argparse, functools, hashlib, json, os, subprocess, sys, tempfile, tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
from eval_halves import half  # noqa: E402
from scoring import score  # noqa: E402

# Files of the model directory named in the manifest when present: manifest key -> file.
LEXICONS = {"drug_lexicon": "drugs.txt", "demonym_lexicon": "demonyms.txt",  # drug_lexicon.py; by hand
            "decoding_lists": "decoding.toml",  # the decoding rules' word lists, by hand
            "word_lexicon": "words.txt", "near_name_lexicon": "near_names.txt"}  # word_lexicon.py
GRID = [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99]


@functools.lru_cache(maxsize=None)  # the model and lexicons do not change during a search
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


def write_manifest(path, labels, max_seq_len, stride, thresholds, version, model_dir, **kw):
    with open(path, "w") as f:
        f.write(manifest_text(labels, max_seq_len, stride, thresholds, version, model_dir, **kw))


def manifest_text(labels, max_seq_len, stride, thresholds, version, model_dir, extra="", extend=None,
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
    return "\n".join(lines) + "\n" + extra


class Veil:
    """Decodes stored word scores of the dev sets with candidate manifests, through veil."""

    def __init__(self, binary, model_dir, golds, work):
        self.binary, self.model_dir, self.work = os.path.abspath(binary), os.path.abspath(model_dir), work
        self.scratch = os.path.join(work, "model")
        os.makedirs(self.scratch, exist_ok=True)
        for f in ["model.onnx", "tokenizer.json", *LEXICONS.values()]:
            src, dst = os.path.join(self.model_dir, f), os.path.join(self.scratch, f)
            if os.path.exists(src) and not os.path.exists(dst):
                os.symlink(src, dst)
        self.golds = golds
        self.scores = [os.path.join(work, f"scores.{i}.jsonl") for i in range(len(golds))]

    def scan(self, gold, out, extra, model_dir):
        repo = os.path.join(HERE, "..")
        env = {**os.environ, "VEIL_CLASSIFIER_DIR": model_dir, "RUST_LOG": "warn"}
        subprocess.run([self.binary, "scan", "--config", os.path.join(repo, "veil.toml"), "--jsonl",
                        os.path.abspath(gold), out, *extra], check=True, env=env, cwd=repo)

    def infer(self):
        """Runs the model once per dev set (with the model directory's own manifest)."""
        for gold, scores in zip(self.golds, self.scores):
            self.scan(gold, os.path.join(self.work, "infer.jsonl"), ["--word-scores-out", scores], self.model_dir)

    def decode(self, manifest):
        """{gold: {id: spans}} for a candidate manifest (its text), from the stored word scores."""
        with open(os.path.join(self.scratch, "manifest.toml"), "w") as f:
            f.write(manifest)
        out = {}
        for gold, scores in zip(self.golds, self.scores):
            pred = os.path.join(self.work, "pred.jsonl")
            self.scan(gold, pred, ["--word-scores-in", scores], self.scratch)
            with open(pred, encoding="utf-8") as f:
                out[gold] = {r["id"]: r["spans"] for r in map(json.loads, f)}
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--veil", default=os.path.join(HERE, "..", "target", "release", "veil"))
    ap.add_argument("--gold", action="append", required=True)
    ap.add_argument("--fpr-set", default="physionet")
    ap.add_argument("--max-fpr", type=float, default=0.14)
    ap.add_argument("--min-precision", type=float, default=0.80)
    ap.add_argument("--precision-weight", type=float, default=0.0, help="penalty per point of precision below --min-precision")
    ap.add_argument("--leak-weight", type=float, default=1.0, help="weight of the entity leak rate against char F2")
    ap.add_argument("--min-recall", type=float, default=0.95)
    ap.add_argument("--recall-weight", type=float, default=0.0, help="penalty per point of char recall below --min-recall")
    ap.add_argument("--max-leak", type=float, default=0.08)
    ap.add_argument("--max-leak-weight", type=float, default=0.0, help="penalty per point of leak rate above --max-leak")
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--stride", type=int, default=96)
    ap.add_argument("--version", default="veil-ner-minilm-L3-int8-v1")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fixed", action="append", default=[], help="LABEL=VALUE, not tuned")
    ap.add_argument("--cased-only", action="store_true", help="one threshold per type, whatever the text's case")
    ap.add_argument("--caseless-only", action="store_true",
                    help="keep --model's manifest thresholds and hysteresis; search its caseless thresholds alone")
    ap.add_argument("--work", help="scratch directory (kept; default: a temporary one)")
    a = ap.parse_args()

    with open(os.path.join(a.model, "manifest.toml"), "rb") as f:
        old = tomllib.load(f)
    labels = old["labels"]
    types = [l[2:] for l in labels if l.startswith("B-")]
    work = a.work or tempfile.mkdtemp(prefix="veil-tune-")
    veil = Veil(a.veil, a.model, a.gold, work)
    veil.infer()
    print(f"word scores of {len(a.gold)} dev set(s) in {work}", file=sys.stderr)
    sets = []
    for g in a.gold:
        recs = [json.loads(l) for l in open(g, encoding="utf-8")]
        sets.append((g, {h: [r for r in recs if half(r) == h] for h in ("tune", "report")}))

    def manifest(th, ext, thl):
        return manifest_text(labels, a.max_seq_len, a.stride, th, old["version"], a.model, extend=ext, caseless=thl)

    def evaluate(th, ext=None, thl=None, part="tune"):
        """Figures per gold file on one half, with thresholds th (thl in text that does not
        capitalise words), through veil."""
        preds = veil.decode(manifest(th, ext or {}, thl or th))
        return {g: score(halves[part], preds[g]) for g, halves in sets}

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
    for part in ("tune", "report"):
        for g, r in evaluate(th, ext, thl, part).items():
            print(part, os.path.basename(g), json.dumps(r))
    with open(os.path.join(a.model, "manifest.toml"), "w") as f:
        f.write(manifest_text(labels, a.max_seq_len, a.stride, th, a.version, a.model, extend=ext, caseless=thl))
    print("thresholds", th, "caseless", thl, "extend", ext)


if __name__ == "__main__":
    main()
