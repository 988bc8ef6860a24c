"""The `edgeprune` command line: parse flags, call edgeprune.api, print a table or --json."""

from __future__ import annotations

import json
import sys

import click

from edgeprune import __version__
from edgeprune.errors import EdgepruneError, UsageError, first_line


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns EdgepruneError into one line on stderr and a non-zero exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgepruneError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            _fail(f"internal error: {type(e).__name__}: {first_line(e)} (rerun with -v for the traceback, and please report it)", 3)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeprune")
@click.option("-v", "--verbose", is_flag=True, help="Show detail and tracebacks.")
@click.pass_context
def main(ctx, verbose):
    """edgeprune: prune, quantize and compile PyTorch models to int8 for Cortex-M and Arm phones."""
    ctx.obj = {"verbose": verbose}


def _parse_shape(_ctx, _param, value):
    if value is None:
        return None
    try:
        dims = tuple(int(v) for v in value.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"'{value}' must be comma-separated integers such as 1,8,8 (C,H,W without batch)") from None
    if not dims or min(dims) <= 0:
        raise click.BadParameter(f"'{value}' must be positive integers such as 1,8,8")
    return dims


@main.command()
@click.argument("name", type=click.Choice(["digits"]))
@click.option("--out", type=click.Path(dir_okay=False), default="model.pt", show_default=True, help="TorchScript file to write.")
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def example(name, out, epochs, seed, as_json):
    """Train a built-in example model and save it as TorchScript."""
    from edgeprune.api import make_example

    result = make_example(name, out, epochs=epochs, seed=seed, quiet=as_json)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(
            f"saved {result['path']} ({result['bytes']:,} bytes): {result['params']:,} parameters, "
            f"test accuracy {result['test_accuracy']:.1%} on input {result['input_shape']}"
        )


@main.command(name="shifted-digits")
@click.option("--shift", type=click.Choice(["severe", "mild"]), default="severe", show_default=True,
              help="severe: rotation 20-30 degrees plus stroke thickening; mild: Gaussian blur.")
@click.option("--out", type=click.Path(file_okay=False), default=".", show_default=True, help="Folder for the two .npz files.")
def shifted_digits(shift, out):
    """Write a shifted stream of the digits held-out split for `edgeprune adapt`: <shift>_adapt.npz and
    a disjoint <shift>_eval.npz (deterministic; never the training data)."""
    from edgeprune.api import write_shifted_digits

    r = write_shifted_digits(shift, out)
    click.echo(f"wrote {r['adapt']} ({r['adapt_samples']} samples to adapt on) and {r['eval']} ({r['eval_samples']} to evaluate on)")


@main.command(name="compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default="cortex-m7", show_default=True, help="Target profile (see `edgeprune targets`).")
@click.option("--data", default=None, help="'digits' (built in, the default) or an .npz with x (N,C,H,W float32) and optional y (N,) labels. "
              "For a .tflite MODEL: evaluation inputs when shape-compatible, else random int8 inputs.")
@click.option("--out", type=click.Path(file_okay=False), default="build", show_default=True, help="Output folder.")
@click.option("--prune", type=click.Choice(["magnitude", "gmp", "block", "nm", "channel", "none"]), default=None,
              help="Pruning method (block: whole 1x4 input-channel blocks, for the block4 kernels). Default: magnitude when --sparsity > 0, else none.")
@click.option("--sparsity", type=float, default=0.0, show_default=True,
              help="Target fraction of zero conv/linear weights (for channel: fraction of channels removed).")
@click.option("--scope", type=click.Choice(["global", "layer", "erk"]), default="global", show_default=True,
              help="How magnitude/GMP share sparsity between layers.")
@click.option("--nm", default="2:4", show_default=True,
              help="For --prune nm: N:M keeps at most N non-zero weights in every M consecutive input-channel weights (2:4 = 50%).")
@click.option("--keep-first-last", is_flag=True, help="Keep the first and last layers dense.")
@click.option("--finetune-epochs", type=float, default=5, show_default=True, help="Finetuning epochs after pruning (needs labels).")
@click.option("--gmp-steps", type=click.IntRange(1), default=10, show_default=True, help="Pruning steps of the GMP schedule.")
@click.option("--min-agreement", type=float, default=0.9, show_default=True, help="Fail when int8 and float top-1 agree less often.")
@click.option("--input-shape", callback=_parse_shape, help="C,H,W of one sample when the model and data do not say.")
@click.option("--arch", help="package.module:Class to build the model for a state_dict .pth.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a whole pickled module (runs code from the file).")
@click.option("--format", "weight_format", default="auto", show_default=True,
              help="Weight format per layer: auto (cost model), dense, unstructured, block4, nm24 or dead.")
@click.option("--board", default=None,
              help="Firmware board for the target (default: its QEMU board, e.g. qemu-mps2-an500 for cortex-m7; "
                   "stm32f746-disco builds for the real board).")
@click.option("--no-firmware", is_flag=True, help="Generate the C only: no firmware.elf / arm64 runner.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print report.json on stdout.")
@click.pass_context
def compile_cmd(ctx, model, target, data, out, prune, sparsity, scope, nm, keep_first_last, finetune_epochs, gmp_steps,
                min_agreement, input_shape, arch, trust_pickle, weight_format, board, no_firmware, seed, as_json):
    """Prune, finetune and quantize MODEL, convert it to int8 TFLite and a C array.

    MODEL is TorchScript (.pt), an ExportedProgram (.pt2), a state_dict (.pth with --arch),
    ONNX (.onnx, compiled as is) or an int8 TFLite model (.tflite: only the C generation,
    host validation and fit check run).
    """
    from edgeprune.api import CompileOptions, compile_model

    verbose = ctx.obj["verbose"]
    opts = CompileOptions(
        model=model, out=out, data=data, target=target, prune=prune, sparsity=sparsity, scope=scope, nm=nm,
        keep_first_last=keep_first_last, finetune_epochs=finetune_epochs, gmp_steps=gmp_steps,
        min_agreement=min_agreement, input_shape=input_shape, arch=arch, trust_pickle=trust_pickle, seed=seed,
        quiet=as_json, verbose=verbose, format=weight_format, board=board, firmware=not no_firmware,
    )
    log = (lambda msg: click.echo(msg, err=True)) if verbose else (lambda msg: None)
    report = compile_model(opts, log=log)
    if as_json:
        from edgeprune.report import to_json

        click.echo(to_json(report), nl=False)
    else:
        _print_summary(report, out, verbose)


def _console():
    """rich's Console for stdout; when piped (CI logs, make demo) 120 columns rather than 80, so the
    tables keep their columns whole."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=120)


def _print_summary(report: dict, out: str, verbose: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(v):
        return "n/a" if v is None else f"{v:.1%}"

    m, acc = report["model"], report.get("accuracy")
    console = _console()
    from pathlib import Path

    table = Table(title=f"{report['source']} -> {Path(out)}/ ({report['target']})", show_lines=False)
    for col, just in (("layer", "left"), ("op", "left"), ("weights", "right"), ("sparsity", "right"), ("MACs", "right"),
                      ("non-zero MACs", "right"), ("format", "left"), ("flash B", "right"), ("est. instr.", "right")):
        table.add_column(col, justify=just)
    for l in m["layers"]:
        table.add_row(l["name"], l["op"], "x".join(map(str, l["weight_shape"])), pct(l["sparsity"]), f"{l['macs']:,}",
                      f"{l['nonzero_macs']:,}", l.get("format", "-"), f"{l.get('weight_bytes', 0):,}",
                      f"{l.get('instructions_estimate', 0):,}")
    total_instr = sum(l.get("instructions_estimate", 0) for l in m["layers"])
    table.add_row("total", "", f"{m['weights']:,}", pct(m["sparsity"]), f"{m['macs']:,}", f"{m['nonzero_macs']:,}", "",
                  f"{sum(l.get('weight_bytes', 0) for l in m['layers']):,}", f"{total_instr:,}", style="bold")
    console.print(table)
    if acc:
        console.print(
            f"accuracy on {acc['samples']} test samples: float {pct(acc['float'])}, int8 {pct(acc['int8'])}, "
            f"top-1 agreement {pct(acc['agreement'])}, max logit error {acc['max_logit_error']:.4f}"
        )
    mem, val = report.get("memory"), report.get("validation")
    if mem:
        limits = report.get("target_limits", {})

        def of(limit):
            return f" of {limit:,}" if limit else ""

        console.print(f"memory: flash {mem['flash_bytes']:,} B{of(limits.get('flash_bytes'))} (weights {mem['weights_bytes']:,}, "
                      f"code {mem['code_bytes']:,}), SRAM {mem['sram_peak_bytes']:,} B{of(limits.get('sram_bytes'))} "
                      f"(arena {mem['arena_bytes']:,})")
    if val:
        console.print(f"generated C: bit-exact with {val['oracle']} on {val['samples']} samples ({val['inputs']} inputs)")
    if not all(l["zeros_preserved"] in (True, None) for l in m["layers"]):
        console.print("[yellow]warning: some pruned zeros did not survive quantization[/yellow]")
    fw = report.get("firmware")
    if fw:
        console.print(f"firmware: {fw['elf']} for {fw['board']} ({fw['backend']} kernels): flash {fw['flash_bytes']:,} B, "
                      f"SRAM {fw['sram_bytes']:,} B + {fw['stack_bytes']:,} B stack")
    files = ", ".join(f"{k} {v:,} B" for k, v in report["files"].items())
    console.print(f"wrote {files}")
    if verbose:
        console.print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in report["timings_s"].items()))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
def targets(as_json):
    """List target profiles and their memory limits."""
    from edgeprune.targets import TARGETS

    if as_json:
        click.echo(json.dumps([t.to_dict() for t in TARGETS.values()], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    def size(n):
        return "-" if n is None else (f"{n // 1024} KiB" if n < 1024 * 1024 else f"{n / (1024 * 1024):g} MiB")

    table = Table(title="edgeprune targets")
    for col in ("target", "description", "SRAM", "flash", "kernels", "emulator"):
        table.add_column(col)
    for t in TARGETS.values():
        table.add_row(t.name, t.description, size(t.sram_bytes), size(t.flash_bytes), t.backend, t.emulator or "-")
    _console().print(table)


# ---- devices: flash, run, bench (edgeprune.api -> edgeprune.device.runner) ----

_DEVICE_HELP = "qemu (the emulator: qemu-system-arm, or qemu-aarch64 for --target arm64) or pyocd[:UID] (a real board)."
_TARGET_HELP = "The target DIR was compiled for (optional: checked against DIR/report.json)."


def _check_target(dir: str, target: str | None) -> None:
    """`--target` on flash/run/bench only confirms what the folder holds: the program was built for it."""
    if target is None:
        return
    from pathlib import Path

    try:
        compiled = json.loads((Path(dir) / "report.json").read_text()).get("target")
    except (OSError, ValueError):
        return  # the command itself reports a missing or broken folder in its own words
    if compiled != target:
        raise UsageError(f"{dir} was compiled for {compiled}, not {target}; recompile with "
                         f"`edgeprune compile MODEL --target {target} --out DIR`")


@main.command()
@click.argument("dir", type=click.Path(file_okay=False))
@click.option("--device", default="qemu", show_default=True, help=_DEVICE_HELP)
@click.option("--target", default=None, help=_TARGET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def flash(dir, device, target, as_json):
    """Program DIR's firmware into the device and check it answers with DIR's model."""
    _check_target(dir, target)
    from edgeprune.api import flash as flash_api

    r = flash_api(dir, device=device)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    arena = "?" if r["arena_bytes"] is None else f"{r['arena_bytes']:,}"
    click.echo(f"{r['device']}: model {r['model_hash']} ({r['backend']}), arena {arena} B, "
               f"flash {r['flash_bytes']:,} B, SRAM {r['sram_bytes']:,} B")
    if r.get("note"):
        click.echo(r["note"])


@main.command()
@click.argument("dir", type=click.Path(file_okay=False))
@click.option("--input", "input_path", type=click.Path(dir_okay=False),
              help=".npy of samples, (N, *input shape) or one sample; float is quantized with the model's input parameters, int8 is sent as is.")
@click.option("--labels", type=click.Path(dir_okay=False), help=".npy of N integer labels: also print the device's accuracy.")
@click.option("--data", help="Instead of --input/--labels: the test split of 'digits' (built in) or of an .npz (x, y).")
@click.option("--device", default="qemu", show_default=True, help=_DEVICE_HELP)
@click.option("--target", default=None, help=_TARGET_HELP)
@click.option("--out", type=click.Path(dir_okay=False), help="Save the device's raw int8 outputs to this .npy.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def run(dir, input_path, labels, data, device, target, out, as_json):
    """Run samples on the device and check its outputs bit for bit against TFLite Micro."""
    _check_target(dir, target)
    from edgeprune.api import run as run_api

    if (input_path is None) == (data is None):
        raise UsageError("give the samples with --input X.npy (and optionally --labels Y.npy) or with --data, not both")
    if data is not None:
        from edgeprune.data import load_dataset

        ds = load_dataset(data)
        input_path, labels = ds.x_test, (ds.y_test if ds.has_labels else None)
    r = run_api(dir, input_path, device=device, labels=labels, out=out)
    if as_json:
        click.echo(json.dumps(r, indent=2))
    else:
        verdict = ("bit-exact with TFLite Micro" if r["bitexact"] else
                   f"MISMATCH: {r['mismatches']} of {r['samples']} samples differ from TFLite Micro "
                   f"(first: sample {r['first_mismatch']}, max difference {r['max_abs_diff']})")
        click.echo(f"{r['device']}: {r['samples']} samples, {verdict}")
        if "accuracy" in r:
            click.echo(f"accuracy {r['accuracy']:.1%} (TFLite Micro {r['tflm_accuracy']:.1%})")
        if r.get("out"):
            click.echo(f"wrote {r['out']}")
    if not r["bitexact"]:
        sys.exit(1)


@main.command()
@click.argument("dir", type=click.Path(file_okay=False))
@click.option("--device", default="qemu", show_default=True, help=_DEVICE_HELP)
@click.option("--target", default=None, help=_TARGET_HELP)
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="PNG bar chart per layer [default: DIR/bench.png].")
@click.option("--no-plot", is_flag=True, help="Do not write the chart.")
@click.option("--input", "input_path", type=click.Path(dir_okay=False),
              help=".npy whose first sample is measured (default: fixed pseudo-random int8).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench(dir, device, target, plot, no_plot, input_path, as_json):
    """Per-layer instructions (QEMU) or cycles (boards), flash and SRAM use, peak stack."""
    _check_target(dir, target)
    from edgeprune.api import bench as bench_api

    r = bench_api(dir, device=device, plot=None if no_plot else (plot or "default"), inputs=input_path)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    def num(v):
        return "-" if v is None else f"{v:,}"

    counted = r.get("total_instructions") is not None
    key = "instructions" if counted else "cycles"
    total = r["total_instructions"] if counted else r.get("total_cycles")
    table = Table(title=f"{dir} on {r['device']} ({r['backend']})")
    short = "instr." if counted else "cycles"
    for col, just in (("layer", "left"), ("op", "left"), ("format", "left"), ("MACs", "right"), (short, "right"),
                      ("share", "right"), (f"{short}/MAC", "right")):
        table.add_column(col, justify=just, overflow="fold")
    layer_sum = sum(l[key] or 0 for l in r["layers"])
    for l in r["layers"]:
        v = l[key]
        table.add_row(l["name"], l["op"], l["format"], num(l["macs"]), num(v),
                      "-" if not v or not layer_sum else f"{v / layer_sum:.1%}",
                      "-" if not v or not l["macs"] else f"{v / l['macs']:.2f}")
    table.add_row("total", "", "", num(sum(l["macs"] for l in r["layers"])), num(total), "", "", style="bold")
    console = _console()
    console.print(table)
    console.print(f"flash {r['flash_bytes']:,} B, SRAM {r['sram_bytes']:,} B (static: data + bss, arena {num(r['arena_bytes'])} B), "
                  f"peak stack {r['stack_bytes']:,} B of {num(r['stack_region_bytes'])} B")
    if r.get("plot"):
        console.print(f"wrote {r['plot']}")


# ---- on-device adaptation (edgeprune.api.adapt -> edgeprune.adapt.session) ----


@main.command()
@click.argument("dir", type=click.Path(file_okay=False))
@click.option("--data", type=click.Path(dir_okay=False), help=".npz with x (N,C,H,W or N,H,W,C float) and y (N,) labels to adapt on.")
@click.option("--eval-data", type=click.Path(dir_okay=False), help=".npz to measure accuracy on (default: the probe set).")
@click.option("--budget-ram", default="20%", show_default=True,
              help="Training RAM: bytes (6144, 6KiB = 6*1024, 6kB = 6*1000) or a share of what full training needs (20%).")
@click.option("--budget-macs", default=None, help="Backward MACs per training sample: 400000, 400k, 1.5M or 20% (of full's).")
@click.option("--selector", type=click.Choice(["neq", "su", "random", "full", "cheapest", "neq-shuffled", "neq-norm", "neq-explore",
                                               "grad", "grad-explore"]),
              default="neq", show_default=True,
              help="neq-norm, neq-explore, grad and grad-explore: the alternative scores of bench/adapt (adapt/scores.py); "
                   "grad ranks neurons by last epoch's error mass.")
@click.option("--init", type=click.Choice(["su", "random", "full-last-layer"]), default="su", show_default=True,
              help="Selection of the warm-up (before velocities or error mass exist): the first two epochs of the velocity "
                   "selectors and cheapest, the first epoch of grad and grad-explore.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="sim", show_default=True, help="sim (PyTorch on the host, what the device would do) or qemu (the firmware's adaptation mode on DIR's emulated board).")
@click.option("--rollback", is_flag=True, help="Return the device to the factory weights (needs a device).")
@click.option("--lr", type=float, default=0.1, show_default=True, help="SGD learning rate (mean loss over the batch).")
@click.option("--momentum", type=float, default=0.0, show_default=True, help="SGD momentum (its buffers count against the budget).")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--probe-per-class", type=click.IntRange(1), default=2, show_default=True, help="NEq probe samples per class.")
@click.option("--neq-history", type=click.Choice(["recompute", "int8"]), default="recompute", show_default=True,
              help="How NEq gets last epoch's outputs: recompute them from a copy of the trained parameters, or store them in int8.")
@click.option("--probe-in-ram", is_flag=True, help="Count the probe set in RAM (default: kept in flash, like the weights).")
@click.option("--trainable-from", default=None, metavar="LAYER",
              help="First layer of the trainable region (e.g. fc3; default: every weighted layer but the first). The layers "
                   "before it stay int8, and the device keeps float32 copies of the region only.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def adapt(dir, data, eval_data, budget_ram, budget_macs, selector, init, epochs, seed, device, rollback, lr, momentum,
          batch_size, probe_per_class, neq_history, probe_in_ram, trainable_from, as_json):
    """Adapt DIR's deployed model to new labelled data, training only the neurons that fit the budget."""
    from edgeprune.api import adapt as adapt_api

    if rollback:
        adapt_api(dir, None, device=device, rollback=True, trainable_from=trainable_from)
        _console().print(f"{dir}: the device on {device} is back to its factory weights (adapted slots erased)")
        return
    if data is None:
        from edgeprune.errors import UsageError

        raise UsageError("adapt needs --data (an .npz with x and y to adapt on), or --rollback")
    r = adapt_api(dir, data, eval_data=eval_data, budget_ram=budget_ram, budget_macs=budget_macs, selector=selector,
                  epochs=epochs, seed=seed, device=device, init=init, lr=lr, momentum=momentum, batch_size=batch_size,
                  probe_per_class=probe_per_class, history=neq_history, probe_in_ram=probe_in_ram,
                  trainable_from=trainable_from)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    from rich.table import Table

    layers = r["trainable_layers"]
    macs = "no MAC budget" if r["budget_macs"] is None else f"{r['budget_macs']:,} MACs/sample"
    table = Table(title=f"{selector} on {r['device']}, budget {r['budget_ram']:,} B ({r['budget_ram'] / r['full_ram']:.0%} of full's "
                        f"{r['full_ram']:,} B), {macs}, seed {seed}")
    measured = any(e.get("peak_ram_measured") is not None for e in r["epochs"])
    for col in ("epoch", "accuracy", "loss", *layers, "RAM B", *(("measured B",) if measured else ()), "MACs/sample"):
        table.add_column(col, justify="right")
    for e in r["epochs"]:
        peak = (f"{e['peak_ram_measured']:,}",) if measured else ()
        table.add_row(str(e["epoch"]) + (" (init)" if e.get("warmup") else ""), f"{e['accuracy']:.1%}", f"{e['loss']:.3f}",
                      *[str(e["selected"][n]) for n in layers], f"{e['ram_used']:,}", *peak, f"{e['macs_used']:,}")
    console = _console()
    console.print(table)
    console.print(f"accuracy on the {r['evaluated_on']} ({r['eval_samples']} samples): {r['accuracy_before']:.1%} before "
                  f"(deployed int8) -> {r['accuracy_after']:.1%} after; frozen: {', '.join(r['frozen_layers'])}")
    if measured:
        peak = max(e["peak_ram_measured"] for e in r["epochs"])
        stack = max(e.get("stack_peak_measured") or 0 for e in r["epochs"])
        console.print(f"training RAM measured on the device: peak {peak:,} B of the {r['budget_ram']:,} B budget; "
                      f"stack peak {stack:,} B" + ("; adapted parameters saved to flash" if r.get("saved_to_flash") else ""))
        m = r.get("device_memory") or {}
        if m:  # what the float32 region costs besides the budget (not counted by it)
            total = max(e.get("device_ram_peak") or 0 for e in r["epochs"])
            console.print(f"outside the budget: float32 region parameters {m['adapted_parameters']:,} B, float forward buffers "
                          f"{m['float_forward_buffers']:,} B, int8 arenas {m['int8_arena'] + m['prefix_arena']:,} B; "
                          f"device RAM at its peak {total:,} B")


if __name__ == "__main__":
    main()
