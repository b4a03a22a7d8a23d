"""``sdc harvest`` (a model's own op shapes into a catalog) and ``sdc precision`` (stack findings).

``sdc precision`` exits 0 whatever it finds: a less precise stack is a finding about software
or a platform, never a fault that drains a node. 2 on errors, as everywhere.
"""

from __future__ import annotations

import re
import sys

import click
from rich.markup import escape

from sdc.cli.context import AppContext, fail, handles_errors, pass_app

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _safe(value: object) -> str:
    """Record text for a terminal: no control characters, no rich markup."""
    return escape(_CONTROL.sub("?", str(value)))


@click.command("harvest")
@click.option("--hf-config", "hf_config", help="A Hugging Face config.json (or a directory holding one); no weights are read.")
@click.option("--module", "factory", help="package.module:function returning (model, example inputs), for other models.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1), help="Micro-batch size per rank.")
@click.option("--seq-len", default=2048, show_default=True, type=click.IntRange(1), help="Training sequence length.")
@click.option("--dtype", default="bf16", show_default=True, type=click.Choice(["bf16", "fp16", "fp32"]))
@click.option("--tp", "tp_size", default=1, show_default=True, type=click.IntRange(1), help="Tensor-parallel size: harvest one rank's shapes.")
@click.option("--budget", default=64, show_default=True, type=click.IntRange(1), help="Cases to keep (every kernel class is kept regardless).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Catalog file to write.")
@pass_app
@handles_errors
def harvest_command(app: AppContext, hf_config, factory, batch, seq_len, dtype, tp_size, budget, output) -> None:
    """Record one training step of a model on the meta device and write its probe catalog."""
    from probes.catalog import write_catalog
    from probes.harvest_models import HarvestError, harvest_catalog, harvest_module, load_factory, load_hf_config

    if bool(hf_config) == bool(factory):
        fail("harvest: give exactly one of --hf-config FILE or --module package.module:function")
    try:
        if hf_config:
            catalog = harvest_catalog(load_hf_config(hf_config), batch, seq_len, dtype, tp_size, budget)
        else:
            catalog = harvest_module(load_factory(factory), factory, budget)
    except HarvestError as exc:
        fail(f"harvest: {exc}")
        return
    except (RuntimeError, TypeError, ValueError) as exc:
        fail(f"harvest: the model's training step failed on the meta device: {str(exc).splitlines()[0][:300]}")
        return
    write_catalog(catalog, output)
    stats = catalog["stats"]
    if app.json_output:
        app.emit_json({"catalog": output, "model": catalog["model"]["name"], **stats})
        return
    app.out.print(
        f"harvested {stats['recorded_calls']:,} op calls of {_safe(catalog['model']['name'])}: "
        f"{stats['distinct_cases']} distinct cases in {stats['kernel_classes']} kernel classes; "
        f"kept {stats['kept']}, dropped {stats['dropped']} (each listed with the case that covers its class)"
    )
    if stats["over_budget"]:
        app.out.print(f"  {stats['over_budget']} more kernel classes than --budget {budget}: all kept")
    for op, n in stats.get("not_replayable", {}).items():
        app.out.print(f"  not replayable: {_safe(op)} x{n} (integer operands or opaque arguments)")
    if catalog["collectives"]:
        app.out.print(f"  {len(catalog['collectives'])} collective size(s) recorded")
    app.out.print(f"wrote {_safe(output)}; replay it with: sdc sweep --catalog {_safe(output)}")


@click.command("precision")
@click.option("--since", help="Only results observed at or after this ISO 8601 time.")
@click.option("--reference", help="Reference platform: a chip model or stack hash prefix (default: the most precise per case).")
@click.option("--ratio", type=click.FloatRange(min=1.0), help="Flag a platform whose mean error is this many times the reference's (default 2, or [precision] ratio).")
@pass_app
@handles_errors
def precision_command(app: AppContext, since, reference, ratio) -> None:
    """Compare precision across chip models and software stacks. Findings never quarantine a chip."""
    from sdc.analysis.precision import load_precision_results, precision_config, stack_findings
    from sdc.cli.analysis import _since

    try:
        cfg = precision_config(app.settings.section("precision"), reference=reference, ratio=ratio)
    except ValueError as exc:
        fail(str(exc))
        return
    results, labels = load_precision_results(app.store().engine(), _since(since, "precision"))
    findings = stack_findings(results, cfg, labels)
    if app.json_output:
        app.emit_json({
            "results": len(results), "ratio": cfg.ratio, "reference": cfg.reference,
            "stacks": labels, "findings": [f.to_dict() for f in findings],
        })
        sys.exit(0)
    platforms = {(r.chip_model, r.stack_hash) for r in results}
    app.out.print(f"compared {len(results):,} judged results on {len(platforms)} platform(s) (chip model x software stack)")
    if not findings:
        app.out.print("no stack-level findings: every platform is as precise as the reference")
    titles = {"bound_broken_by_stack": "stack breaks the fp64 bound", "software_changed": "software changed the result",
              "less_precise": "less precise than the reference"}
    for kind, title in titles.items():
        chosen = [f for f in findings if f.kind == kind]
        if chosen:
            app.out.print(f"[bold]{title}[/bold] ({len(chosen)}):")
        for f in chosen:
            row = f" [dim](tolerance row {_safe(f.tolerance_row)})[/dim]" if f.tolerance_row else ""
            app.out.print(f"  {_safe(f.summary)}{row}")
    if findings:
        app.out.print("these are findings about stacks and platforms; no chip was quarantined")
    sys.exit(0)
