"""register: best run → MLflow model version; alias `champion` moves only if validation AP is better."""

from kfp.dsl import Markdown, Output


def register(
    best: dict,
    model_name: str,
    decision: Output[Markdown],
) -> dict:
    """Register and maybe promote (mdfnet.pipeline.steps.register_step); the reason is written for the KFP UI."""
    from mdfnet.pipeline import reports, steps

    res = steps.register_step(best, model_name)
    reports.write_text(decision.path, f"# {model_name} v{res['version']}\n\n{res['reason']}\n\n"
                                      f"champion: v{res['champion_version']}\n")
    return res
