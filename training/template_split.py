#!/usr/bin/env python3
"""Generalization check for the public templates used in training.

gen_data.py builds 10% of its examples from presidio-evaluator's templates.txt but never from
every fifth template (line number divisible by 5). A data set generated from the same template
file (presidio-synth) can therefore be split: records whose text matches a held-out template and
records whose text matches a template the model was trained on. If the figures of the two groups
are close, the model learnt the entity shapes, not the sentences.

usage: template_split.py --templates templates.txt --gold GOLD.jsonl --pred PRED.jsonl
"""
import argparse, json, re, sys

from scoring import score

PLACEHOLDER = re.compile(r"\{\{\w+\}\}")


def template_regex(line):
    t = line.rstrip("\n").replace("\\n", "\n").replace("\\,", ",")
    parts = PLACEHOLDER.split(t)
    if len(parts) == 1:
        return None  # no placeholder: too generic to attribute a record to it
    body = "(?:.+?)".join(re.escape(p) for p in parts)
    return re.compile(body, re.IGNORECASE | re.DOTALL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--templates", required=True)
    ap.add_argument("--gold", required=True)
    ap.add_argument("--pred", required=True)
    a = ap.parse_args()
    held, seen = [], []
    for i, line in enumerate(open(a.templates, encoding="utf-8", errors="replace"), 1):
        rx = template_regex(line) if line.strip() else None
        if rx is not None:
            (held if i % 5 == 0 else seen).append(rx)
    gold = [json.loads(l) for l in open(a.gold, encoding="utf-8")]
    preds = {}
    for l in open(a.pred, encoding="utf-8"):
        r = json.loads(l)
        preds[r["id"]] = r["spans"]
    groups = {"held-out templates": [], "trained templates": [], "unmatched or both": []}
    for g in gold:
        text = g["text"].strip()
        in_held = any(rx.fullmatch(text) for rx in held)
        in_seen = any(rx.fullmatch(text) for rx in seen)
        key = "held-out templates" if in_held and not in_seen else "trained templates" if in_seen and not in_held else "unmatched or both"
        groups[key].append(g)
    print(f"{'group':22} {'records':>7} {'recall':>7} {'precision':>9} {'leak':>6}")
    for name, recs in groups.items():
        if not recs:
            continue
        s = score(recs, preds)
        print(f"{name:22} {len(recs):7d} {s['char_recall']:7.3f} {s['char_precision']:9.3f} {s['entity_leak_rate']:6.3f}")


if __name__ == "__main__":
    sys.exit(main())
