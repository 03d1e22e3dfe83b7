"""preprocess: joined Dataset → preprocessed Dataset (cleaned, split, cached images) + cleaning report."""

from kfp.dsl import Dataset, Input, Markdown, Output


def preprocess(
    joined: Input[Dataset],
    overrides: list[str],
    data: Output[Dataset],
    report: Output[Markdown],
) -> dict:
    """Clean clinical values, split by patient, fit on train, cache images (mdfnet.pipeline.steps.preprocess_step).

    Args:
        joined: The join step's joined tables and images.
        overrides: ``PreprocessConfig`` overrides (``key=value``, e.g. ``image_size=512``).

    Returns:
        Output: Counts: ``n_images`` and ``splits`` (split → readings).
        data: The preprocessed dataset: cleaned tables, patient-level splits, cached images (metadata: ``images``,
            ``split.<name>``).
        report: The cleaning and split report (Markdown).
    """
    from mdfnet.pipeline import outputs, steps

    res = steps.preprocess_step(joined.path, data.path, [str(o) for o in overrides])
    outputs.write_text(report.path, res.pop("report_markdown"))
    data.metadata.update({"images": res["n_images"], **{f"split.{k}": v for k, v in res["splits"].items()}})
    return res
