"""join: sources (local folder or s3://bucket/prefix) → joined Dataset + exclusion report."""

from kfp.dsl import Dataset, Markdown, Output


def join(
    source_uri: str,
    joined: Output[Dataset],
    report: Output[Markdown],
    keep_negatives: bool = True,
    min_certainty: int = 1,
    keep_discarded_eye_tracking: bool = False,
) -> dict:
    """Join REFLACX readings with CXR metadata, patients, ED stays and triage (mdfnet.pipeline.steps.join_step)."""
    from mdfnet.pipeline import reports, steps

    res = steps.join_step(source_uri, joined.path, keep_negatives=keep_negatives, min_certainty=min_certainty,
                          keep_discarded_eye_tracking=keep_discarded_eye_tracking)
    reports.write_text(report.path, res.pop("report_markdown"))
    joined.metadata.update({"readings": res["n_kept"], "boxes": res["n_boxes"]})
    return res
