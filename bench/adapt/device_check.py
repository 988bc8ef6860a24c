"""Does the emulated device do what the study's simulation reports? (issue 6 items 4 and 5)

Runs methods of run.py's study in its own setting (the same deployed model and shifted data from
run.prepare, 10 epochs, lr 0.1, batch 16) with `--device sim` and `--device qemu` (the Cortex-M7
firmware's adaptation mode) and prints, per run, both final accuracies, whether every epoch selected
the same neurons per layer with the same RAM and MACs, and the device's measured pool peak against
the budget. Writes results/device_check.json atomically. About 35 s per run on a 2-core machine.
Usage: python bench/adapt/device_check.py [--seeds 3] [--budget 5] [--methods grad,grad-explore,neq-explore@int8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import run as study  # bench/adapt/run.py: prepare() and METHODS


def check(deployed, data: dict, method: str, shift: str, budget: int, seed: int, firmware) -> dict:
    from edgeprune.adapt.device import run_on_device
    from edgeprune.adapt.session import AdaptOptions, adapt

    selector, options = study.METHODS[method]
    adapt_npz, eval_npz = data[shift]
    kw = dict(dir=deployed, data=adapt_npz, eval_data=eval_npz, selector=selector, budget_ram=f"{budget}%",
              epochs=10, seed=seed, **options)
    t = time.perf_counter()
    sim = adapt(AdaptOptions(device="sim", **kw))
    dev = run_on_device(AdaptOptions(device="qemu", **kw), firmware=firmware)
    same = all((s["selected"], s["ram_used"], s["macs_used"]) == (d["selected"], d["ram_used"], d["macs_used"])
               for s, d in zip(sim["epochs"], dev["epochs"], strict=True))
    return {"method": method, "shift": shift, "budget": budget, "seed": seed, "budget_ram": dev["budget_ram"],
            "accuracy_sim": sim["accuracy_after"], "accuracy_device": dev["accuracy_after"], "same_selections": same,
            "pool_peak": max(e["peak_ram_measured"] for e in dev["epochs"]),
            "device_ram_peak": max(e["device_ram_peak"] for e in dev["epochs"]), "seconds": round(time.perf_counter() - t)}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=5, help="percent of full's training RAM")
    ap.add_argument("--methods", default="grad,grad-explore,neq-explore@int8")
    ap.add_argument("--shifts", default="severe,mild")
    args = ap.parse_args(argv)
    from edgeprune.adapt.device import build_adapt_firmware

    deployed, data = study.prepare()
    firmware = build_adapt_firmware(deployed)
    rows = []
    for shift in args.shifts.split(","):
        for method in args.methods.split(","):
            for seed in range(args.seeds):
                rows.append(check(deployed, data, method, shift, args.budget, seed, firmware))
                r = rows[-1]
                print(f"{shift:6} {method:17} seed {seed}: sim {r['accuracy_sim']:.3f} device {r['accuracy_device']:.3f}, "
                      f"same selections {r['same_selections']}, pool {r['pool_peak']:,} of {r['budget_ram']:,} B "
                      f"({r['seconds']} s)", flush=True)
    equal = sum(r["accuracy_sim"] == r["accuracy_device"] and r["same_selections"] for r in rows)
    within = all(r["pool_peak"] <= r["budget_ram"] for r in rows)
    print(f"{equal} of {len(rows)} runs identical on the device; pool within the budget in every run: {within}")
    out = study.ROOT / "bench" / "results" / "device_check.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    tmp.replace(out)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
