"""Shared fixtures: a tiny random BERT (saved to disk, so runs can reload it) and
small slices of the real built-in data."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tunekit as tk  # noqa: E402

# In CI (TUNEKIT_CI=1) a skip that tests/skip_policy.py does not list fails the run.
pytest_plugins = ["skip_policy"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A 2-block x 128 random-init BERT with the MiniLM tokenizer."""
    return str(tk.make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A 2-block random-init Llama with the MiniLM tokenizer (:func:`tunekit.tiny.make_tiny`); read only:
    a test that changes it works on a copy."""
    return str(tk.make_tiny("llama", tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def rt():
    return tk.data.rotten_tomatoes()


@pytest.fixture(scope="session")
def small(rt):
    """240 real reviews (deduplicated, stratified): 192 train / 24 validation / 24 test."""
    df = rt.train.iloc[:240].assign(label=lambda d: d["label"].map(dict(enumerate(rt.label_names))))
    return tk.data.from_dataframe(df, label_names=rt.label_names, validation_size=24, test_size=24,
                                  name="rt-small")


@pytest.fixture
def tiny(tiny_dir, small):
    return tk.load_model(tiny_dir, label_names=small.label_names)


@pytest.fixture
def fast(tmp_path):
    """TrainConfig overrides for quick runs."""
    return dict(runs_dir=str(tmp_path / "runs"), train_size=64, batch_size=16, progress=False,
                evals_per_epoch=2)


@pytest.fixture
def lab(tiny_dir, small, tmp_path):
    """The lab on the tiny model and 240 reviews (tests/test_widgets.py, test_lab_controls.py)."""
    pytest.importorskip("ipywidgets")
    from tunekit.widgets import Lab
    lab = Lab(model=tiny_dir, data=small, runs_dir=str(tmp_path / "runs"))
    lab.controls.train_size.value = 32
    lab.controls.eval_size.value = 16
    return lab


# ----- notebooks (tests/test_notebooks.py, tests/test_export.py) ----------------------------------
def _uses_this_python(spec) -> bool:
    exe = spec.argv[0] if spec.argv else ""
    if exe in ("python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        return True  # jupyter_client replaces a bare "python" with sys.executable
    return os.path.abspath(exe) == os.path.abspath(sys.executable)  # not resolved: venvs symlink one python


@pytest.fixture(scope="session")
def python3_kernel(tmp_path_factory):
    """A ``python3`` kernelspec that runs this interpreter (so the kernel sees tunekit).

    A fresh venv with ipykernel usually has one; otherwise (or when the ``python3`` found
    first belongs to another interpreter) one is installed under a temporary prefix and
    put first on JUPYTER_PATH for the session."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel, find_kernel_specs

    try:
        ok = "python3" in find_kernel_specs() and _uses_this_python(KernelSpecManager().get_kernel_spec("python3"))
    except NoSuchKernel:
        ok = False
    if ok:
        yield "python3"
        return
    prefix = tmp_path_factory.mktemp("kernel-prefix")
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", "python3"],
                   check=True, capture_output=True)
    mp = pytest.MonkeyPatch()
    paths = [str(prefix / "share" / "jupyter")] + [p for p in [os.environ.get("JUPYTER_PATH")] if p]
    mp.setenv("JUPYTER_PATH", os.pathsep.join(paths))
    assert _uses_this_python(KernelSpecManager().get_kernel_spec("python3"))
    yield "python3"
    mp.undo()


# ----- the real-browser tests (tests/test_browser.py, test_voila.py, test_export.py, test_notebooks.py) --
@pytest.fixture
def chromium() -> str:
    """The Chromium path; skips, or fails under TUNEKIT_REQUIRE_BROWSER=1 (see static_page)."""
    import static_page  # tests/ is on sys.path
    return static_page.require_browser()


# ----- a real PostgreSQL server (tests/test_experiments.py: workers sharing one queue) ---------------------
@pytest.fixture
def postgres_url():
    """A PostgreSQL server of its own: a cluster initialised in a temporary folder, run as the
    package's non-root user (``postgres``) when the tests run as root, listening on a Unix socket
    in that folder only; stopped and removed afterwards. Skips without the server's programs, or
    fails under TUNEKIT_REQUIRE_POSTGRES=1 (CI: setup.sh --dev installs Debian's postgresql)."""
    import glob
    import os
    import pwd
    import shutil
    import socket
    import subprocess
    import tempfile
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    bindir = os.path.dirname(found[-1]) if found[-1] else ""
    if not bindir:
        if os.environ.get("TUNEKIT_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL's initdb is not installed (sudo apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed")
    pytest.importorskip("psycopg2")
    as_user: list[str] = []
    folder = tempfile.mkdtemp(prefix="tunekit-pg-")  # under /tmp: the server's user must reach it
    os.chmod(folder, 0o755)
    if os.geteuid() == 0:  # the server refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = os.path.join(folder, "data")

    def run(*cmd):
        subprocess.run(as_user + list(cmd), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    try:
        run(f"{bindir}/initdb", "-D", data, "-U", "tunekit", "--auth=trust", "--no-sync")
        run(f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(folder, "log"),
            "-o", f"-p {port} -k {folder} -c listen_addresses='' -c fsync=off", "start")
        yield f"postgresql+psycopg2://tunekit@/postgres?host={folder}&port={port}"
    finally:
        subprocess.run(as_user + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
