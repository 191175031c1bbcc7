"""Training-step throughput and MFU of the full-width C3D classifier on one GPU.

    python benchmarks/gpu_bench.py                 # on a CUDA machine (benchmarks/gpu.sh runs it)
    python benchmarks/gpu_bench.py --cpu-smoke     # tiny sizes on the CPU: checks the script

One training step as mer.train.finetune takes it: ClassifierC3D (C3D width 1.0, K=16,
S=112, BatchNorm, head 256, 3 classes, every block trainable), forward under bf16 autocast
or in fp32, FocalLoss (gamma 2, class-balance alpha) outside autocast, backward, AdamW, batch
32. The batch is already on the GPU as float: the input pipeline is not measured.
Variants: precision fp32 (TF32 off), tf32 (fp32 with TF32 tensor cores, PyTorch's default
for cuDNN convolutions), bf16 autocast; NCDHW or channels_last_3d memory format; eager or
torch.compile (default mode). A compiled variant runs in a child process with a time bound
(--compile-timeout); one that fails or overruns is reported as skipped, with the reason.
Each variant: warm-up steps, then timed steps between torch.cuda.synchronize() calls.

With --tries, the rows are instead the MFU tries from the training loops' fast path (bf16
autocast, channels_last_3d, torch.compile, fused AdamW, batch 32): each row changes one thing
(eager; cudnn.benchmark; batch 64, 128; compile mode max-autotune-no-cudagraphs; CUDA graphs
through mode reduce-overhead; NCDHW instead of channels_last_3d), and a last row combines the
larger batch, cudnn.benchmark and max-autotune. The JSON goes to gpu_tries.json by default.

MFU = achieved FLOP/s / peak FLOP/s, achieved = count_flops(model, 16, 112) x 3 (forward +
backward, the usual 1 + 2 approximation) x batch / seconds per step. Peaks are dense (no
sparsity) figures from NVIDIA's data sheets, chosen by device name and precision: H100 SXM
and H200 bf16 989 TFLOP/s, TF32 495, fp32 (no tensor cores) 67. The JSON names the peak
each row divides by.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# Dense TFLOP/s by precision (NVIDIA H100 / H200 / A100 data sheets; sparsity figures halved).
PEAKS = [
    ("H100 NVL", {"bf16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    ("H100 PCIe", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0}),  # SXM (80GB HBM3)
    ("H200", {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0}),  # same compute as H100 SXM
    ("A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
]

# The step grid: fp32/bf16 x NCDHW/channels_last_3d x eager/compiled plus TF32 eager; eager
# first, so a slow compile cannot crowd them out.
def variant(precision: str, channels_last: bool = False, compile: str | None = None, **extra) -> dict:
    """One row's settings: precision, memory format, compile mode (None: eager), and for the
    tries batch (None: --batch), cudnn_benchmark (None: --cudnn-benchmark), fused AdamW."""
    return {"precision": precision, "channels_last_3d": channels_last, "compile": compile,
            "batch": None, "cudnn_benchmark": None, "fused": False, **extra}  # fmt: skip


VARIANTS = [variant(p, cl) for p in ("fp32", "bf16", "tf32") for cl in (False, True)] + [
    variant(p, cl, "default") for p in ("bf16", "fp32") for cl in (False, True)
]
# The MFU tries: the loops' fast path (mer.train.runtime: bf16, channels_last_3d, compile,
# fused AdamW on CUDA), then one change each, then the likely-best combination.
FAST = {"channels_last": True, "compile": "default", "fused": True}
TRIES = [
    variant("bf16", **{**FAST, "compile": None}),  # eager: what compile adds in this step
    variant("bf16", **FAST),
    variant("bf16", **FAST, cudnn_benchmark=True),
    variant("bf16", **FAST, batch=64),
    variant("bf16", **FAST, batch=128),
    variant("bf16", **{**FAST, "compile": "reduce-overhead"}),  # CUDA graphs
    variant("bf16", **{**FAST, "channels_last": False}),
    # Autotuning compiles slowest: last, so that the budget cuts these first.
    variant("bf16", **{**FAST, "compile": "max-autotune-no-cudagraphs"}),
    variant("bf16", **{**FAST, "compile": "max-autotune-no-cudagraphs"}, batch=128,
            cudnn_benchmark=True),  # fmt: skip
]


def peak_for(device_name: str, precision: str) -> float | None:
    for key, peaks in PEAKS:
        if key.lower() in device_name.lower():
            return peaks[precision]
    return None


def variant_name(v: dict) -> str:
    name = v["precision"] + (" +cl3d" if v["channels_last_3d"] else "")
    if v["compile"]:
        name += " +compile" + ("" if v["compile"] == "default" else f"({v['compile']})")
    name += " +fused" if v["fused"] else ""
    name += " +cudnn.benchmark" if v["cudnn_benchmark"] else ""
    return name + (f" batch {v['batch']}" if v["batch"] else "")


def build_model(args):
    from mer.train.models import C3D, ClassifierC3D

    backbone = C3D(frames=args.k, size=args.size, width=args.width, batch_norm=True)
    return ClassifierC3D(backbone, num_classes=3, hidden=256, dropout=0.5)


def measure(args, v: dict) -> dict:
    """Build the model, warm up, time training steps; one variant, in this process."""
    import torch

    from mer.train.losses import FocalLoss, class_balance_alpha
    from mer.train.models import count_flops
    from mer.train.step import train_step

    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    precision, batch = v["precision"], v["batch"] or args.batch
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    cudnn_benchmark = args.cudnn_benchmark if v["cudnn_benchmark"] is None else v["cudnn_benchmark"]
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.manual_seed(0)
    model = build_model(args)
    flops = count_flops(model, args.k, args.size)
    fmt = torch.channels_last_3d if v["channels_last_3d"] else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    loss_fn = FocalLoss(gamma=2.0, alpha=class_balance_alpha([250, 109, 83], 0.5)).to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-4, weight_decay=1e-4, fused=True if v["fused"] else None
    )
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 3, args.k, args.size, args.size, generator=g) * 2 - 1).to(device)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, 3, (batch,), generator=g).to(device)
    forward = torch.compile(model, mode=v["compile"]) if v["compile"] else model
    bf16 = precision == "bf16"

    def step() -> torch.Tensor:
        # The step both training loops run (mer.train.step).
        return train_step(forward, loss_fn, opt, (x,), y, amp=bf16)[0]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    # Losses read at once: under CUDA graphs (mode reduce-overhead) a later replay may reuse
    # the memory of an earlier step's outputs.
    first = float(step())  # compiles, picks cuDNN algorithms
    sync()
    first_s = time.perf_counter() - t0
    for _ in range(args.warmup - 1):
        step()
    sync()
    times = []
    deadline = time.perf_counter() + args.max_timed_s
    for i in range(args.iters):
        t = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t)
        if time.perf_counter() > deadline and i >= 2:
            break
    times.sort()
    per_step = times[len(times) // 2]  # median: one slow step (a GC, a neighbour) is dropped
    achieved = 3 * flops * batch / per_step
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    peak = peak_for(name, precision) if device.type == "cuda" else None
    return {
        "variant": variant_name(v),
        **v,
        "batch": batch,
        "cudnn_benchmark": cudnn_benchmark,
        "status": "ok",
        "first_step_s": round(first_s, 3),
        "timed_steps": len(times),
        "step_ms_median": round(per_step * 1e3, 3),
        "step_ms_min": round(times[0] * 1e3, 3),
        "clips_per_s": round(batch / per_step, 2),
        "achieved_tflops": round(achieved / 1e12, 3),
        "peak_tflops": peak,
        "peak_used": f"{precision} dense" if peak else None,
        "mfu": round(achieved / (peak * 1e12), 4) if peak else None,
        "loss_first": round(first, 5),
        "loss_last": round(float(loss), 5),
        "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda"
        else None,
    }


def run_child(args, v: dict, timeout: float) -> dict:
    """One variant in a child process (torch.compile can hang or crash): bounded, killable."""
    cmd = [sys.executable, __file__, "--child", json.dumps(v), *child_flags(args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and its compile workers
        proc.communicate()
        return skipped(v, f"did not finish within {timeout:.0f} s (compile too slow?)")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        return skipped(v, f"child exited {proc.returncode}: {tail[:300]}")
    return json.loads(lines[-1])


def skipped(v: dict, reason: str) -> dict:
    return {"variant": variant_name(v), **v, "status": "skipped", "reason": reason}


def child_flags(args) -> list[str]:
    flags = ["--k", str(args.k), "--size", str(args.size), "--width", str(args.width)]
    flags += ["--batch", str(args.batch), "--warmup", str(args.warmup), "--iters", str(args.iters)]
    flags += ["--max-timed-s", str(args.max_timed_s)]
    flags += ["--cpu-smoke"] if args.cpu_smoke else []
    flags += ["--cudnn-benchmark"] if args.cudnn_benchmark else []
    return flags


def environment(args) -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available() and not args.cpu_smoke:
        p = torch.cuda.get_device_properties(0)
        env.update(
            device=torch.cuda.get_device_name(),
            capability=f"{p.major}.{p.minor}",
            multiprocessors=p.multi_processor_count,
            memory_gib=round(p.total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        env["device"] = f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--out", default=None, help="JSON path (default: $OUT or benchmarks/)")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (the first included)")
    ap.add_argument("--iters", type=int, default=10, help="timed steps at most")
    ap.add_argument("--max-timed-s", type=float, default=10.0, help="stop timing after this")
    ap.add_argument("--compile-timeout", type=float, default=75.0, help="per compiled variant")
    ap.add_argument("--budget", type=float, default=200.0, help="seconds for the whole run")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark")
    ap.add_argument("--tries", action="store_true", help="the MFU tries, not the step grid")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cpu_smoke:
        args.k, args.size, args.width, args.batch = 8, 32, 0.125, 4
        args.iters, args.warmup = min(args.iters, 3), min(args.warmup, 2)

    if args.child:
        print(json.dumps(measure(args, json.loads(args.child))), flush=True)
        return

    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("gpu_bench.py: no CUDA device visible to torch; use --cpu-smoke to check it")
    started = time.perf_counter()
    env = environment(args)
    print(json.dumps(env), flush=True)
    from mer.train.models import count_flops

    flops = count_flops(build_model(args), args.k, args.size)
    rows: list[dict] = []
    result = {
        "command": "python benchmarks/gpu_bench.py " + " ".join(sys.argv[1:]),
        "rows_are": "MFU tries from the loops' fast path" if args.tries else "the step grid",
        "environment": env,
        "setup": {
            "k": args.k,
            "size": args.size,
            "width": args.width,
            "batch": args.batch,
            "warmup": args.warmup,
            "iters": args.iters,
            "cudnn_benchmark": args.cudnn_benchmark,
            "forward_gflop_per_clip": round(flops / 1e9, 3),
            "train_gflop_per_clip": round(3 * flops / 1e9, 3),
        },
        "peaks_tflops": dict(PEAKS),
        "rows": rows,
    }
    default = "gpu_tries.json" if args.tries else "gpu_bench.json"
    out = Path(args.out or Path(os.environ.get("OUT") or HERE) / default)
    out.parent.mkdir(parents=True, exist_ok=True)
    for variant in TRIES if args.tries else VARIANTS:
        left = args.budget - (time.perf_counter() - started)
        if variant["compile"] and args.no_compile:
            rows.append(skipped(variant, "--no-compile"))
        elif variant["compile"]:
            if left < 20:
                rows.append(skipped(variant, f"time budget ({args.budget:.0f} s) spent"))
            else:
                rows.append(run_child(args, variant, min(args.compile_timeout, left)))
        elif left < 5:
            rows.append(skipped(variant, f"time budget ({args.budget:.0f} s) spent"))
        else:
            try:
                rows.append(measure(args, variant))
            except Exception as e:  # one failing variant (e.g. out of memory) is reported
                rows.append(skipped(variant, f"{type(e).__name__}: {str(e)[:300]}"))
            if torch.cuda.is_available() and not args.cpu_smoke:
                torch.cuda.empty_cache()
        r = rows[-1]
        print(
            f"  {r['variant']:<58} "
            + (f"{r['clips_per_s']:>9.1f} clips/s" if r["status"] == "ok" else r["reason"]),
            flush=True,
        )
        # Written after every variant: a run killed from outside keeps what it measured.
        result["seconds"] = round(time.perf_counter() - started, 1)
        out.write_text(json.dumps(result, indent=2) + "\n")

    print()
    print(f"device: {env['device']}; torch {env['torch']}; forward {flops / 1e9:.1f} GFLOP/clip")
    head = f"{'variant':<58} {'clips/s':>9} {'ms/step':>9} {'TFLOP/s':>9} {'peak':>6} {'MFU':>7}"
    print(head)
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['variant']:<58} skipped: {r['reason']}")
            continue
        peak = f"{r['peak_tflops']:.0f}" if r["peak_tflops"] else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(
            f"{r['variant']:<58} {r['clips_per_s']:>9.1f} {r['step_ms_median']:>9.2f} "
            f"{r['achieved_tflops']:>9.2f} {peak:>6} {mfu:>7}"
        )
    print(f"wrote {out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
