"""In-process copy of the figures of shared/eval/score.py (for threshold search).

The reported numbers always come from running shared/eval/score.py itself; this module only
makes the grid search fast. It follows the same rules: non-whitespace characters, labels ignored
for char recall/precision, NEUTRAL gold labels neither required nor penalised.
"""
NEUTRAL = {"TITLE", "NRP", "ORGANIZATION", "AGE"}


def score(gold_recs, preds):
    tp = fn = fp = 0
    ent_total = ent_leaked = 0
    doc_pos = doc_pos_hit = doc_neg = doc_neg_hit = 0
    for g in gold_recs:
        text = g["text"]
        p = preds.get(g["id"], [])
        n = len(text)
        prot = bytearray(n)
        neut = bytearray(n)
        for s in g["spans"]:
            for i in range(s["start"], min(s["end"], n)):
                if s["label"] in NEUTRAL:
                    neut[i] = 1
                else:
                    prot[i] = 1
        cov = bytearray(n)
        for s in p:
            for i in range(max(0, s["start"]), min(s["end"], n)):
                cov[i] = 1
        for i, ch in enumerate(text):
            if ch.isspace():
                continue
            if prot[i]:
                if cov[i]:
                    tp += 1
                else:
                    fn += 1
            elif cov[i] and not neut[i]:
                fp += 1
        ps = [s for s in g["spans"] if s["label"] not in NEUTRAL]
        for s in ps:
            chars = [i for i in range(s["start"], min(s["end"], n)) if not text[i].isspace()]
            if chars:
                ent_total += 1
                if any(not cov[i] for i in chars):
                    ent_leaked += 1
        if ps:
            doc_pos += 1
            doc_pos_hit += bool(p)
        else:
            doc_neg += 1
            doc_neg_hit += bool(p)
    r = tp / max(tp + fn, 1)
    pr = tp / max(tp + fp, 1)
    return {"char_recall": round(r, 4), "char_precision": round(pr, 4),
            "char_f2": round(5 * pr * r / max(4 * pr + r, 1e-9), 4),
            "entity_leak_rate": round(ent_leaked / max(ent_total, 1), 4),
            "doc_recall": round(doc_pos_hit / max(doc_pos, 1), 4), "doc_fpr": round(doc_neg_hit / max(doc_neg, 1), 4)}
