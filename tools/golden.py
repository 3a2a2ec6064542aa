#!/usr/bin/env python3
"""golden.py - golden logits from Hugging Face transformers for a Qwen3.5-MoE checkpoint.

    python3 tools/golden.py DIR OUT_PREFIX [--lengths 1,5,63,64,65,130,300] [--steps 16] [--seed 0]

Loads DIR (config.json + model.safetensors, e.g. written by build/mkmodel) with
Qwen3_5MoeForCausalLM, eager attention and eager experts, on CUDA when there is one, and for
each prompt length runs a prefill over random token ids (use_cache=True, logits at every
position) and then --steps greedy decode steps through the cache, each feeding the argmax of
the step before (the first feeds the argmax of the last prefill row). It does this twice:

    OUT_PREFIX-f32.bin    weights and compute in float32 (TF32 off): the reference for the
                          float32 CPU path, which should match it to about 1e-4 relative L2
    OUT_PREFIX-bf16.bin   the same in bfloat16: how far transformers' own bf16 run lands
    OUT_PREFIX.txt        versions, options, and the bf16-vs-f32 distance per case (the
                          yardstick a bf16 GPU path is judged by)

Both .bin files are QGLD v1 (../shared/fixtures/README.md), little-endian: "QGLD", u32 1,
u32 n_cases; per case u32 T, u32 D, u32 V, i32 prompt[T], i32 fed[D], f32 prefill[T][V],
f32 decode[D][V]. The prompts are the same in both files (a CPU torch.Generator seeded with
--seed); fed[] is each run's own argmax chain. Needs torch and transformers >= 5 (written for
torch 2.11 and transformers 5.17), and for a deterministic reference no flash-linear-attention
or causal-conv1d installed (MODEL.md section 6, gotcha 2): the pure-torch kernels are the spec.
"""
import argparse
import importlib.util
import struct
import sys

import numpy as np
import torch
import transformers
from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig


def ieee_fp32():
    """Full-precision float32 matmuls and convolutions (cuDNN allows TF32 by default)."""
    if hasattr(torch.backends, "fp32_precision"):  # torch >= 2.9
        torch.backends.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def load(path, dtype, device):
    """The model with eager attention and eager experts; stops if any weight was not loaded."""
    kw = dict(dtype=dtype, attn_implementation="eager", output_loading_info=True)
    try:
        model, info = Qwen3_5MoeForCausalLM.from_pretrained(path, experts_implementation="eager", **kw)
    except TypeError as e:
        print(f"note: from_pretrained refused experts_implementation ({e}); setting it after loading")
        model, info = Qwen3_5MoeForCausalLM.from_pretrained(path, **kw)
    if getattr(model.config, "_experts_implementation", None) != "eager":
        if not hasattr(model, "set_experts_implementation"):
            sys.exit("error: this transformers has no set_experts_implementation; cannot select eager experts")
        model.set_experts_implementation("eager")
    got = (model.config._attn_implementation, getattr(model.config, "_experts_implementation", None))
    if got != ("eager", "eager"):
        sys.exit(f"error: attention/experts implementations are {got}, not eager/eager")
    bad = {k: info.get(k) for k in ("missing_keys", "mismatched_keys", "error_msgs") if info.get(k)}
    if bad:
        sys.exit(f"error: the checkpoint did not load cleanly: {bad}")
    ignored = len(info.get("unexpected_keys") or [])
    print(f"loaded {path} as {dtype}: attention and experts eager, {ignored} unexpected keys ignored")
    return model.to(device).eval()


@torch.no_grad()
def run_case(model, prompt, steps, device):
    """Prefill logits [T, V], the fed tokens [D] and the decode logits [D, V], all float32 on CPU."""
    out = model(input_ids=prompt[None].to(device), use_cache=True)
    prefill = out.logits[0].float().cpu()
    past, fed, decode = out.past_key_values, [], []
    tok = int(prefill[-1].argmax())
    for _ in range(steps):
        fed.append(tok)
        out = model(input_ids=torch.tensor([[tok]], device=device), past_key_values=past, use_cache=True)
        past = out.past_key_values
        decode.append(out.logits[0, -1].float().cpu())
        tok = int(decode[-1].argmax())
    V = prefill.shape[1]
    return prefill, fed, torch.stack(decode) if decode else torch.zeros(0, V)


def write_qgld(path, prompts, results):
    with open(path, "wb") as f:
        f.write(b"QGLD" + struct.pack("<II", 1, len(prompts)))
        for prompt, (prefill, fed, decode) in zip(prompts, results):
            T, V = prefill.shape
            f.write(struct.pack("<III", T, len(fed), V))
            f.write(np.asarray(prompt.tolist(), dtype="<i4").tobytes())
            f.write(np.asarray(fed, dtype="<i4").tobytes())
            f.write(prefill.numpy().astype("<f4").tobytes())
            f.write(decode.numpy().astype("<f4").tobytes())
    print(f"wrote {path}")


def rel_l2(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def yardstick(prompts, f32, bf16):
    """One line per case: bf16 against f32 over the prefill, and over the decode steps up to
    the first one where the two runs fed different tokens (after that they see other contexts)."""
    lines = []
    for prompt, (p32, fed32, d32), (p16, fed16, d16) in zip(prompts, f32, bf16):
        T = len(prompt)
        agree = int((p16.argmax(1) == p32.argmax(1)).sum())
        same = 0
        while same < len(fed32) and fed32[same] == fed16[same]:
            same += 1
        dec = max((rel_l2(d16[s], d32[s]) for s in range(same)), default=0.0)
        lines.append(f"T={T}: bf16 vs f32 prefill rel L2 {rel_l2(p16, p32):.3e}, top-1 agree {agree}/{T}; "
                     f"decode: same tokens fed for {same}/{len(fed32)} steps, worst rel L2 {dec:.3e}")
    return lines


def main():
    ap = argparse.ArgumentParser(description="golden logits (QGLD v1) from transformers")
    ap.add_argument("dir")
    ap.add_argument("out_prefix")
    ap.add_argument("--lengths", default="1,5,63,64,65,130,300")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    lengths = [int(x) for x in a.lengths.split(",")]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fast = [m for m in ("fla", "causal_conv1d") if importlib.util.find_spec(m)]
    if fast:
        print(f"warning: {fast} installed: transformers may use those kernels instead of the torch reference")
    ieee_fp32()
    torch.manual_seed(a.seed)
    vocab = Qwen3_5MoeTextConfig.from_pretrained(a.dir).vocab_size
    g = torch.Generator().manual_seed(a.seed)
    prompts = [torch.randint(0, vocab, (T,), generator=g, dtype=torch.int64) for T in lengths]

    runs = {}
    for tag, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        model = load(a.dir, dtype, device)
        runs[tag] = [run_case(model, p, a.steps, device) for p in prompts]
        write_qgld(f"{a.out_prefix}-{tag}.bin", prompts, runs[tag])
        del model
        if device == "cuda":
            torch.cuda.empty_cache()

    lines = yardstick(prompts, runs["f32"], runs["bf16"])
    for line in lines:
        print(line)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    with open(f"{a.out_prefix}.txt", "w") as f:
        f.write(f"checkpoint: {a.dir}\n")
        f.write(f"transformers {transformers.__version__}, torch {torch.__version__}, "
                f"cuda {torch.version.cuda}, device {gpu}\n")
        f.write(f"options: lengths {lengths}, steps {a.steps}, seed {a.seed}; Qwen3_5MoeForCausalLM, "
                f"attn_implementation eager, experts_implementation eager, fp32 matmul/conv ieee; "
                f"fast kernels installed: {fast or 'none'}\n")
        f.write("yardstick (transformers bf16 run against its float32 run):\n")
        f.writelines(line + "\n" for line in lines)
    print(f"wrote {a.out_prefix}.txt")


if __name__ == "__main__":
    main()
