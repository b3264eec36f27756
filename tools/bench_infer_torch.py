#!/usr/bin/env python3
"""transformers reference for `arlm bench train --infer`: GPT-2 124M shape (random init),
torch.set_num_threads(2), eager. Decode: a 64-token prompt, then 32 single-token steps with
past_key_values (median ms/step). Scoring: 8 sequences x 128 tokens in one batch, log-softmax
and gather (median of 3). Prints one JSON line."""
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

torch.set_num_threads(2)
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config()).eval()
V = model.config.vocab_size
with torch.no_grad():
    prompt = torch.tensor([[i * 7919 % V for i in range(64)]])
    out = model(prompt, use_cache=True)
    past = out.past_key_values
    times = []
    for i in range(32):
        tok = torch.tensor([[(i * 31) % V]])
        t0 = time.perf_counter()
        out = model(tok, past_key_values=past, use_cache=True)
        torch.log_softmax(out.logits[:, -1], -1)
        times.append(time.perf_counter() - t0)
        past = out.past_key_values
    times.sort()
    decode_ms = times[len(times) // 2] * 1e3
    x = torch.tensor([[(i * 131 + s * 17) % V for i in range(128)] for s in range(8)])
    st = []
    for _ in range(3):
        t0 = time.perf_counter()
        lp = torch.log_softmax(model(x).logits[:, :-1], -1).gather(-1, x[:, 1:, None])
        st.append(time.perf_counter() - t0)
    st.sort()
print(json.dumps({"decode_ms": decode_ms, "score_tokens_per_s": 8 * 128 / st[1]}))
