"""Budgeted on-device adaptation, the evidence (issue 6 item 5).

The digits CNN (edgeprune.api.make_example) deployed at 80% sparsity for cortex-m7
(edgeprune.api.compile_model) meets two shifted streams made deterministically from the digits
HELD-OUT split only (adapt/shifts.py): `severe` (rotation 20-30 degrees plus 2x2 dilation) and
`mild` (Gaussian blur, sigma 0.8). The shifted held-out split is halved once, fixed overall (the
same halves for every seed): the adaptation set and a disjoint evaluation set. The seed varies the
data order, the probe set and every random draw.

Every method (a selector of edgeprune.adapt.selectors, with its options) adapts with
edgeprune.adapt.session.adapt (`--device sim`: the library's own loop and exact budget accounting)
at budgets of 5, 10, 20 and 40% of `full`'s training RAM, for every seed, the same epochs for all.
`full` has no budget, so it runs once per shift and seed and serves every budget.

Prints mean accuracy after adaptation per method/budget/shift, paired differences (each challenger
minus every other selector, paired over seeds, 95% t intervals), RAM and MACs used, the fraction of
full's gain recovered and whether issue 6's targets are met; plots accuracy against epoch and against
budget (results/adapt_*.png); writes results/adapt.json atomically.

Everything is cached under build/bench-adapt/ (model, compile, shifted data, one JSON line per run
keyed on the run's settings and the hash of the adaptation library and the deployed model), so a
rerun only computes what is missing. `--accounting lean` (lean.py) reruns the study with a cheaper
exact accounting of the backward path (not budget.py's), at the same byte budgets.
Usage: python bench/adapt/run.py [--quick] [--seeds 20] [--epochs 10] [--jobs 1] [--methods neq,su]
       [--budgets 5,10] [--shifts severe] [--accounting lean] [--show]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "toolchain"))

WORK = ROOT / "build" / "bench-adapt"
RESULTS = ROOT / "bench" / "results" / "adapt.json"
BUDGETS = (5, 10, 20, 40)  # percent of full's training RAM
SHIFTS = ("severe", "mild")
SEEDS = 20
EPOCHS = 10
SPARSITY = 0.8
TARGET = "cortex-m7"
# The library's six selectors, then the challengers: name -> (selector, extra AdaptOptions).
METHODS = {
    "neq": ("neq", {}), "su": ("su", {}), "random": ("random", {}), "full": ("full", {}),
    "cheapest": ("cheapest", {}), "neq-shuffled": ("neq-shuffled", {}),
    "neq-norm": ("neq-norm", {}),  # scores.py: the candidate improved scores
    "neq-explore": ("neq-explore", {}),
    # The same selectors with the library's other exact NEq history (int8 outputs of every candidate
    # over the probe set instead of a pre-epoch copy of the trained parameters): cheaper when the
    # candidates are the classifier's few neurons, dearer for conv layers (budget.py).
    "neq@int8": ("neq", {"history": "int8"}),
    "neq-explore@int8": ("neq-explore", {"history": "int8"}),
    # Gradient-signal scores (scores.GRAD_SCORES): the previous epoch's error mass per neuron, no NEq.
    "grad": ("grad", {}), "grad-explore": ("grad-explore", {}),
}
CHALLENGERS = ("neq", "neq-norm", "neq-explore", "neq@int8", "neq-explore@int8", "grad", "grad-explore")  # each is compared, paired, with every other method
BASELINES = ("su", "random", "cheapest")  # the targets: beat these at <= 10% on both shifts
TARGET_BUDGET = 10
TARGET_RECOVERY = 0.8


def log(msg: str) -> None:
    print(f"[bench-adapt {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Setup (cached)

def prepare(work: Path = WORK) -> tuple[Path, dict[str, tuple[Path, Path]]]:
    """The deployed model folder and {shift: (adapt.npz, eval.npz)}, made once under work/."""
    from edgeprune.adapt import shifts

    work.mkdir(parents=True, exist_ok=True)
    model, deployed = work / "digits.pt", work / "deployed"
    if not model.is_file():
        from edgeprune.api import make_example

        t = time.perf_counter()
        r = make_example("digits", model, epochs=20, seed=0, quiet=True)
        log(f"trained the digits CNN ({r['params']:,} parameters, test accuracy {r['test_accuracy']:.3f}) in {time.perf_counter() - t:.0f} s")
    if not (deployed / "model.tflite").is_file() or (deployed / "model.tflite").stat().st_mtime < model.stat().st_mtime:
        from edgeprune.api import CompileOptions, compile_model

        t = time.perf_counter()
        rep = compile_model(CompileOptions(model=model, out=deployed, sparsity=SPARSITY, target=TARGET, quiet=True, firmware=False))
        log(f"compiled at sparsity {rep['model']['sparsity']:.3f} for {TARGET} in {time.perf_counter() - t:.0f} s")
    data = {}
    for s in SHIFTS:
        pa, pe = work / "data" / f"{s}_adapt.npz", work / "data" / f"{s}_eval.npz"
        if not (pa.is_file() and pe.is_file()):
            shifts.write_npz(s, work / "data")
        data[s] = (pa, pe)
    return deployed, data


def library_hash(deployed: Path) -> str:
    """Of the adaptation library, the compiler modules that read the model (and this folder's
    score/accounting code) and the deployed model:
    a cached run is reused only while all of them are unchanged."""
    h = hashlib.sha256((deployed / "model.tflite").read_bytes())
    package = ROOT / "toolchain" / "edgeprune"
    # The compiler's reader and passes build the region from the .tflite: they key the runs too.
    files = sorted((package / "adapt").glob("*.py")) + sorted((package / "compile").glob("*.py")) + [Path(__file__).parent / "lean.py"]
    for path in files:
        if path.name in ("device.py", "region_c.py", "scores.py"):
            continue  # the device side does not change what the simulation computes; scores: score_hash
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def score_hash() -> str:
    """Of scores.py: keys only the runs of its scores (editing a score does not redo the others)."""
    return hashlib.sha256((ROOT / "toolchain" / "edgeprune" / "adapt" / "scores.py").read_bytes()).hexdigest()[:8]


# ---------------------------------------------------------------------------------------------
# One run

_MEMO: dict = {}


def _memoize_prefix() -> None:
    """The int8 prefix and the deployed model's outputs depend only on the .tflite they run and the
    samples: compute them once per process (they are bit-exact TFLite Micro runs, the same every time)."""
    from edgeprune.adapt import region as R

    if "patched" in _MEMO:
        return
    for name, graph in (("prefix_int8", "prefix_tflite"), ("deployed_logits", "model_tflite")):
        fn = getattr(R, name)

        def memo(region, inputs, _fn=fn, _name=name, _graph=graph):
            # Keyed on the graph that runs: one model has a prefix per --trainable-from.
            key = (_name, hashlib.sha1(getattr(region, _graph)).hexdigest(), hashlib.sha1(inputs.tobytes()).hexdigest(),
                   inputs.shape)
            if key not in _MEMO:
                _MEMO[key] = _fn(region, inputs)
            return _MEMO[key].copy()

        setattr(R, name, memo)
    _MEMO["patched"] = True


def run_one(job: dict) -> dict:
    """One adaptation run (job: method, shift, budget (percent, or None for full), seed, epochs,
    accounting, paths); returns the compact record kept in the cache."""
    import torch

    torch.set_num_threads(1)
    _memoize_prefix()
    import lean

    from edgeprune.adapt.session import AdaptOptions, adapt

    selector, extra = METHODS[job["method"]]
    budget = job["budget_bytes"] if job["budget_bytes"] is not None else (f"{job['budget']}%" if job["budget"] else None)
    opts = AdaptOptions(dir=job["deployed"], data=job["adapt"], eval_data=job["eval"], budget_ram=budget,
                        selector=selector, epochs=job["epochs"], seed=job["seed"], **extra)
    t = time.perf_counter()
    with lean.accounting(job["accounting"]):
        out = adapt(opts)
    return {
        "key": job["key"], "method": job["method"], "shift": job["shift"], "budget": job["budget"], "seed": job["seed"],
        "epochs": job["epochs"], "accounting": job["accounting"],
        "budget_ram": out["budget_ram"], "full_ram": out["full_ram"], "full_macs": out["full_macs"],
        "accuracy_before": out["accuracy_before"], "accuracy_before_float": out["accuracy_before_float"],
        "accuracy": [e["accuracy"] for e in out["epochs"]],
        "ram_used": [e["ram_used"] for e in out["epochs"]], "macs_used": [e["macs_used"] for e in out["epochs"]],
        "selected": [e["selected"] for e in out["epochs"]],
        "seconds": round(time.perf_counter() - t, 3),
    }


def path_costs(deployed: Path) -> list[dict]:
    import lean

    from edgeprune.adapt import region as R

    return lean.path_costs(R.load_region(deployed))


def make_jobs(args, deployed: Path, data: dict, lib: str) -> list[dict]:
    from edgeprune.adapt.scores import GRAD_SCORES, SCORES

    full_ram = None
    if args.accounting != "budget.py":
        # The same byte budgets as the main study: a cheaper accounting buys more with the same bytes.
        from edgeprune.adapt import region as R
        from edgeprune.adapt.budget import CostModel

        full_ram = CostModel(R.load_region(deployed)).full_cost().ram
    jobs = []
    for shift in args.shifts:
        for method in args.methods:
            for budget in ([None] if method == "full" else args.budgets):
                for seed in range(args.seeds):
                    bb = None if (budget is None or full_ram is None) else int(budget * full_ram / 100.0)
                    key = f"{lib}|{args.accounting}|{method}|{shift}|{budget}|{seed}|{args.epochs}"
                    if METHODS[method][0] in SCORES or METHODS[method][0] in GRAD_SCORES:
                        key += f"|{score_hash()}"
                    jobs.append({"key": key, "method": method, "shift": shift, "budget": budget, "budget_bytes": bb,
                                 "seed": seed, "epochs": args.epochs, "accounting": args.accounting, "deployed": str(deployed),
                                 "adapt": str(data[shift][0]), "eval": str(data[shift][1])})
    return jobs


def run_all(jobs: list[dict], cache: Path, n_jobs: int) -> list[dict]:
    """Cached records for every job, computing the missing ones (with a progress bar)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    done = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            try:
                r = json.loads(line)
                done[r["key"]] = r
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by an interrupted run
    todo = [j for j in jobs if j["key"] not in done]
    if todo:
        log(f"{len(jobs) - len(todo)} of {len(jobs)} runs cached; {len(todo)} to do on {n_jobs} process(es)")
        cols = (TextColumn("adapt runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*cols, transient=False) as bar, cache.open("a") as f:
            task = bar.add_task("runs", total=len(todo))
            if n_jobs > 1:
                import multiprocessing as mp

                with mp.get_context("spawn").Pool(n_jobs) as pool:
                    for r in pool.imap_unordered(run_one, todo):
                        f.write(json.dumps(r) + "\n")
                        f.flush()
                        done[r["key"]] = r
                        bar.advance(task)
            else:
                for j in todo:
                    r = run_one(j)
                    f.write(json.dumps(r) + "\n")
                    f.flush()
                    done[r["key"]] = r
                    bar.advance(task)
    return [done[j["key"]] for j in jobs]


# ---------------------------------------------------------------------------------------------
# Analysis

def paired(a, b) -> dict:
    """Mean of a - b over seeds and its 95% t interval (a, b paired by seed)."""
    import numpy as np
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    mean = float(d.mean())
    if n < 2 or float(d.std(ddof=1)) == 0.0:
        return {"mean": mean, "lo": mean, "hi": mean, "n": n}
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def analyse(records: list[dict], methods, budgets, shifts, challengers=CHALLENGERS) -> dict:
    import numpy as np

    by = {}
    for r in records:
        by.setdefault((r["shift"], r["method"], r["budget"]), {})[r["seed"]] = r
    out = {"cells": [], "paired": [], "targets": {}}
    for shift in shifts:
        full = by.get((shift, "full", None), {})
        seeds = sorted(full)
        before = float(np.mean([full[s]["accuracy_before"] for s in seeds])) if seeds else None
        full_after = float(np.mean([full[s]["accuracy"][-1] for s in seeds])) if seeds else None
        for budget in budgets:
            after = {}
            for m in methods:
                runs = by.get((shift, m, None if m == "full" else budget), {})
                if not runs:
                    continue
                ss = sorted(runs)
                acc = np.array([runs[s]["accuracy"] for s in ss])  # seeds x epochs
                after[m] = {s: runs[s]["accuracy"][-1] for s in ss}
                gain = None
                if full_after is not None and full_after != before:
                    gain = (float(acc[:, -1].mean()) - before) / (full_after - before)
                out["cells"].append({
                    "shift": shift, "budget": budget, "method": m, "seeds": len(ss),
                    "budget_ram": runs[ss[0]]["budget_ram"], "full_ram": runs[ss[0]]["full_ram"],
                    "accuracy_before": float(np.mean([runs[s]["accuracy_before"] for s in ss])),
                    "accuracy_after": float(acc[:, -1].mean()), "accuracy_after_std": float(acc[:, -1].std(ddof=1)) if len(ss) > 1 else 0.0,
                    "accuracy_per_epoch": acc.mean(0).tolist(),
                    "accuracy_after_per_seed": acc[:, -1].tolist(),
                    "ram_used_per_epoch": np.mean([runs[s]["ram_used"] for s in ss], axis=0).tolist(),
                    "macs_used_per_epoch": np.mean([runs[s]["macs_used"] for s in ss], axis=0).tolist(),
                    "gain_recovered": gain,
                    "ram_used_mean": float(np.mean([runs[s]["ram_used"] for s in ss])),
                    "ram_used_max": int(max(max(runs[s]["ram_used"]) for s in ss)),
                    "macs_used_mean": float(np.mean([runs[s]["macs_used"] for s in ss])),
                    "macs_used_max": int(max(max(runs[s]["macs_used"]) for s in ss)),
                    "selected_last_epoch_mean": {k: float(np.mean([runs[s]["selected"][-1][k] for s in ss]))
                                                 for k in runs[ss[0]]["selected"][-1]},
                    "within_budget": m == "full" or all(max(runs[s]["ram_used"]) <= runs[s]["budget_ram"] for s in ss),
                })
            for c in challengers:
                if c not in after:
                    continue
                for m in methods:
                    if m == c or m not in after:
                        continue
                    common = sorted(set(after[c]) & set(after[m]))
                    if not common:
                        continue
                    p = paired([after[c][s] for s in common], [after[m][s] for s in common])
                    out["paired"].append({"shift": shift, "budget": budget, "challenger": c, "other": m, **p})
    cell = {(c["shift"], c["budget"], c["method"]): c for c in out["cells"]}
    pair = {(p["shift"], p["budget"], p["challenger"], p["other"]): p for p in out["paired"]}
    for c in challengers:
        checks, met = [], True
        for shift in shifts:
            for budget in [b for b in budgets if b <= TARGET_BUDGET]:
                for m in BASELINES:
                    p = pair.get((shift, budget, c, m))
                    ok = p is not None and p["lo"] > 0
                    met &= ok
                    checks.append({"shift": shift, "budget": budget, "what": f"beats {m}", "ok": ok,
                                   "value": None if p is None else [p["mean"], p["lo"], p["hi"]]})
                g = cell.get((shift, budget, c), {}).get("gain_recovered")
                ok = g is not None and g >= TARGET_RECOVERY
                met &= ok
                checks.append({"shift": shift, "budget": budget, "what": f">= {TARGET_RECOVERY:.0%} of full's gain", "ok": ok, "value": g})
        out["targets"][c] = {"met": bool(met) and bool(checks), "checks": checks}
    return out


def print_report(res: dict) -> None:
    a = res["analysis"]
    print(f"\nbench-adapt: {res['setup']['model']}; {res['setup']['seeds']} seeds, {res['setup']['epochs']} epochs, "
          f"accounting {res['setup']['accounting']}; full's training RAM {res['setup']['full_ram']:,} B, "
          f"{res['setup']['full_macs']:,} backward MACs/sample")
    for p in res["setup"].get("path_costs", []):
        if p["accounting"] == res["setup"]["accounting"]:
            print(f"  path to one neuron of {p['layer']}: {p['path_ram']:,} B ({p['saved']:,} saved + {p['errors']:,} errors), "
                  f"{p['input_grad_macs']:,} input-gradient MACs/sample")
    cells = a["cells"]
    for shift in res["setup"]["shifts"]:
        cs = [c for c in cells if c["shift"] == shift]
        if not cs:
            continue
        print(f"\n== {shift} shift: accuracy before {cs[0]['accuracy_before']:.3f} (deployed int8), "
              f"after full {next((c['accuracy_after'] for c in cs if c['method'] == 'full'), float('nan')):.3f}")
        print(f"{'budget':>6} {'method':<13} {'acc after':>9} {'std':>6} {'gain':>6} {'RAM used (max)':>16} {'MACs/sample':>11} "
              "selected conv1/conv2/fc3")
        for c in cs:
            sel = "/".join(f"{v:.1f}" for v in c["selected_last_epoch_mean"].values())
            gain = "" if c["gain_recovered"] is None else f"{c['gain_recovered']:.0%}"
            print(f"{c['budget']:>5}% {c['method']:<13} {c['accuracy_after']:9.3f} {c['accuracy_after_std']:6.3f} {gain:>6} "
                  f"{c['ram_used_max']:>7,} /{c['budget_ram'] or c['full_ram']:>7,} {c['macs_used_max']:>11,} {sel}")
        for ch in sorted({p["challenger"] for p in a["paired"]}):
            ps = [p for p in a["paired"] if p["shift"] == shift and p["challenger"] == ch]
            if not ps:
                continue
            print(f"  paired {ch} minus other, points, 95% CI ('*' excludes zero):")
            for budget in sorted({p["budget"] for p in ps}):
                row = [f"{p['other']} {100 * p['mean']:+.1f} [{100 * p['lo']:+.1f},{100 * p['hi']:+.1f}]"
                       + ("*" if p["lo"] > 0 or p["hi"] < 0 else "") for p in ps if p["budget"] == budget]
                print(f"    {budget:>3}%: " + "; ".join(row))
    for ch, t in a["targets"].items():
        bad = [f"{c['shift']} {c['budget']}% {c['what']}" for c in t["checks"] if not c["ok"]]
        print(f"\ntargets for {ch}: {'MET' if t['met'] else 'not met'}" + ("" if t["met"] else f" (fails: {'; '.join(bad)})"))
    if "runtime_s" in res:
        print(f"\n{res['runtime']}")


def plot(res: dict, out_dir: Path, prefix: str = "adapt") -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    cells = res["analysis"]["cells"]
    shifts = res["setup"]["shifts"]
    budgets = res["setup"]["budgets"]
    methods = res["setup"]["methods"]
    # One colour per method: the default cycle repeats after 10, and a study has up to 12 methods.
    palette = list(plt.get_cmap("tab10").colors) + ["black", "gold"]
    color = {m: palette[k % len(palette)] for k, m in enumerate(methods)}
    paths = []
    # accuracy vs epoch: one panel per shift and budget
    fig, axes = plt.subplots(len(shifts), len(budgets), figsize=(3.4 * len(budgets), 3.0 * len(shifts)), squeeze=False, sharey="row")
    for i, shift in enumerate(shifts):
        for j, budget in enumerate(budgets):
            ax = axes[i][j]
            for m in methods:
                c = next((c for c in cells if c["shift"] == shift and c["method"] == m and c["budget"] == budget), None)
                if c:
                    ys = [c["accuracy_before"]] + c["accuracy_per_epoch"]
                    ax.plot(range(len(ys)), ys, label=m, color=color[m], lw=2 if m in CHALLENGERS else 1, ls="--" if m == "full" else "-")
            ax.set_title(f"{shift}, budget {budget}% of full's RAM", fontsize=9)
            ax.set_xlabel("epoch")
            if j == 0:
                ax.set_ylabel("accuracy (eval half)")
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    p = out_dir / f"{prefix}_epochs.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(str(p))
    # accuracy vs budget
    fig, axes = plt.subplots(1, len(shifts), figsize=(5 * len(shifts), 3.6), squeeze=False)
    for i, shift in enumerate(shifts):
        ax = axes[0][i]
        for m in methods:
            cs = sorted((c for c in cells if c["shift"] == shift and c["method"] == m), key=lambda c: c["budget"])
            if cs:
                ax.errorbar([c["budget"] for c in cs], [c["accuracy_after"] for c in cs],
                            yerr=[c["accuracy_after_std"] / max(1, c["seeds"]) ** 0.5 for c in cs], label=m, color=color[m], capsize=2,
                            lw=2 if m in CHALLENGERS else 1, ls="--" if m == "full" else "-")
        ax.axhline(cs[0]["accuracy_before"] if cs else 0, color="grey", lw=0.8, ls=":", label="before")
        ax.set_xscale("log")
        ax.set_xticks(budgets)
        ax.set_xticklabels([f"{b}%" for b in budgets])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{shift} shift: accuracy after {res['setup']['epochs']} epochs (mean, +-s.e.)", fontsize=9)
        ax.set_xlabel("RAM budget (share of full's training RAM)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (eval half)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / f"{prefix}_budget.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(str(p))
    return paths


# ---------------------------------------------------------------------------------------------

def dumps(res: dict) -> bytes:
    """JSON with floats to 5 significant digits and lists of numbers on one line (a reviewable diff)."""
    import re

    def rounded(x):
        if isinstance(x, float):
            return float(f"{x:.5g}")
        if isinstance(x, dict):
            return {k: rounded(v) for k, v in x.items()}
        if isinstance(x, list):
            return [rounded(v) for v in x]
        return x

    text = json.dumps(rounded(res), indent=1)
    text = re.sub(r"\[\s*([-0-9.eE+,\s]+?)\s*\]", lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
    return text.encode()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 3 epochs, budgets 5,40 (a smoke run)")
    ap.add_argument("--seeds", type=int, default=None, help=f"seeds 0..N-1 (default {SEEDS})")
    ap.add_argument("--epochs", type=int, default=None, help=f"epochs for every method (default {EPOCHS})")
    ap.add_argument("--budgets", default=None, help="percentages of full's training RAM, e.g. 5,10,20,40")
    ap.add_argument("--shifts", default=",".join(SHIFTS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--accounting", default="budget.py", choices=("budget.py", "lean"),
                    help="budget.py: the library's (every buffer separate); lean: lean.py, at the same byte budgets")
    ap.add_argument("--jobs", type=int, default=1, help="processes (at most 2: a shared 2-core machine)")
    ap.add_argument("--work", default=str(WORK), help="cache folder")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/adapt.json, or adapt_lean.json)")
    ap.add_argument("--show", action="store_true", help="print the report of the results JSON and stop")
    a = ap.parse_args(argv)
    a.seeds = a.seeds or (2 if a.quick else SEEDS)
    a.epochs = a.epochs or (3 if a.quick else EPOCHS)
    a.budgets = [int(b) for b in (a.budgets or ("5,40" if a.quick else ",".join(map(str, BUDGETS)))).split(",")]
    a.shifts = a.shifts.split(",")
    a.methods = a.methods.split(",")
    unknown = [m for m in a.methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if "full" not in a.methods:
        a.methods.append("full")  # the gain recovered needs it
    a.jobs = max(1, min(2, a.jobs))
    if a.out is None:
        # The lean study goes into adapt.json too (key "lean_accounting"); a quick run stays in build/.
        a.out = str(Path(a.work) / "adapt_quick.json" if a.quick else RESULTS)
    return a


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    lean_key = "lean_accounting"
    if args.show:
        res = json.loads(out.read_text())
        if args.accounting == "lean":
            res = res[lean_key]
        print_report(res)
        return res
    t0 = time.perf_counter()
    work = Path(args.work)
    deployed, data = prepare(work)
    lib = library_hash(deployed)
    jobs = make_jobs(args, deployed, data, lib)
    records = run_all(jobs, work / "runs.jsonl", args.jobs)
    # Targets only for the challengers this invocation ran (an absent one would read "not met").
    analysis = analyse(records, args.methods, args.budgets, args.shifts, [c for c in CHALLENGERS if c in args.methods])
    first = records[0]
    compute_s = sum(r["seconds"] for r in records)
    res = {
        "setup": {
            "model": f"digits CNN (edgeprune.api.make_example), {SPARSITY:.0%} magnitude sparsity, {TARGET}",
            "shifts": args.shifts, "budgets": args.budgets, "methods": args.methods, "seeds": args.seeds,
            "epochs": args.epochs, "accounting": args.accounting,
            "split": "shifted held-out (test) split halved once, fixed overall (adapt/shifts.py, SHIFT_SEED); "
                     "adaptation and evaluation halves disjoint; the seed varies data order, probe set and random draws",
            "full_ram": first["full_ram"], "full_macs": first["full_macs"],
            "adaptation_library": lib,
            # RAM of the backward path (saved activations + error buffers) to one neuron of each layer
            "path_costs": path_costs(deployed),
        },
        "analysis": analysis,
        "runtime_s": round(time.perf_counter() - t0, 1),
        "runtime": f"wall {time.perf_counter() - t0:.0f} s for this invocation; {compute_s:.0f} s of adaptation in "
                   f"{len(records)} runs ({compute_s / max(1, len(records)):.2f} s per run, 1 thread)",
        "records": f"one JSON line per run (accuracy, RAM and MACs per epoch, selections): {work / 'runs.jsonl'}",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    from edgeprune.fileio import write_bytes_atomic

    stem = out.stem + ("_lean" if args.accounting == "lean" else "")
    res["plots"] = [str(Path(p).relative_to(ROOT)) if Path(p).is_relative_to(ROOT) else p for p in plot(res, out.parent, stem)]
    if args.accounting == "lean":
        main_res = json.loads(out.read_text()) if out.is_file() else {}
        main_res[lean_key] = res
        write_bytes_atomic(out, dumps(main_res))
    else:
        old = json.loads(out.read_text()) if out.is_file() else {}
        if lean_key in old:
            res[lean_key] = old[lean_key]
        write_bytes_atomic(out, dumps(res))
    print_report(res)
    print(f"wrote {out} and {', '.join(res['plots'])}")
    return res


if __name__ == "__main__":
    main()
