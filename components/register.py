"""register: best run → MLflow model version; alias `champion` moves only if validation AP is better."""

from kfp import dsl
from kfp.dsl import Markdown, Output

from components._images import image


@dsl.component(base_image=image("register"), install_kfp_package=False)
def register(
    best: dict,
    model_name: str,
    decision: Output[Markdown],
) -> dict:
    """Register and maybe promote (mdfnet.steps.register); the reason is written for the KFP UI."""
    from mdfnet import steps

    res = steps.register(best, model_name)
    steps.write_text(decision.path, f"# {model_name} v{res['version']}\n\n{res['reason']}\n\n"
                                    f"champion: v{res['champion_version']}\n")
    return res
