"""Benchmark results -> markdown tables, a PNG bar chart, JSON, and the README's Performance table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
README_MACHINES = "<!-- bench:machines -->"  # new machines' blocks go right after this line of the README


def machine_slug() -> str:
    """The CPU as a folder name, from /proc/cpuinfo's vendor, family and model (virtual machines often give
    every Xeon or EPYC the same model name): e.g. intel-family-6-model-207. Each machine's results live in
    their own folder and README block, so a run on one never replaces another's figures."""
    from vivit.backends import cpuinfo

    fields = cpuinfo()
    if not fields:  # no /proc/cpuinfo
        import platform

        return re.sub(r"[^a-z0-9]+", "-", (platform.processor() or platform.machine()).lower()).strip("-")
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(fields.get("vendor_id", ""), fields.get("vendor_id", "cpu").lower())
    return f"{vendor}-family-{fields.get('cpu family', 'x')}-model-{fields.get('model', 'x')}"


def readme_markers(slug: str) -> tuple[str, str]:
    return f"<!-- bench:start {slug} -->", f"<!-- bench:end {slug} -->"
SIZE_NAMES = {"b": "ViViT-B", "s": "small (384 wide, 6 heads, 12 layers)"}
DTYPES = {"fp32": "fp32", "bf16": "bf16 autocast (both sides)"}
VITPYTORCH_NAMES = {"fe": "Model 2 (factorised encoder)", "fsa": "Model 3 (factorised self-attention)"}


def precision(r: dict) -> str:
    return r["meta"].get("precision", "fp32")


# required speed-ups (theirs / ours) of the performance issue, by peer and timing
SPEEDUP_TARGETS = {("hf", "forward"): 1.2, ("hf", "train"): 1.1, ("vitpytorch", "forward"): 1.1, ("vitpytorch", "train"): 1.1}


def targets(r: dict) -> list[tuple[str, float, float, bool]]:
    """(claim, measured, required, met) for each target of the performance issue."""
    rows = []
    for size, res in r["hf"].items():
        for kind, label in (("forward", "forward"), ("train", "training step")):
            need = SPEEDUP_TARGETS["hf", kind]
            rows.append((f"Model 1 {label} vs HF, {SIZE_NAMES[size]}", res[f"{kind}_speedup"], need, res[f"{kind}_speedup"] >= need))
    for variant, res in r["vitpytorch"].items():
        for kind in ("forward", "train"):
            if f"{kind}_speedup" in res:
                value, need = res[f"{kind}_speedup"], SPEEDUP_TARGETS["vitpytorch", kind]
                rows.append((f"{VITPYTORCH_NAMES[variant]} {kind} vs vit-pytorch", value, need, value >= need))
    fe = next(row for row in r["variants"]["rows"] if row["preset"].endswith("-fe"))
    rows.append((f"Model 2 forward MFU ({precision(r)} GEMM peak)", fe["mfu"], 0.6, fe["mfu"] >= 0.6))
    mem = r["memory"]
    cut = memory_cut(mem["off"], mem["on"])
    rows.append(("Gradient checkpointing memory cut, Model 1, batch 1", cut, 2.0, cut >= 2.0))
    return rows


def one_line(res: dict) -> str:
    """A progress line for one finished comparison."""
    parts = [f"{kind} {res[f'{kind}_speedup']:.2f}x (ours {res[f'{kind}_ms']['ours']:.0f} ms, theirs {res[f'{kind}_ms']['theirs']:.0f} ms)"
             for kind in ("forward", "train") if f"{kind}_speedup" in res]
    if "rows" in res:
        parts = [f"{row['model']}: {row['latency_ms']:.0f} ms, MFU {row['mfu']:.0%}" for row in res["rows"]]
    if "compile_s" in res:
        parts = [f"compiled {res['speedup']:.2f}x eager (compile {res['compile_s']:.0f} s)"]
    if "max_abs_diff" in res:
        parts.append(f"max abs diff {res['max_abs_diff']:.1e}")
    return "; ".join(parts)


GEMM_DEFAULTS = {"fp32": "fp32 GEMM (`onednn_gemm(False)`)", "bf16": "bf16 GEMM (`widened_bf16_gemm(False)`)"}


def contenders(r: dict) -> tuple[str, ...]:
    """Timed contenders of a comparison: ours, ours with PyTorch's own GEMM (see timing.our_contenders; bf16 runs
    before the bf16 GEMM route had no such column) and theirs."""
    timed = next(iter(r["hf"].values()))["forward_ms"] if r.get("hf") else {}
    return tuple(name for name in ("ours", "ours, PyTorch GEMM", "theirs") if name in timed)


def rounds(m: dict) -> str:
    """'11 forward / 3 training ' where the run recorded its rounds (older results did not)."""
    return f"{m['rounds']} forward / {m['train_rounds']} training " if "rounds" in m else ""


def markdown(r: dict) -> str:
    m = r["meta"]
    isa = f"; {m['isa']}" if m.get("isa") else ""
    out = [f"Measured {m['date']} on {m['machine']} ({m.get('slug', 'CPU')}{isa}; {m['cores']} cores, {m['threads']} threads), torch {m['torch']}, "
           f"transformers {m['transformers']}, vit-pytorch {m['vit_pytorch']}. Batch 1, {DTYPES[precision(r)]}, {m['frames']} "
           f"frames at {m['image_size']} px, tubelet 2x16x16. Medians of {rounds(m)}interleaved rounds; speed-up = median over rounds "
           "of theirs / ours (> 1: ours is faster)." + (" \"ours, PyTorch GEMM\": the same model of ours with every linear "
           f"on PyTorch's own {GEMM_DEFAULTS[precision(r)]}, whatever route `vivit.backends` measured."
           if "ours, PyTorch GEMM" in contenders(r) else ""), "",
           "| comparison | " + " | ".join(f"{name} ms" for name in contenders(r)) + " | speed-up | target | met |",
           "|---|" + "---:|" * (len(contenders(r)) + 2) + "---|"]

    def times(ms: dict[str, float]) -> str:
        return " | ".join(f"{ms[name]:.0f}" for name in contenders(r))

    for size, res in r["hf"].items():
        for kind in ("forward", "train"):
            target = SPEEDUP_TARGETS["hf", kind]
            out.append(f"| Model 1 {kind} vs HF `VivitForVideoClassification`, {SIZE_NAMES[size]} | {times(res[f'{kind}_ms'])} | "
                       f"{res[f'{kind}_speedup']:.2f}x | {target}x | {'yes' if res[f'{kind}_speedup'] >= target else 'no'} |")
    for variant, res in r["vitpytorch"].items():
        for kind in ("forward", "train"):
            if f"{kind}_speedup" in res:
                target = SPEEDUP_TARGETS["vitpytorch", kind]
                out.append(f"| {VITPYTORCH_NAMES[variant]} {kind} vs vit-pytorch, ViViT-B | {times(res[f'{kind}_ms'])} | "
                           f"{res[f'{kind}_speedup']:.2f}x | {target}x | {'yes' if res[f'{kind}_speedup'] >= target else 'no'} |")
    alike = "; ".join(f"{VITPYTORCH_NAMES[variant]} {kind} {res[f'{kind}_ms']['ours, their choices']:.0f} ms, "
                      f"{res[f'{kind}_speedup_alike']:.2f}x" for variant, res in r["vitpytorch"].items()
                      for kind in ("forward", "train") if f"{kind}_speedup_alike" in res)
    if alike:
        out += ["", "Ours with vit-pytorch's choices (`qkv_bias=False, gelu_approximation=\"none\"`), what the "
                f"official qkv bias and tanh GELU cost: {alike}."]
    diffs = ", ".join(f"{SIZE_NAMES[s]} {res['max_abs_diff']:.1e}" for s, res in r["hf"].items())
    out += ["", f"Logits of ours vs HF after weight conversion, max abs diff: {diffs}.", ""]
    v = r["variants"]
    gemms = ", ".join(f"{name} {gflops:.0f}" for name, gflops in v["gemm_gflops"].items())
    out += [f"Variants at ViViT-B (FE temporal depth 4, 400 classes). {precision(r)} GEMM peak = the faster of {v['gemm_n']}^2 "
            f"matmuls timed in the same rounds, in GFLOP/s: {gemms}. Paper runtimes are TPU-v3 at 32 frames: "
            "compare the order.", "",
            "| model | params M | GFLOPs | ms | GFLOP/s | MFU | paper TPU ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in v["rows"]:
        out.append(f"| {row['model']} | {row['params_m']:.1f} | {row['gflops']:.0f} | {row['latency_ms']:.0f} | "
                   f"{row['gflops_per_s']:.0f} | {row['mfu']:.0%} | {row['paper_runtime_ms']} |")
    out += memory_table(r["memory"])
    if r.get("compile"):
        c = r["compile"]
        out += ["", f"`torch.compile` (inductor), Model 1 {SIZE_NAMES[c['size']]} forward: eager {c['forward_ms']['eager']:.0f} ms, "
                f"compiled {c['forward_ms']['compiled']:.0f} ms ({c['speedup']:.2f}x; compile time {c['compile_s']:.0f} s)."]
    out += ["", "| target | measured | required | met |", "|---|---:|---:|---|"]
    out += [f"| {claim} | {value:.3f} | {req} | {'yes' if ok else 'no'} |" for claim, value, req, ok in targets(r)]
    if r.get("data_pipeline"):
        out += ["", "Data pipeline (`benchmarks/data_pipeline.py`):", "", "```", r["data_pipeline"].strip(), "```"]
    return "\n".join(out) + "\n"


def memory_cut(off: dict, on: dict) -> float:
    """Step peak without checkpointing over with it; a tiny (--smoke) model's step may raise the resident set by
    nothing, counted as 1 MiB."""
    return off["step_peak_mb"] / max(on["step_peak_mb"], 1.0)


def memory_table(mem: dict) -> list[str]:
    """The training-step memory rows, with and without checkpointing, per batch."""
    out = ["", "Training-step peak memory, Model 1 ViViT-B (rise of the resident set during the second step of a fresh "
           "process; the first step also loads the compiled GELU kernel and libraries' pages once):", "",
           "| batch | gradient checkpointing | step peak MiB | first step MiB | process peak MiB | ms per step | cut |",
           "|---:|---|---:|---:|---:|---:|---:|"]
    for key, m in mem.items():
        cut = f"{memory_cut(mem[key.replace('on', 'off')], m):.2f}x" if key.startswith("on") else ""
        first = f"{m['first_step_peak_mb']:.0f}" if "first_step_peak_mb" in m else ""
        out.append(f"| {m.get('batch', 1)} | {key.split('@')[0]} | {m['step_peak_mb']:.0f} | {first} | "
                   f"{m['process_peak_mb']:.0f} | {m['step_ms']:.0f} | {cut} |")
    return out


def chart(r: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    labels, values = [], []
    for size, res in r["hf"].items():
        labels += [f"M1 fwd\nvs HF {size.upper()}", f"M1 train\nvs HF {size.upper()}"]
        values += [res["forward_speedup"], res["train_speedup"]]
    for variant, res in r["vitpytorch"].items():
        for kind in ("forward", "train"):
            if f"{kind}_speedup" in res:
                labels.append(f"{'M2' if variant == 'fe' else 'M3'} {'fwd' if kind == 'forward' else kind}\nvs vit-pt")
                values.append(res[f"{kind}_speedup"])
    axes[0].bar(labels, values, color="tab:blue")
    axes[0].axhline(1.0, color="black", lw=0.8)
    axes[0].axhline(1.1, color="tab:red", ls="--", lw=0.8, label="1.1x target (1.2x: Model 1 forward)")
    axes[0].set_ylabel("speed-up (theirs / ours)")
    axes[0].tick_params(axis="x", labelsize=7)
    axes[0].legend()
    rows = r["variants"]["rows"]
    names = [row["model"].split(":")[0] + ("\navg-pool" if "Average" in row["model"] else "") for row in rows]
    base_ours, base_paper = rows[0]["latency_ms"], rows[0]["paper_runtime_ms"]
    x = range(len(rows))
    axes[1].bar([i - 0.2 for i in x], [row["latency_ms"] / base_ours for row in rows], 0.4, label="ours (CPU)")
    axes[1].bar([i + 0.2 for i in x], [row["paper_runtime_ms"] / base_paper for row in rows], 0.4, label="paper (TPU-v3)")
    axes[1].set_xticks(list(x), names, fontsize=7)
    axes[1].set_ylabel("latency relative to Model 1")
    axes[1].legend()
    mem = r["memory"]
    axes[2].bar(["no checkpointing", "checkpointing"], [mem["off"]["step_peak_mb"], mem["on"]["step_peak_mb"]], color="tab:green")
    axes[2].set_ylabel("training-step peak MiB (Model 1, ViViT-B)")
    fig.suptitle(f"vivit benchmarks, {r['meta']['date']}, {r['meta']['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(r: dict, out_dir: Path, readme: Path | None = None) -> str:
    """Write latest.{md,png,json} to out_dir; replace this machine's README block (between its markers), or add
    one after README_MACHINES for a machine seen for the first time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(r)
    (out_dir / "latest.md").write_text(text)
    (out_dir / "latest.json").write_text(json.dumps(r, indent=2))
    chart(r, out_dir / "latest.png")
    if readme is not None and readme.exists():
        slug = r["meta"].get("slug", machine_slug())
        start, end = readme_markers(slug)
        content = readme.read_text()
        if start in content and end in content:
            head, rest = content.split(start, 1)
            readme.write_text(f"{head}{start}\n{text}{end}{rest.split(end, 1)[1]}")
        elif README_MACHINES in content:
            head, tail = content.split(README_MACHINES, 1)
            block = f"\n\n### {r['meta']['machine']} ({slug})\n\n{start}\n{text}{end}"
            readme.write_text(f"{head}{README_MACHINES}{block}{tail}")
    return text
