"""The four MLPerf Tiny models through edgeprune, dense and pruned, next to TFLite Micro's arena.

For each model (zoo.py) and sparsity: train briefly on synthetic data (cached), compile with
edgeprune.api.compile_model (cached), then measure the .tflite:

- TFLite Micro's minimal arena by bisection and its planned head (compile/tflm_arena.py);
- our static activation plan: plan_memory(simplify(build_graph(.tflite))) with in-place reuse;
- from the compile's report.json when the back half wrote one: memory (arena, flash) and the sum
  of per-layer instruction estimates.

Prints a table and writes bench/results/models.json atomically. Everything is cached under
build/bench-models/ (trained models, data, compiles, TFLM bisections keyed on the .tflite's hash):
a compile is redone when its model, sparsity, target or finetuning changed, when it failed, or
with --force (toolchain edits alone do not redo it; each record names the toolchain hash).
Usage: python bench/models/run.py [--models ad,kws] [--sparsities 0,0.9] [--force] [--show]
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

import zoo  # noqa: E402

SPARSITIES = (0.0, 0.5, 0.7, 0.9)
WORK = ROOT / "build" / "bench-models"
RESULTS = ROOT / "bench" / "results" / "models.json"
TARGET = "cortex-m7"  # 320 KiB SRAM, 1 MiB flash: all four fit (see the table's fit column)
ANALYSIS_VERSION = 1  # bump to invalidate cached analyses
ARENA_TARGET = 0.7  # issue 4: our arena <= 0.7x TFLM's minimal arena


def log(msg: str) -> None:
    print(f"[bench-models {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def prepare(entry: zoo.ZooEntry, work: Path, samples: int | None = None, epochs: int | None = None,
            **model_kwargs) -> tuple[Path, Path]:
    """Train and save (model.pt, data.npz) under work/, unless already there."""
    from edgeprune.examples import save_torchscript

    model_path, data_path = work / "model.pt", work / "data.npz"
    if model_path.is_file() and data_path.is_file():
        return model_path, data_path
    t = time.perf_counter()
    x, y = zoo.synthetic_data(entry, samples=samples)
    model = zoo.train(entry, x, y, epochs=epochs, **model_kwargs)
    zoo.save_npz(data_path, x, y)
    save_torchscript(model, model_path)  # last: its presence marks the pair complete
    log(f"{entry.name}: trained {sum(p.numel() for p in model.parameters()):,} parameters in {time.perf_counter() - t:.1f} s")
    return model_path, data_path


def toolchain_hash() -> str:
    """Of every edgeprune source file, recorded with each compile (records show which toolchain
    made them). Cached compiles are reused across toolchain edits, which are frequent; --force
    recompiles."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "toolchain" / "edgeprune").rglob("*.py")):
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def opts_key(sparsity: float, target: str, finetune_epochs: float) -> str:
    return f"sparsity={sparsity} target={target} finetune_epochs={finetune_epochs}"


def compile_one(model_path: Path, data_path: Path, out: Path, sparsity: float, target: str = TARGET,
                finetune_epochs: float = 1, force: bool = False) -> dict:
    """edgeprune's compile (front half, plus the back half once compile_model runs it); cached in out/."""
    from edgeprune.api import CompileOptions, compile_model

    report_path, stamp_path = out / "report.json", out.parent / f"{out.name}.toolchain"
    key = opts_key(sparsity, target, finetune_epochs)
    if report_path.is_file() and not force and report_path.stat().st_mtime >= model_path.stat().st_mtime \
            and stamp_path.is_file() and stamp_path.read_text().split(" ", 1)[-1] == key:
        report = json.loads(report_path.read_text())
        if "memory" in report:  # else a front-half-only compile from before the back half: redo it
            report["toolchain"] = stamp_path.read_text().split(" ", 1)[0]
            return report
    stamp = f"{toolchain_hash()} {key}"
    t = time.perf_counter()
    opts = CompileOptions(
        model=model_path, out=out, data=str(data_path), target=target, sparsity=sparsity,
        finetune_epochs=finetune_epochs,
        # Synthetic data and seconds of training: agreement is recorded, not enforced. The
        # autoencoder's "agreement" is the argmax of its 640 outputs, meaningless for a regression.
        min_agreement=0.0, quiet=not sys.stderr.isatty(),
    )
    report = compile_model(opts)
    stamp_path.write_text(stamp)
    report["toolchain"] = stamp.split(" ", 1)[0]
    log(f"compiled {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} in {time.perf_counter() - t:.1f} s")
    return report


def analyse(tflite_path: Path, force: bool = False) -> dict:
    """TFLM's minimal arena and head, our plan, the ops after passes; cached next to the .tflite."""
    from edgeprune.compile import ir, passes
    from edgeprune.compile.planner import plan_memory
    from edgeprune.compile.tflite_reader import read_tflite
    from edgeprune.compile.tflm_arena import tflm_arena_report

    model = tflite_path.read_bytes()
    key = f"{ANALYSIS_VERSION}:{hashlib.sha256(model).hexdigest()}"
    cache = tflite_path.parent / "bench_analysis.json"
    if cache.is_file() and not force:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["analysis"]
    t = time.perf_counter()
    tflm = tflm_arena_report(model)
    t_tflm = time.perf_counter() - t
    result: dict = {
        "tflite_bytes": len(model),
        "tflm": {"minimal_arena": tflm.minimal_arena, "head_bytes": tflm.head_bytes, "tail_bytes": tflm.tail_bytes,
                 "bisection_s": round(t_tflm, 2)},
    }
    try:
        raw = ir.build_graph(read_tflite(model))
        g = passes.simplify(raw)
        in_place = passes.find_in_place(g)
        plan = plan_memory(g, in_place=in_place, residual_adds=passes.find_residual_adds(g, in_place))
        plan.validate(g)
        biggest = max(plan.timeline, key=lambda e: e[2]) if plan.timeline else None
        result["ours"] = {
            "activation_plan_bytes": plan.arena_bytes,
            "peak_live_bytes": plan.peak_live_bytes,
            "peak_at": {"op": biggest[0], "kind": biggest[1]} if biggest else None,
            "plan_order": plan.order,
            "in_place": len(in_place),
            "dead_channel_layers": len(passes.find_dead_channels(g)),
            "ops_tflite": len(raw.ops),
            "ops_after_passes": len(g.ops),
            "op_kinds": sorted({op.kind for op in g.ops}),
        }
        result["error"] = None
    except Exception as e:  # an op or tensor the IR rejects: its one-line message names op and index
        from edgeprune.errors import first_line

        result["ours"] = None
        result["error"] = first_line(e)
    from edgeprune.fileio import write_bytes_atomic

    write_bytes_atomic(cache, json.dumps({"key": key, "analysis": result}, indent=1).encode())
    return result


def back_half(report: dict) -> dict | None:
    """What the back half adds to report.json (issue 4 item 9), if it ran."""
    memory = report.get("memory")
    if not memory:
        return None
    layers = report.get("model", {}).get("layers", [])
    estimates = [layer.get("instructions_estimate") for layer in layers]
    known = [e for e in estimates if isinstance(e, (int, float))]
    return {
        "memory": memory,
        "instructions_estimate": sum(known) if known else None,
        "layers_with_estimate": len(known),
        "formats": {layer.get("name", str(i)): layer.get("format") for i, layer in enumerate(layers) if layer.get("format")},
        "validation": report.get("validation"),
        "timings_s": report.get("backend_timings_s"),
    }


def record(entry: zoo.ZooEntry, sparsity: float, report: dict, analysis: dict, compile_s: float | None = None) -> dict:
    """One row of models.json."""
    bh = back_half(report)
    ours, tflm = analysis.get("ours"), analysis["tflm"]
    plan = ours["activation_plan_bytes"] if ours else None
    # The back half's arena includes kernel scratch; without it the activation plan is our arena.
    arena = bh["memory"].get("arena_bytes") if bh else plan
    flash = bh["memory"].get("flash_bytes") if bh else None
    limits = report.get("target_limits", {})
    rec = {
        "model": entry.name,
        "description": entry.description,
        "sparsity": sparsity,
        "achieved_sparsity": report.get("model", {}).get("sparsity"),
        "target": report.get("target"),
        "tflite_bytes": analysis["tflite_bytes"],
        "tflite_ops": report.get("tflite", {}).get("ops"),
        "agreement": report.get("accuracy", {}).get("agreement"),
        "max_output_error": report.get("accuracy", {}).get("max_logit_error"),
        "tflm": tflm,
        "official_tflm": {"minimal_arena": entry.official_tflm[0], "activation_plan": entry.official_tflm[1]},
        "ours": ours,
        "arena_bytes": arena,
        "arena_source": "back half (report.json memory.arena_bytes)" if bh else "planner (activations only, no kernel scratch)",
        "flash_bytes": flash,
        "sram_peak_bytes": bh["memory"].get("sram_peak_bytes") if bh else None,  # arena plus stack estimate
        "instructions_estimate": bh["instructions_estimate"] if bh else None,
        "back_half": bh,
        "arena_vs_tflm_minimal": round(arena / tflm["minimal_arena"], 4) if arena else None,
        "arena_vs_official_tflm": round(arena / entry.official_tflm[0], 4) if arena else None,
        "plan_vs_tflm_head": round(plan / tflm["head_bytes"], 4) if plan and tflm["head_bytes"] else None,
        "flash_vs_tflite": round(flash / analysis["tflite_bytes"], 4) if flash else None,
        "fits_sram": arena <= limits["sram_bytes"] if arena and limits.get("sram_bytes") else None,
        "targets_met": {
            "arena_le_0.7x_tflm_minimal": arena <= ARENA_TARGET * tflm["minimal_arena"] if arena else None,
            "plan_le_tflm_head": plan <= tflm["head_bytes"] if plan and tflm["head_bytes"] else None,
        },
        "compile_timings_s": report.get("timings_s"),
        "toolchain": report.get("toolchain"),
        "error": analysis.get("error"),
    }
    if compile_s is not None:
        rec["compile_s"] = round(compile_s, 1)
    return rec


def bench_model(entry: zoo.ZooEntry, sparsities=SPARSITIES, work: Path = WORK, target: str = TARGET,
                finetune_epochs: float = 1, force: bool = False, samples: int | None = None, epochs: int | None = None,
                **model_kwargs) -> list[dict]:
    """Train (cached), compile and measure one model at each sparsity; returns its records."""
    mdir = work / entry.name
    model_path, data_path = prepare(entry, mdir, samples=samples, epochs=epochs, **model_kwargs)
    rows = []
    for s in sparsities:
        out = mdir / f"s{round(s * 100):02d}"
        log(f"{entry.name} sparsity {s:.1f}: compile")
        t = time.perf_counter()
        try:
            report = compile_one(model_path, data_path, out, s, target, finetune_epochs, force)
        except Exception as e:
            from edgeprune.errors import first_line

            log(f"{entry.name} sparsity {s:.1f}: compile failed: {first_line(e)}")
            rows.append({"model": entry.name, "sparsity": s, "error": f"compile: {first_line(e)}"})
            continue
        compile_s = time.perf_counter() - t
        log(f"{entry.name} sparsity {s:.1f}: TFLite Micro bisection and our plan")
        analysis = analyse(out / "model.tflite", force)
        rows.append(record(entry, s, report, analysis, compile_s))
    return rows


def _kb(n) -> str:
    return "-" if n is None else f"{n:,}"


def table(rows: list[dict]) -> str:
    head = ("model", "sp", "achieved", "tflite B", "TFLM min", "TFLM head", "our plan", "our arena", "arena/TFLM",
            "plan/head", "sram peak", "flash B", "flash/tflite", "instr est", "bitexact", "ok")
    lines = [head]
    for r in rows:
        if r.get("tflm") is None:
            lines.append((r["model"], f"{r['sparsity']:.1f}", "failed", *["-"] * (len(head) - 3)))  # error below
            continue
        ours = r.get("ours") or {}
        met = r["targets_met"]
        ok = "".join("y" if v else ("n" if v is not None else "-") for v in met.values())
        lines.append((
            r["model"], f"{r['sparsity']:.1f}",
            "-" if r.get("achieved_sparsity") is None else f"{r['achieved_sparsity']:.2f}",
            _kb(r["tflite_bytes"]), _kb(r["tflm"]["minimal_arena"]), _kb(r["tflm"]["head_bytes"]),
            _kb(ours.get("activation_plan_bytes")), _kb(r["arena_bytes"]),
            "-" if r["arena_vs_tflm_minimal"] is None else f"{r['arena_vs_tflm_minimal']:.3f}",
            "-" if r["plan_vs_tflm_head"] is None else f"{r['plan_vs_tflm_head']:.3f}",
            _kb(r.get("sram_peak_bytes")), _kb(r["flash_bytes"]),
            "-" if r["flash_vs_tflite"] is None else f"{r['flash_vs_tflite']:.3f}", _kb(r["instructions_estimate"]),
            {True: "yes", False: "NO"}.get(((r.get("back_half") or {}).get("validation") or {}).get("bitexact"), "-"), ok,
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = ["  ".join(str(c).rjust(w) for c, w in zip(line, widths)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    if rows and any(r.get("error") for r in rows):
        out += [f"{r['model']} {r['sparsity']:.1f}: {r['error']}" for r in rows if r.get("error")]
    return "\n".join(out)


def merged(rows: list[dict], path: Path) -> list[dict]:
    """rows plus the records of other models and sparsities already in the results file (a partial
    rerun updates its own rows only), in zoo order then sparsity."""
    done = {(r["model"], r["sparsity"]) for r in rows}
    old = []
    if path.is_file():
        try:
            old = [r for r in json.loads(path.read_text())["records"] if (r["model"], r["sparsity"]) not in done]
        except (ValueError, KeyError, TypeError):
            old = []
    order = list(zoo.ZOO)
    return sorted(old + rows, key=lambda r: (order.index(r["model"]) if r["model"] in order else len(order), r["sparsity"]))


def write_results(rows: list[dict], path: Path = RESULTS) -> None:
    from edgeprune.fileio import write_bytes_atomic

    doc = {
        "description": "MLPerf Tiny architectures through edgeprune vs TFLite Micro's minimal arena (bench/models/run.py)",
        "target_checks": {"arena_le_0.7x_tflm_minimal": "our arena <= 0.7 x TFLM minimal arena",
                          "plan_le_tflm_head": "our activation plan <= TFLM's planned head"},
        "records": rows,
    }
    write_bytes_atomic(path, (json.dumps(doc, indent=1) + "\n").encode())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(zoo.ZOO), help=f"comma-separated, of {', '.join(zoo.ZOO)}")
    p.add_argument("--sparsities", default=",".join(str(s) for s in SPARSITIES))
    p.add_argument("--target", default=TARGET)
    p.add_argument("--finetune-epochs", type=float, default=1.0)
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--force", action="store_true", help="recompile and re-measure even when cached")
    p.add_argument("--show", action="store_true", help="print the table of the results file and exit")
    args = p.parse_args(argv)
    if args.show:
        print(table(json.loads(args.results.read_text())["records"]))
        return 0
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in zoo.ZOO]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(zoo.ZOO)}")
    sparsities = [float(s) for s in args.sparsities.split(",") if s]
    rows = []
    for name in names:
        rows += bench_model(zoo.ZOO[name], sparsities, args.work, args.target, args.finetune_epochs, args.force)
        write_results(merged(rows, args.results), args.results)  # partial results survive an interrupted run
    print(table(rows))
    print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
