#!/usr/bin/env python3
"""Export a trained checkpoint to ONNX, quantize it to int8 and write the tokenizer.

usage: export.py --ckpt runs/x --base BASE_DIR --out ../models/classifier [--no-fuse]

Writes OUT/model.onnx (int8, dynamic quantization, weights stored as uint8: see portable_weights),
OUT/tokenizer.json (truncation and padding removed), and OUT/model.fp32.onnx is left in the
checkpoint dir for reference.
Inputs: input_ids, attention_mask (int64 [batch, seq]); output: logits (float32 [batch, seq, labels]).
"""
import argparse, json, os

import torch
from transformers import BertForTokenClassification


def portable_weights(path):
    """Store the int8 weights of MatMulInteger and QAttention as uint8 (w + 128, zero point 128).

    The integer products are the same, but ONNX Runtime runs uint8 x int8 products on x86 CPUs
    without VNNI (AVX2, AVX-512 before Cascade Lake, AMD before Zen 4) with `vpmaddubsw`, which
    saturates pairs of products at 16 bits: the v5 model lost 0.9 points of physionet recall on
    an AMD EPYC (AVX2) against a Xeon with VNNI. uint8 x uint8 products take a kernel that widens
    to 16 bits before multiplying, so every CPU computes the same integers.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    inits = {i.name: i for i in m.graph.initializer}
    names = set()
    for n in m.graph.node:
        if n.op_type == "MatMulInteger":
            names |= {n.input[1], n.input[3]}
        elif n.op_type == "QAttention":
            names |= {n.input[1], n.input[7]}
    for name in sorted(names):
        a = numpy_helper.to_array(inits[name])
        if a.dtype == np.int8:
            inits[name].CopyFrom(numpy_helper.from_array((a.astype(np.int16) + 128).astype(np.uint8), name))
    onnx.save(m, path)
    return len(names)


class Wrapper(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        # token_type_ids are all zero for single sequences; the model's buffer supplies them,
        # so the graph does not need them as an input.
        return self.m(input_ids=input_ids, attention_mask=attention_mask).logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-fuse", action="store_true", help="skip onnxruntime transformer fusions")
    a = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(a.out, exist_ok=True)

    model = BertForTokenClassification.from_pretrained(a.ckpt, attn_implementation="eager").eval()
    w = Wrapper(model).eval()
    ids = torch.randint(1000, 2000, (2, 16), dtype=torch.long)
    att = torch.ones_like(ids)
    fp32 = os.path.join(a.ckpt, "model.fp32.onnx")
    torch.onnx.export(
        w, (ids, att), fp32, input_names=["input_ids", "attention_mask"], output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                      "logits": {0: "batch", 1: "seq"}},
        opset_version=17, do_constant_folding=True, dynamo=False)

    src = fp32
    if not a.no_fuse:
        from onnxruntime.transformers import optimizer
        cfg = model.config
        opt = optimizer.optimize_model(fp32, model_type="bert", num_heads=cfg.num_attention_heads,
                                       hidden_size=cfg.hidden_size, opt_level=1)
        src = os.path.join(a.ckpt, "model.fp32.opt.onnx")
        opt.save_model_to_file(src)
        print("fused ops:", opt.get_fused_operator_statistics())

    from onnxruntime.quantization import QuantType, quantize_dynamic
    dst = os.path.join(a.out, "model.onnx")
    import onnx
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    print(f"weights stored as uint8: {portable_weights(dst)} tensors")
    print(f"wrote {dst} ({os.path.getsize(dst) / 1e6:.1f} MB)")

    tj = json.load(open(os.path.join(a.base, "tokenizer.json"), encoding="utf-8"))
    tj["truncation"] = None
    tj["padding"] = None
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
