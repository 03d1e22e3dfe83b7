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
    """Join REFLACX readings with CXR metadata, patients, ED stays and triage (mdfnet.pipeline.steps.join_step).

    Args:
        source_uri: Local folder or ``s3://bucket/prefix`` holding the four PhysioNet downloads (REFLACX,
            MIMIC-CXR-JPG, MIMIC-IV, MIMIC-IV-ED) or MIMIC-Eye's per-patient folders (the layout is detected).
        keep_negatives: Keep readings with no box of the 5 classes as negatives (the paper's data set does).
        min_certainty: Lowest REFLACX certainty (1-5) of an ellipse that becomes a box.
        keep_discarded_eye_tracking: Keep readings whose ``eye_tracking_data_discarded`` is true (the paper's code
            drops them).

    Returns:
        Output: Counts: ``n_input``, ``n_kept``, ``n_boxes`` and ``exclusions`` (reason → readings).
        joined: The joined tables and images (metadata: ``readings``, ``boxes``).
        report: The exclusion report (Markdown).
    """
    from mdfnet.pipeline import outputs, steps

    res = steps.join_step(source_uri, joined.path, keep_negatives=keep_negatives, min_certainty=min_certainty,
                          keep_discarded_eye_tracking=keep_discarded_eye_tracking)
    outputs.write_text(report.path, res.pop("report_markdown"))
    joined.metadata.update({"readings": res["n_kept"], "boxes": res["n_boxes"]})
    return res
