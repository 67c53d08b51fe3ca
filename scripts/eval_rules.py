#!/usr/bin/env python3
"""What each classifier decoding rule is worth on both dev sets (`make eval-rules`).

usage: eval_rules.py [--veil target/release/veil] [--json] [--keep DIR]

Runs `veil scan --jsonl DEV OUT --ablate DIR` on every dev set (the model runs once per record;
DIR/<rule>.jsonl is the output without that rule), scores the output with and without each rule
on both fixed halves (scripts/eval_halves.py) and prints, per rule, what switching it off
changes: char recall, char precision, entity leak rate and document false-positive rate. A rule
pays when switching it off makes the tune half worse on some set and the report half agrees;
one that pays nowhere is a candidate for removal (`classifier.rules_off` switches it off).
"""
import json, os, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from eval_halves import SHARED, evaluate  # noqa: E402

SETS = ["physionet-deid", "presidio-synth"]
SHOWN = [("char_recall", "recall", 1), ("char_precision", "precision", 1),
         ("identifying_leak_rate", "ident. leak", -1),
         ("entity_leak_rate", "leak", -1), ("doc_fpr", "doc FPR", -1)]


def arg(name, default=None):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def main():
    veil = arg("--veil", os.path.join(HERE, "..", "target", "release", "veil"))
    keep = arg("--keep")
    work = keep or tempfile.mkdtemp(prefix="veil-rules-")
    os.makedirs(work, exist_ok=True)
    table = {}
    for ds in SETS:
        gold = os.path.join(SHARED, "datasets", f"{ds}.dev.jsonl")
        out, ablate = os.path.join(work, f"{ds}.jsonl"), os.path.join(work, ds)
        subprocess.run([veil, "scan", "--jsonl", gold, out, "--ablate", ablate], check=True,
                       env={**os.environ, "RUST_LOG": "warn"})
        base = evaluate(gold, out)
        table.setdefault("(all rules)", {})[ds] = base
        for name in sorted(os.listdir(ablate)):
            rule = name.removesuffix(".jsonl")
            table.setdefault(rule, {})[ds] = evaluate(gold, os.path.join(ablate, name))
    if "--json" in sys.argv:
        print(json.dumps(table))
        return
    base = table["(all rules)"]
    print("Change when the rule is switched off (tune half / report half); + is better without it.")
    for rule, by_set in table.items():
        print(f"\n{rule}")
        for ds, halves in by_set.items():
            cells = []
            for key, label, sign in SHOWN:
                if rule == "(all rules)":
                    cells.append(f"{label} {halves['tune'][key]:.4f} / {halves['report'][key]:.4f}")
                    continue
                d = [sign * (halves[h][key] - base[ds][h][key]) for h in ("tune", "report")]
                cells.append(f"{label} {d[0]:+.4f} / {d[1]:+.4f}")
            print(f"  {ds:16} " + "   ".join(cells))


if __name__ == "__main__":
    main()
