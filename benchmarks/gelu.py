"""The MLP's tanh GELU: PyTorch's kernel, the compiled sigmoid form (`vivit.model.activations`) and, for
scale, the erf GELU, on a ViViT-B MLP activation; forward and forward + backward, fp32 and bf16, interleaved.
Prints ms (median of rounds) and the max |difference| from `F.gelu(approximate="tanh")` and from float64.

    .venv/bin/python benchmarks/gelu.py --rounds 9
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from timing import interleave, setup, summarise
from vivit.model.activations import compiled_gelu_tanh


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="1576x3072", help="rows x hidden (default: ViViT-B, 8 frames of 197 tokens)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    setup(args.threads)
    shape = tuple(int(n) for n in args.shape.split("x"))
    kernels = {"aten tanh": lambda x: F.gelu(x, approximate="tanh"), "compiled tanh": compiled_gelu_tanh(),
               "aten erf": F.gelu}
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype).requires_grad_()
        grad = torch.ones_like(x)

        def forward(fn):
            def run():
                with torch.no_grad():
                    fn(x)
            return run

        fwd = summarise(interleave({name: forward(fn) for name, fn in kernels.items()}, args.rounds))
        train = summarise(interleave({name: (lambda fn=fn: fn(x).backward(grad)) for name, fn in kernels.items()},
                                     args.rounds))
        with torch.no_grad():
            reference, exact = F.gelu(x, approximate="tanh").double(), F.gelu(x.double(), approximate="tanh")
            ours = compiled_gelu_tanh()(x).double()
        out[str(dtype).removeprefix("torch.")] = {
            "forward_ms": {k: round(v, 2) for k, v in fwd.items()},
            "forward_backward_ms": {k: round(v, 2) for k, v in train.items()},
            "max_abs_diff_compiled_vs_aten": float((ours - reference).abs().max()),
            "max_abs_diff_vs_float64": {"compiled": float((ours - exact).abs().max()),
                                        "aten": float((reference - exact).abs().max())}}
    print(json.dumps({"shape": shape, "threads": args.threads, **out}, indent=1))


if __name__ == "__main__":
    main()
