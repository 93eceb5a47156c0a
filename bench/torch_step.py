"""The reference for bench section gpu's `gpu_vs_torch`: one training step (forward, backward, Adam)
of this project's GPT in PyTorch eager float32 on the GPU, TF32 off, timed with CUDA synchronisation.

The model is ours, op for op: learned position embeddings, pre-LayerNorm blocks with a fused QKV
linear, causal attention written as matmul + mask + softmax (as ours; no fused attention kernel),
a 4h GELU (tanh) MLP, a final LayerNorm and an LM head tied to the word embedding, mean
cross-entropy of each position's next token. Prints progress to stderr and one JSON line to stdout.
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def parse():
    p = argparse.ArgumentParser()
    for name in ('layers', 'hidden', 'heads', 'vocab', 'positions', 'batch', 'seq', 'runs'):
        p.add_argument('--' + name, type=int, required=True)
    return p.parse_args()


class Block(torch.nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(hidden, eps=1e-5)
        self.qkv = torch.nn.Linear(hidden, 3 * hidden)
        self.proj = torch.nn.Linear(hidden, hidden)
        self.ln2 = torch.nn.LayerNorm(hidden, eps=1e-5)
        self.fc1 = torch.nn.Linear(hidden, 4 * hidden)
        self.fc2 = torch.nn.Linear(4 * hidden, hidden)

    def forward(self, x, mask):
        b, t, h = x.shape
        d = h // self.heads
        q, k, v = self.qkv(self.ln1(x)).view(b, t, self.heads, 3 * d).split(d, dim=3)
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * (1 / math.sqrt(d)) + mask
        context = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, h)
        x = x + self.proj(context)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate='tanh'))


class GPT(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.words = torch.nn.Embedding(a.vocab, a.hidden)
        self.positions = torch.nn.Embedding(a.positions, a.hidden)
        self.blocks = torch.nn.ModuleList(Block(a.hidden, a.heads) for _ in range(a.layers))
        self.norm = torch.nn.LayerNorm(a.hidden, eps=1e-5)
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def forward(self, ids):
        b, t = ids.shape
        x = self.words(ids) + self.positions(torch.arange(t, device=ids.device))
        mask = torch.full((t, t), float('-inf'), device=ids.device).triu(1)
        for block in self.blocks:
            x = block(x, mask)
        logits = self.norm(x) @ self.words.weight.t()
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def main():
    a = parse()
    if not torch.cuda.is_available():
        sys.exit('torch sees no CUDA device')
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device('cuda')
    torch.manual_seed(0)
    model = GPT(a).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids = (torch.arange(a.batch * a.seq, device=device) * 2654435761 % 50257).view(a.batch, a.seq)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(ids)
        loss.backward()
        optimizer.step()
        return loss

    step()
    torch.cuda.synchronize()
    times = []
    for run in range(a.runs):
        start = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
        print(f'step {run + 1}/{a.runs}: {times[-1]:.1f} ms, loss {loss.item():.4f}', file=sys.stderr)
    print(json.dumps({'step_ms': statistics.median(times), 'device': torch.cuda.get_device_name(0)}))


if __name__ == '__main__':
    main()
