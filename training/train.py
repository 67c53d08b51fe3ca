#!/usr/bin/env python3
"""Fine-tune a truncated MiniLM (first N transformer layers) as a BIO token classifier.

usage: train.py --data data/train.jsonl --base BASE_DIR --out runs/x --layers 3 [--max-steps N] [--max-minutes M]
                [--teacher MODEL.onnx --alpha A --temp T]

The tokenizer is the base model's uncased WordPiece (tokenizer.json). Every word-piece of an
entity gets a label (B- on the first piece of the entity, I- on the rest); [CLS]/[SEP]/padding
are ignored in the loss.

With --teacher (an exported classifier, e.g. the shipped 3-layer model), the student is
distilled: its loss is alpha * cross-entropy on the gold BIO labels + (1 - alpha) * T^2 *
KL(teacher || student) on the teacher's temperature-T softmax over the same windows. The teacher's
logits are computed once, before training, with onnxruntime.
"""
import argparse, json, math, os, random, time

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import BertConfig, BertForTokenClassification

ENTITIES = ["PERSON", "LOCATION", "ADDRESS", "DATE", "ORGANIZATION"]
LABELS = ["O"] + [f"{p}-{e}" for e in ENTITIES for p in ("B", "I")]
L2I = {l: i for i, l in enumerate(LABELS)}
CLS, SEP, PAD = 101, 102, 0


def load_tokenizer(path):
    tok = Tokenizer.from_file(path)
    tok.no_truncation()
    tok.no_padding()
    return tok


def encode_example(tok, ex, win):
    """Token ids + BIO label ids, cut into windows of at most `win` word-pieces."""
    enc = tok.encode(ex["text"], add_special_tokens=False)
    ids, offs = enc.ids, enc.offsets
    labels = [L2I["O"]] * len(ids)
    spans = sorted(ex["spans"], key=lambda s: s["start"])
    for s in spans:
        first = True
        for t, (a, b) in enumerate(offs):
            if b <= s["start"] or a >= s["end"]:
                continue
            labels[t] = L2I[("B-" if first else "I-") + s["label"]]
            first = False
    out = []
    if len(ids) <= win:
        out.append((ids, labels))
    else:
        step = win - 32
        for st in range(0, len(ids), step):
            out.append((ids[st:st + win], labels[st:st + win]))
            if st + win >= len(ids):
                break
    return out


def pack(items, win, frac, rng):
    """Concatenate random short windows into longer ones (up to `win` pieces).

    Word-pieces of texts joined by whitespace are the concatenation of their word-pieces, so a
    packed window is exactly what the tokenizer makes of several documents pasted together. It
    teaches the model every position of a long inference window, not only the first ~100.
    """
    short = [it for it in items if len(it[0]) < win // 2]
    rest = [it for it in items if len(it[0]) >= win // 2]
    rng.shuffle(short)
    out, cur_ids, cur_lab, target = [], [], [], 0
    for ids, lab in short:
        if not cur_ids:
            if rng.random() >= frac:
                out.append((ids, lab))
                continue
            target = rng.randint(win // 2, win)
        if len(cur_ids) + len(ids) > target:
            out.append((cur_ids, cur_lab))
            cur_ids, cur_lab, target = [], [], rng.randint(win // 2, win)
        cur_ids = cur_ids + ids
        cur_lab = cur_lab + lab
    if cur_ids:
        out.append((cur_ids, cur_lab))
    return rest + out


def teacher_logits(path, items, threads, bs=64):
    """The teacher's logits for every window (float16, one [len, labels] array per window)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    out = [None] * len(items)
    t0 = time.time()
    for k in range(0, len(order), bs):
        sel = order[k:k + bs]
        ids, att, _ = collate(items, sel)
        logits = sess.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": att.numpy()})[0]
        for r, i in enumerate(sel):
            out[i] = logits[r, 1:1 + len(items[i][0])].astype(np.float16)
        if k // bs % 200 == 0:
            print(f"teacher {k}/{len(order)} windows {(time.time() - t0) / 60:.1f} min", flush=True)
    return out


def distill_loss(student, teacher, lab, temp):
    """T^2 * KL(teacher_T || student_T), averaged over the labelled positions."""
    keep = lab != -100
    if not keep.any():
        return student.sum() * 0.0
    s = torch.log_softmax(student[keep] / temp, dim=-1)
    t = torch.log_softmax(teacher[keep] / temp, dim=-1)
    return torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean") * temp * temp


def batches(items, bs, rng):
    """Length-bucketed shuffled batches."""
    idx = list(range(len(items)))
    rng.shuffle(idx)
    chunk = bs * 50
    out = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c:c + chunk], key=lambda i: len(items[i][0]))
        out += [part[k:k + bs] for k in range(0, len(part), bs)]
    rng.shuffle(out)
    return out


def collate(items, sel):
    n = max(len(items[i][0]) for i in sel) + 2
    ids = np.zeros((len(sel), n), dtype=np.int64)
    att = np.zeros((len(sel), n), dtype=np.int64)
    lab = np.full((len(sel), n), -100, dtype=np.int64)
    for r, i in enumerate(sel):
        t, l = items[i]
        ids[r, 0] = CLS
        ids[r, 1:1 + len(t)] = t
        ids[r, 1 + len(t)] = SEP
        att[r, :len(t) + 2] = 1
        lab[r, 1:1 + len(t)] = l
    return torch.from_numpy(ids), torch.from_numpy(att), torch.from_numpy(lab)


def collate_teacher(soft, sel, n, c):
    out = np.zeros((len(sel), n, c), dtype=np.float32)
    for r, i in enumerate(sel):
        out[r, 1:1 + len(soft[i])] = soft[i]
    return torch.from_numpy(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--win", type=int, default=126, help="word-pieces per training window (excl. CLS/SEP)")
    ap.add_argument("--pack", type=float, default=0.0, help="fraction of short windows packed into long ones")
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=0)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher", help="ONNX classifier to distil from (same labels and tokenizer)")
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the gold-label loss when distilling")
    ap.add_argument("--temp", type=float, default=2.0, help="distillation temperature")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)

    tok = load_tokenizer(os.path.join(a.base, "tokenizer.json"))
    items = []
    with open(a.data, encoding="utf-8") as f:
        for line in f:
            items += encode_example(tok, json.loads(line), a.win)
    n_raw = len(items)
    items = pack(items, a.win, a.pack, rng)
    print(f"{n_raw} windows, {len(items)} after packing", flush=True)
    soft = teacher_logits(a.teacher, items, a.threads) if a.teacher else None

    model = BertForTokenClassification.from_pretrained(
        a.base, num_hidden_layers=a.layers, num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id=L2I)
    model.train()
    # The 30522x384 word-embedding matrix is frozen: it is most of the parameters, its
    # AdamW update dominated step time on 2 cores, and the pretrained vectors are kept.
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)

    steps_per_epoch = math.ceil(len(items) / a.bs)
    total = int(steps_per_epoch * a.epochs)
    if a.max_steps:
        total = min(total, a.max_steps)
    no_decay = ["bias", "LayerNorm.weight"]
    params = [
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and not any(k in n for k in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(params, lr=a.lr)
    limit = a.max_minutes * 60 if a.max_minutes else 0

    def progress(step, el):
        """Fraction of the run done: by steps, or by wall-clock time when --max-minutes is set."""
        p = step / total
        return max(p, el / limit) if limit else p

    def lr_at(p):
        warm = 0.05
        return a.lr * (p / warm if p < warm else max(0.0, (1 - p) / (1 - warm)))

    t0 = time.time()
    step = 0
    run_loss = 0.0
    done = False
    while not done:
        for sel in batches(items, a.bs, rng):
            ids, att, lab = collate(items, sel)
            out = model(input_ids=ids, attention_mask=att, labels=lab)
            loss = out.loss
            if soft is not None:
                t = collate_teacher(soft, sel, ids.shape[1], len(LABELS))
                loss = a.alpha * loss + (1 - a.alpha) * distill_loss(out.logits, t, lab, a.temp)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            for g in opt.param_groups:
                g["lr"] = lr_at(progress(step, time.time() - t0))
            opt.step(); opt.zero_grad(set_to_none=True)
            step += 1
            run_loss += loss.item()
            if step % 50 == 0:
                el = time.time() - t0
                print(f"step {step}/{total} loss {run_loss / 50:.4f} lr {opt.param_groups[0]['lr']:.2e} {el / 60:.1f} min", flush=True)
                run_loss = 0.0
            if step >= total or (limit and time.time() - t0 > limit):
                done = True
                break
    model.save_pretrained(a.out)
    with open(os.path.join(a.out, "labels.json"), "w") as f:
        json.dump(LABELS, f)
    print(f"saved to {a.out} after {step} steps, {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
