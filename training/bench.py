#!/usr/bin/env python3
"""Speed of an ONNX token classifier on 2 intra-op threads (onnxruntime, CPU).

usage: bench.py --onnx model.onnx --tokenizer tokenizer.json --texts notes.jsonl [--seq 128] [--batch 8]
                [--no-mask-input]

Throughput: all texts tokenized, cut into windows of `seq` (stride seq-2-32), run in batches;
KB/s = UTF-8 bytes of text / wall time (tokenization included). Latency: p50/p95 over 1 KB
prompts (first 1024 bytes of each text that long), each run alone as veil would.
"""
import argparse, json, statistics, time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit-kb", type=int, default=400)
    a = ap.parse_args()

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    tok = Tokenizer.from_file(a.tokenizer)
    tok.no_truncation(); tok.no_padding()

    texts, tot = [], 0
    for line in open(a.texts, encoding="utf-8"):
        t = json.loads(line)["text"]
        texts.append(t)
        tot += len(t.encode())
        if tot > a.limit_kb * 1024:
            break
    W = a.seq - 2
    step = W - a.overlap

    def run(text_list):
        wins = []
        for t in text_list:
            ids = tok.encode(t, add_special_tokens=False).ids
            starts = [0] if len(ids) <= W else list(range(0, len(ids) - W, step)) + [len(ids) - W]
            for s in starts:
                wins.append([101] + ids[s:s + W] + [102])
        wins.sort(key=len)
        for b in range(0, len(wins), a.batch):
            part = wins[b:b + a.batch]
            L = max(map(len, part))
            x = np.zeros((len(part), L), dtype=np.int64)
            m = np.zeros_like(x)
            for r, w in enumerate(part):
                x[r, :len(w)] = w; m[r, :len(w)] = 1
            feed = {"input_ids": x, "attention_mask": m}
            if "token_type_ids" in names:
                feed["token_type_ids"] = np.zeros_like(x)
            sess.run(None, feed)

    run(texts[:20])  # warm-up
    t0 = time.perf_counter()
    run(texts)
    el = time.perf_counter() - t0
    kb = tot / 1024
    one_kb = [t.encode()[:1024].decode("utf-8", "ignore") for t in texts if len(t.encode()) >= 1024][:200]
    lat = []
    for t in one_kb:
        t1 = time.perf_counter(); run([t]); lat.append((time.perf_counter() - t1) * 1000)
    lat.sort()
    print(json.dumps({"onnx": a.onnx, "seq": a.seq, "batch": a.batch, "kb": round(kb, 1), "seconds": round(el, 2),
                      "kb_per_s": round(kb / el, 1), "p50_ms_1kb": round(statistics.median(lat), 2),
                      "p95_ms_1kb": round(lat[int(0.95 * (len(lat) - 1))], 2), "n_1kb": len(lat)}))


if __name__ == "__main__":
    main()
