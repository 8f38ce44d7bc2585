"""Issue 16's GPU measurements in one command (about 10 minutes on an H100 with 16 cores), one table at the end.

Parts, in this order (``--only PART``, repeatable, runs a subset):
  train     bench_train.py, efficientnet_b0 224 px bf16 batch 256, all layers, random init: petalnet with
            its default loader (worker processes) and with --loader threads (threads decoding into pinned
            reused buffers), against the bare loop; compiled (default mode), compiled with CUDA graphs
            (reduce-overhead, both loops), and eager; each in its own process: img/s, ratios, peak memory.
  profile   torch.profiler over 20 compiled petalnet training steps (bench_train.py's path): the top
            ops by self CPU time, where the main thread works or waits (its compile hits the cache).
  decode    bench_decode.py: 512 -> 256 px input img/s, full decode against reduced-scale decode, all cores.
  accuracy  petals-mini converted to 224 and 331 px on the device; `petalnet train` with the finetune
            and the default recipe at each size (recipe defaults, --image-size the data's): val
            macro-F1, accuracy, minutes; and the recipe `--recipe auto` picks on this device.

Every part prints its elapsed seconds; a part (or an accuracy run) is skipped, saying so, when the
seconds left of ``--budget`` are fewer than it needs. Rows also go to OUT/gpu16.jsonl, the profile to
OUT/profile.txt, each train run's output to OUT/train-*.log.

usage: python benchmarks/bench_gpu.py [--data .data/petals-mini] [--out $OUT] [--only PART ...]
                                      [--budget 420] [--weights LITE0.pth] [--dry-run]
--dry-run: on this CPU, resnet10t at 64 px, a few steps, 1 epoch, no compilation unless
--dry-run-compile: proves every part runs end to end (a couple of minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PARTS = ("train", "profile", "decode", "accuracy")   # profile after train: its compile then hits the cache
# seconds each part needs at least to start (H100, 16 cores; measured parts of issue 5's leases and
# estimates): below that, it is skipped
NEEDS = {"profile": 40, "train": 150, "decode": 45, "accuracy": 60}


def default_data() -> str:
    for cand in (os.path.join(ROOT, ".data", "petals-mini"),
                 os.path.join(os.path.dirname(ROOT), "shared", "data", "petals-mini")):
        if os.path.isdir(cand):
            return cand
    return os.path.join(ROOT, ".data", "petals-mini")


class Clock:
    def __init__(self, budget: float):
        self.t0, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)


def run(cmd: list[str], log: str, timeout: float, env: dict | None = None) -> tuple[int, str]:
    """Run ``cmd``, its output to ``log``; (return code or 124 on timeout, output)."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1), cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                                **(env or {})})
        code, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        code = 124
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += f"\n[timed out after {timeout:.0f}s]"
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n" + out)
    return code, out


def convert(data: str, size: int, work: str) -> str:
    """petals-mini at ``size`` px (``petalnet convert``), converted once into ``work``."""
    dest = os.path.join(work, f"petals-{size}")
    if not glob.glob(os.path.join(dest, f"tfrecords-jpeg-{size}x{size}", "train", "*.tfrec")):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "petalnet", "convert", data, dest, "--size", str(size), "--force"],
                       check=True, stdout=subprocess.DEVNULL, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")})
        print(f"  converted petals-mini to {size} px in {time.perf_counter() - t:.0f}s", flush=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=default_data(), help="petals-mini (default: .data/petals-mini)")
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-results"))
    ap.add_argument("--work", default="/tmp/petalnet-gpu16", help="converted records")
    ap.add_argument("--only", choices=PARTS, action="append", help="run only this part (repeatable)")
    ap.add_argument("--budget", type=float, help="seconds for the whole run (default 420; 900 for --dry-run)")
    ap.add_argument("--weights", help="Lite0 weights for the accuracy part (default: the packaged copy, or "
                                      ".data/efficientnet-lite0-*.pth)")
    ap.add_argument("--threads", type=int, help="threads of the threaded loader (default: petalnet's workers)")
    ap.add_argument("--dry-run", action="store_true", help="tiny CPU run of every part")
    ap.add_argument("--dry-run-compile", action="store_true", help="--dry-run with torch.compile too (slow here)")
    args = ap.parse_args(argv)
    dry = args.dry_run or args.dry_run_compile
    args.budget = args.budget or (900 if dry else 420)
    parts = [p for p in PARTS if not args.only or p in args.only]
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    jsonl = os.path.join(args.out, "gpu16.jsonl")
    first_line = _count_lines(jsonl)   # the table shows this run's rows only
    clock = Clock(args.budget)
    import torch
    import timm
    import torchvision
    gpu = torch.cuda.is_available()
    if not gpu and not dry:
        print("bench_gpu: error: no CUDA device (use --dry-run on a CPU)", file=sys.stderr)
        return 1
    device_name = torch.cuda.get_device_name() if gpu else "CPU (dry run)"
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, "
          f"{device_name}, {os.cpu_count()} CPUs; parts: {', '.join(parts)}; budget {args.budget:.0f}s", flush=True)
    # compilation caches shared by the processes below (the profile's compile serves the train run)
    cache_env = {"TORCHINDUCTOR_CACHE_DIR": os.path.join(args.work, "inductor"),
                 "TRITON_CACHE_DIR": os.path.join(args.work, "triton"),
                 "TORCHINDUCTOR_FX_GRAPH_CACHE": "1", "TORCHINDUCTOR_AUTOGRAD_CACHE": "1"}
    if dry:
        model, size, batch, steps, repeat = "resnet10t", 64, 16, 16, 2
        common = ["--model", model, "--image-size", str(size), "--batch", str(batch), "--fine-tune",
                  "--no-pretrained", "--repeats", "1", "--precision", "32", "--workers", "1"]
    else:
        model, size, batch, steps, repeat = "efficientnet_b0", 224, 256, 70, 12
        common = ["--model", model, "--image-size", str(size), "--batch", str(batch), "--fine-tune",
                  "--no-pretrained", "--repeats", "1", "--precision", "bf16-mixed"]
    if args.threads:
        common += ["--threads", str(args.threads)]
    compile_too = not dry or args.dry_run_compile
    elapsed: dict[str, str] = {}

    def add(row: dict) -> None:
        with open(jsonl, "a") as f:
            f.write(json.dumps({**row, "device_name": device_name}) + "\n")

    bench_train = [sys.executable, os.path.join(HERE, "bench_train.py")]
    train_data = None
    if {"profile", "train"} & set(parts):
        train_data = convert(args.data, size, args.work)

    for part in parts:
        left = clock.left()
        if left < NEEDS[part] * (0.1 if dry else 1):
            print(f"[{part}] skipped: {left:.0f}s of the budget left, it needs ~{NEEDS[part]}s "
                  f"(rerun with --only {part})", flush=True)
            elapsed[part] = "skipped"
            continue
        t = time.perf_counter()
        print(f"[{part}] ...", flush=True)
        if part == "profile":
            cmd = bench_train + common + ["--data", train_data, "--repeat-data", str(repeat),
                                          "--profile-steps", "4" if dry else "20"]
            cmd += ["--compile"] if compile_too else []
            code, out = run(cmd, os.path.join(args.out, "profile.txt"), clock.left() - 5, cache_env)
            start = out.find("profile:")
            print(out[start:] if start >= 0 else out[-3000:], flush=True)
            add({"part": "profile", "ok": code == 0 and start >= 0})
        elif part == "train":
            # compiled first (the default mode, then CUDA graphs), eager last: the target is compiled
            # (name, flags, petalnet loaders): the loader comparison where the host is the limit (compiled)
            variants = [("compiled", ["--compile"], "default,threads"),
                        ("compiled-cudagraphs", ["--compile", "--compile-mode", "reduce-overhead"], "default"),
                        ("eager", [], "default")]
            for name, flags, loaders in variants if compile_too else variants[2:]:
                if clock.left() < 40:
                    print(f"  {name} skipped: {clock.left():.0f}s left", flush=True)
                    continue
                cmd = bench_train + common + ["--data", train_data, "--repeat-data", str(repeat), "--steps",
                                              str(steps), "--loaders", loaders, "--json", jsonl, *flags]
                t1 = time.perf_counter()
                code, out = run(cmd, os.path.join(args.out, f"train-{name}.log"), min(clock.left() - 5, 200),
                                {**cache_env, **({"TORCH_LOGS": "recompiles"} if flags else {})})
                tail = [line for line in out.splitlines() if line.startswith(("petalnet train", "  repeat"))]
                print(f"  {name} ({time.perf_counter() - t1:.0f}s, exit {code}):", *tail, sep="\n    ", flush=True)
                recompiles = [line for line in out.splitlines() if "Recompiling" in line or "skipping cudagraphs" in line]
                if recompiles:
                    print(f"  {len(recompiles)} recompilation/cudagraph notes, first: {recompiles[0][:300]}", flush=True)
                if code:
                    print(out[-2000:], flush=True)
        elif part == "decode":
            cmd = [sys.executable, os.path.join(HERE, "bench_decode.py"), "--data", args.data,
                   "--work", os.path.join(args.work, "petals-512"), "--json", jsonl]
            cmd += ["--size", "32", "--batch", "16", "--seconds", "1", "--repeat-files", "1"] if dry else \
                ["--size", "256", "--batch", "256", "--seconds", "4"]
            code, out = run(cmd, os.path.join(args.out, "decode.log"), clock.left() - 5)
            print("\n".join(line for line in out.splitlines() if line.startswith(("  ", "converted"))), flush=True)
            if code:
                print(out[-2000:], flush=True)
        elif part == "accuracy":
            accuracy(args, dry, clock, add, device_name)
        elapsed[part] = f"{time.perf_counter() - t:.0f}s"
        print(f"[{part}] {elapsed[part]}", flush=True)

    table(jsonl, first_line, elapsed, device_name, clock)
    return 0


def accuracy(args, dry: bool, clock: Clock, add, device_name: str) -> None:
    from petalnet.models import packaged_weights_file
    from petalnet.recipes import RECIPES, resolve_recipe

    device_type = "cuda" if not dry else "cpu"
    chosen, reason = resolve_recipe("auto", device_type)
    print(f"  `petalnet train` without --recipe here (--recipe auto): {reason}", flush=True)
    add({"part": "auto_recipe", "device_type": device_type, "recipe": chosen})
    weights = args.weights or packaged_weights_file("tf_efficientnet_lite0") or \
        next(iter(sorted(glob.glob(os.path.join(ROOT, ".data", "efficientnet-lite0-*.pth")))), None)
    extra = []
    if dry:
        extra = ["--model", "resnet10t", "--no-pretrained", "--epochs", "1", "--precision", "32", "--batch-size", "64"]
    elif weights is None:
        print("  accuracy skipped: no pretrained Lite0 weights on this machine (pass --weights FILE or put "
              "efficientnet-lite0-*.pth in .data/)", flush=True)
        return
    elif not packaged_weights_file("tf_efficientnet_lite0"):
        extra = ["--weights", weights]
    sizes = (32, 48) if dry else (224, 331)
    # the finetune recipe trains every layer for 12 epochs: at 331 px ~2.2x the pixels of 224
    need = {"finetune": 60, "default": 40} if not dry else {"finetune": 5, "default": 5}
    done = {}
    for size in sizes:
        data = convert(args.data, size, args.work)
        for recipe in ("finetune", "default"):
            if recipe not in RECIPES:
                continue
            if clock.left() < need[recipe] * (size / 224) ** 2:
                print(f"  {recipe} at {size} px skipped: {clock.left():.0f}s left (rerun with --only accuracy)",
                      flush=True)
                continue
            out_dir = os.path.join(args.work, "runs", f"{recipe}-{size}")
            cmd = [sys.executable, "-m", "petalnet", "train", "--recipe", recipe, "--data", data, "--out", out_dir,
                   "--image-size", str(size), "--force", "--quiet", *extra]
            t = time.perf_counter()
            code, out = run(cmd, os.path.join(args.out, f"accuracy-{recipe}-{size}.log"), clock.left() - 5)
            minutes = (time.perf_counter() - t) / 60
            summary = os.path.join(out_dir, "summary.json")
            if code or not os.path.exists(summary):
                print(f"  {recipe} at {size} px failed (exit {code}):\n{out[-1500:]}", flush=True)
                continue
            with open(summary) as f:
                s = json.load(f)
            row = {"part": "accuracy", "recipe": recipe, "image_size": size, "model": s["model"],
                   "val_macro_f1": s["best_val_macro_f1"], "val_accuracy": s["best_val_accuracy"],
                   "best_epoch": s["best_epoch"], "epochs": s["epochs"], "minutes": minutes,
                   "train_minutes": s["train_seconds"] / 60, "weights": s.get("weights")}
            add(row)
            print(f"  {recipe} at {size} px: val macro-F1 {row['val_macro_f1']:.4f}, accuracy "
                  f"{row['val_accuracy']:.4f}, {minutes:.1f} min", flush=True)
            done[recipe, size] = row
    write_accuracy_records(done, device_name, chosen, dry)


def write_accuracy_records(done: dict, device_name: str, chosen: str, dry: bool) -> None:
    """benchmarks/records/gpu-accuracy-SIZE.json: finetune against default at each size both ran (not dry runs)."""
    from record import record
    for size in sorted({s for _, s in done}):
        f, d = done.get(("finetune", size)), done.get(("default", size))
        if dry or not (f and d):
            continue
        record(f"gpu-accuracy-{size}", f"GPU accuracy, petals-mini val at {size} px ({f['model']} ImageNet): "
               "`--recipe finetune` against `--recipe default`, val macro-F1", round(f["val_macro_f1"], 4), "",
               peer=round(d["val_macro_f1"], 4), peer_label="default", detail=f"accuracy {f['val_accuracy']:.4f} in "
               f"{f['minutes']:.1f} min vs {d['val_accuracy']:.4f} in {d['minutes']:.1f} min; `--recipe auto` on "
               f"{device_name} picks `{chosen}`")


def _count_lines(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for _ in f)


def table(jsonl: str, first_line: int, elapsed: dict, device_name: str, clock: Clock) -> None:
    """The one table: every row this run wrote to ``jsonl`` (the train and decode rows come from there)."""
    runs = []
    if os.path.exists(jsonl):
        with open(jsonl) as f:
            runs = [json.loads(line) for line in f][first_line:]
    print(f"\n## {device_name}, {os.cpu_count()} CPUs, {clock.budget - clock.left():.0f}s; "
          + ", ".join(f"{k} {v}" for k, v in elapsed.items()))
    print("| part | what | petalnet / full | bare / reduced | ratio / speed-up | peak GPU MiB (petalnet / bare) "
          "| F1 | accuracy | minutes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        if "petalnet" in r:   # a bench_train row
            what = f"{r['model']} {r['image_size']}px b{r['batch']} {r['precision']}" + \
                   (f", compiled ({r['compile']})" if r["compile"] else ", eager")
            mem = f"{r.get('peak_gpu_mib_petalnet', 0):.0f} / {r.get('peak_gpu_mib_bare', 0):.0f}"
            print(f"| train | {what}, {r.get('loader', 'default')} loader | {r['petalnet']:.0f} | {r['bare']:.0f} "
                  f"| {r['ratio']:.3f} | {mem} | | | |")
            for k in [k[len("petalnet_"):] for k in r if k.startswith("petalnet_")]:
                mem_k = f"{r.get('peak_gpu_mib_petalnet ' + k, 0):.0f} / {r.get('peak_gpu_mib_bare', 0):.0f}"
                print(f"| train | {what}, {k} loader | {r['petalnet_' + k]:.0f} | {r['bare']:.0f} "
                      f"| {r['ratio_' + k]:.3f} | {mem_k} | | | |")
        elif "full_img_s" in r:   # a bench_decode row
            print(f"| decode | 512 -> {r['size']} px, {r['what']} | {r['full_img_s']:.0f} | {r['reduced_img_s']:.0f} "
                  f"| {r['speedup']:.2f} | | | | |")
        elif r.get("part") == "accuracy":
            print(f"| accuracy | `--recipe {r['recipe']}`, {r['model']} at {r['image_size']} px "
                  f"(best epoch {r['best_epoch']}/{r['epochs']}) | | | | | {r['val_macro_f1']:.4f} "
                  f"| {r['val_accuracy']:.4f} | {r['minutes']:.1f} |")
        elif r.get("part") == "auto_recipe":
            print(f"| accuracy | `petalnet train` (--recipe auto) on {r['device_type']} picks `{r['recipe']}` "
                  f"| | | | | | | |")
        elif r.get("part") == "profile":
            print(f"| profile | {'written to profile.txt' if r['ok'] else 'FAILED: see profile.txt'} | | | | | | | |")


if __name__ == "__main__":
    sys.exit(main())
