"""register: best run → MLflow model version; alias `champion` moves only if validation AP is better."""

from kfp.dsl import Markdown, Output


def register(
    best: dict,
    model_name: str,
    decision: Output[Markdown],
) -> dict:
    """Register the best run's model and maybe promote it (mdfnet.pipeline.steps.register_step).

    Args:
        best: The compare task's best run summary (needs ``run_id`` and ``model_uri``).
        model_name: Registered model name in MLflow.

    Returns:
        Output: The decision: ``version``, ``promoted``, ``reason``, the candidate's and champion's validation AP,
            and ``champion_version`` after it.
        decision: The new version, the reason and the champion (Markdown, for the KFP UI).
    """
    from mdfnet.pipeline import outputs, steps

    res = steps.register_step(best, model_name)
    outputs.write_text(decision.path, f"# {model_name} v{res['version']}\n\n{res['reason']}\n\n"
                                      f"champion: v{res['champion_version']}\n")
    return res
