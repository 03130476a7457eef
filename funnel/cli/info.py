"""`funnel info INDEX`: what an index holds."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from funnel.cli.output import emit_json, human_bytes, rotation_lines


def info_command(
    index: Path = typer.Argument(..., help="An index folder."),
    json_output: bool = typer.Option(False, "--json", help="Print the manifest summary as JSON."),
) -> None:
    """Show an index's model, size, shortlists and default plan (reads only the manifest)."""
    from funnel.indexes.manifest import read_manifest
    from funnel.indexes.summary import index_summary

    summary = index_summary(index)
    manifest = read_manifest(index)
    disk = summary["disk_bytes"]
    if json_output:
        emit_json(summary)
        return
    deleted = f" ({manifest.deleted} deleted rows: `funnel compact` reclaims them)" if manifest.deleted else ""
    typer.echo(f"{index}: {manifest.count} documents in {len(manifest.segments)} segment(s), {human_bytes(disk)}{deleted}")
    typer.echo(f"  model      {manifest.model} ({manifest.dim} dims, stored as {manifest.vector_dtype})")
    if manifest.layers:
        typer.echo(
            f"  layers     {', '.join(map(str, manifest.layers))} of {manifest.depth} (vectors and shortlists for each; stages LAYER:DIM:N)"
        )
    for line in rotation_lines(manifest):
        typer.echo(f"  {line}")
    for spec in manifest.shortlists:
        typer.echo(f"  shortlist  {spec.dim} dims, {spec.kind} {json.dumps(spec.params) if spec.params else ''}".rstrip())
    if manifest.lexical:
        typer.echo(f"  lexical    bm25 over {manifest.lexical.documents} documents (stages like 64:400+bm25:50,full:10)")
    else:
        typer.echo("  lexical    none (rebuild with --lexical for +bm25:N stages)")
    for entry in manifest.query_encoders:
        t = entry.training
        typer.echo(
            f"  queries    {entry.name} ({entry.kind}): cosine {t.get('held_out_cosine')} to the model on held-out texts, "
            f"{t.get('student_ms')} ms a query against the model's {t.get('model_ms')} ms (stages like {entry.name}:full:10)"
        )
    plan = f"{manifest.plan['stages']} (k ≤ {manifest.plan['k']})" if manifest.plan else "shortlist max(200, 20k), rescore at full dims"
    typer.echo(f"  plan       {plan}")
    stored = manifest.plan or {}
    measured = stored.get("measured")
    if measured:
        recall = measured.get("recall") or measured.get("recall_fit")
        ms = f", {measured['ms_per_query']:.2f} ms/query" if measured.get("ms_per_query") is not None else ""
        exact = f" (exact: {measured['exact_ms_per_query']:.2f})" if measured.get("exact_ms_per_query") is not None else ""
        typer.echo(f"  tuned      recall@{stored['k']} {recall:.4f} vs exact (target {stored.get('target_recall')}){ms}{exact}")
        calibration = stored.get("calibration", {})
        typer.echo(f"             calibrated on {calibration.get('queries')} queries: {calibration.get('source')}")
    decision = stored.get("query_encoder")
    if decision:
        typer.echo(f"  queries    {_query_encoder_line(decision)}")


def _query_encoder_line(decision: dict) -> str:
    """What ``--query-encoder auto`` runs and why, as the tuner measured it."""
    if "int8_agreement" not in decision:
        return f"{decision['precision']} ONNX ({decision.get('reason', 'not measured')})"
    verdict = "≥" if decision["precision"] == "int8" else "<"
    return (
        f"{decision['precision']} ONNX: int8's top-{decision['k']} agrees with fp32's at {decision['int8_agreement']:.4f} "
        f"{verdict} target {decision['target_recall']:g} on {decision['queries']} calibration queries"
    )


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)
