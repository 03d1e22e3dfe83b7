"""The plain-text table of ``benchmarks/device_check.py``: the card at the top, then one section per part (its
status and seconds, its facts as ``key: value`` lines, its rows as aligned columns with a note column for errors,
``n/a`` and ``skipped`` rows)."""

from __future__ import annotations

from typing import Any

Column = tuple[str, str, str]
"""(row key, header, format spec for numbers; "" = general)."""

COLUMNS: dict[str, list[Column]] = {
    "train_steps": [("variant", "variant", ""), ("precision", "amp", ""), ("memory", "memory", ""),
                    ("masks", "masks", ""), ("ms_per_step", "ms/step", ".1f"), ("peak_mib", "peak MiB", ".0f"),
                    ("finite", "finite", ""), ("loss", "loss", ".3f"), ("kernel", "RoIAlign", "")],
    "roi_align": [("kernel", "kernel", ""), ("precision", "precision", ""), ("ms_fwd_bwd", "fwd+bwd ms", ".2f"),
                  ("diff_vs_tv", "max|Δ| vs tv same prec.", ".2e"), ("rel_diff_out", "rel Δ out vs tv fp32", ".2e"),
                  ("rel_diff_grad", "rel Δ grad vs tv fp32", ".2e"), ("tolerance", "tolerance", ".1e")],
    "train_e2e": [("stage", "stage", ""), ("seconds", "s", ".1f"), ("ok", "ok", "")],
    "validation_ap": [("precision", "precision", ""), ("ap", "AP", ".4f"), ("ar", "AR", ".4f"),
                      ("detections", "detections", ""), ("seconds", "s", ".1f")],
    "serving": [("requests", "requests", ""), ("p50_ms", "p50 ms", ".1f"), ("p99_ms", "p99 ms", ".1f"),
                ("mean_ms", "mean ms", ".1f"), ("detections", "detections", ""), ("model_device", "on", "")],
    "throughput": [("variant", "variant", ""), ("precision", "amp", ""), ("size", "px", ""),
                   ("images_per_s", "images/s", ".1f")],
}
NOTE_WIDTH = 110


def cell(value: Any, spec: str = "") -> str:
    """One value as text: ``-`` for None, yes/no for booleans, numbers with ``spec`` (else 4 significant)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, spec or ".4g")
    return str(value)


def note(row: dict[str, Any]) -> str:
    """A row's note: its error, else its status (n/a, skipped), else its detail."""
    if row.get("error"):
        text = "ERROR " + row["error"]
    else:
        text = row.get("status") or row.get("detail") or ""
    text = " ".join(str(text).split())
    return text if len(text) <= NOTE_WIDTH else text[:NOTE_WIDTH - 1] + "…"


def table(rows: list[dict[str, Any]], columns: list[Column]) -> list[str]:
    """``rows`` as aligned lines (numbers right-aligned, text left), with a trailing note column if any row has
    one."""
    header = [h for _, h, _ in columns]
    body = [[cell(r.get(k), spec) for k, _, spec in columns] for r in rows]
    notes = [note(r) for r in rows]
    numeric = [all(isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool) or r.get(k) is None
                   for r in rows) for k, _, _ in columns]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]

    def line(cells: list[str], extra: str) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return ("  " + "  ".join(parts) + ("  " + extra if extra else "")).rstrip()

    return [line(header, "note" if any(notes) else "")] + [line(b, n) for b, n in zip(body, notes, strict=True)]


def facts(values: dict[str, Any]) -> list[str]:
    """``key: value`` lines, keys aligned."""
    width = max((len(k) for k in values), default=0)
    return [f"  {k.ljust(width)}  {cell(v)}" for k, v in values.items()]


def status(result: dict[str, Any]) -> str:
    """A part's status word: ``skipped: …``, ``ok`` or ``FAILED`` (``optional`` noted)."""
    if result.get("skipped"):
        word = f"skipped: {result['skipped']}"
    else:
        word = "ok" if result.get("ok") else "FAILED"
    return word + ("" if result.get("required", True) else " (optional)")


def render(report: dict[str, Any], parts: list) -> str:
    """The whole table of a report (``parts``: the ``device_check.Part`` list, for the order and titles)."""
    out = [f"MDF-Net device check: {report.get('card')} (device {report.get('device')}), started "
           f"{report.get('started')}, wall {report.get('wall_s', 0.0):.1f} s, "
           f"{'ALL REQUIRED PARTS OK' if report.get('ok') else 'REQUIRED PART(S) FAILED'}"]
    for i, part in enumerate(parts, start=1):
        result = report.get(part.key)
        if result is None:
            continue
        out += ["", f"{i}. {part.title}: {status(result)} ({result.get('seconds', 0.0):.1f} s)"]
        if result.get("error"):
            out.append(f"  ERROR {result['error']}")
            out += [f"    {t}" for t in result.get("traceback", [])[-3:]]
        out += facts(result.get("facts", {}))
        if result.get("rows"):
            out += table(result["rows"], COLUMNS.get(part.key, [(k, k, "") for k in result["rows"][0]]))
    return "\n".join(out)
