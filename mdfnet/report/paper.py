"""The paper's published numbers (test split, IoBB 0.5, %), shown beside ours for reference.

Source: the arXiv version's Fig. 2c (variants, overall and per class) and Fig. 4c (clinical feature sets), as
printed in its text (``shared/seeds``). The fusion-method and backbone ablations (Sci. Rep. Figs. 3 and 4) are
published as images whose numbers are not in the text: those columns stay empty. Single seed, 101 test images.
"""

from __future__ import annotations

PAPER_VARIANTS: dict[str, tuple[float, float]] = {
    "baseline": (19.61, 53.90), "msf3d": (27.57, 60.38), "msf1d": (22.18, 49.40), "mdf": (31.69, 54.76),
}
"""variant → (AP, AR)."""

PAPER_VARIANT_CLASSES: dict[str, dict[str, tuple[float, float]]] = {
    "baseline": {"Enlarged cardiac silhouette": (54.83, 100.00), "Atelectasis": (14.58, 40.00),
                 "Pleural abnormality": (16.29, 42.86), "Consolidation": (3.12, 20.00),
                 "Pulmonary edema": (9.22, 66.67)},
    "msf3d": {"Enlarged cardiac silhouette": (69.12, 94.44), "Atelectasis": (16.33, 42.86),
              "Pleural abnormality": (13.20, 52.38), "Consolidation": (16.93, 40.00),
              "Pulmonary edema": (22.26, 72.22)},
    "msf1d": {"Enlarged cardiac silhouette": (50.54, 83.33), "Atelectasis": (17.30, 54.29),
              "Pleural abnormality": (10.08, 23.81), "Consolidation": (17.55, 30.00),
              "Pulmonary edema": (15.43, 55.56)},
    "mdf": {"Enlarged cardiac silhouette": (70.36, 100.00), "Atelectasis": (24.43, 48.57),
            "Pleural abnormality": (16.09, 28.57), "Consolidation": (14.29, 30.00),
            "Pulmonary edema": (33.25, 66.67)},
}
"""variant → class → (AP, AR)."""

PAPER_FEATURE_SETS: dict[str, tuple[float, float]] = {
    "all": (31.69, 54.76), "all-but-gender": (29.89, 54.00), "gender": (20.37, 48.41),
    "gender+age": (23.95, 55.75), "gender+temperature": (23.35, 57.87), "gender+temperature+age": (23.71, 50.29),
    "gender+heartrate": (26.71, 52.25), "gender+heartrate+age": (26.41, 60.48), "gender+resprate": (25.82, 53.81),
    "gender+resprate+age": (27.98, 61.94),
}
"""feature_set label (``pipelines/grids/paper-features.yaml``) → (AP, AR)."""

PAPER: dict[str, dict[str, tuple[float, float]]] = {"variant": PAPER_VARIANTS, "feature_set": PAPER_FEATURE_SETS,
                                                    "fusion": {}, "backbone": {}}
"""label key of a report section → its published numbers."""
