"""The README's commands are the contract: CI (`.ci/run`) runs exactly the README's install command and its
full-suite test command, and the install command's extras bring every package the suite imports."""
import configparser
import pathlib
import re
import shlex

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def _ci_commands():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    return [line for line in lines if line.startswith("python -m pip") or line.startswith("python -m pytest")]


def _pip_target(command):
    """The install target (e.g. '.[test]') of a pip install command, options dropped."""
    words = shlex.split(command)
    i = words.index("install")
    targets = [w for w in words[i + 1:] if not w.startswith("-") or w == "-e"]
    return [w for w in targets if w != "-e"]


def test_ci_installs_what_the_readme_installs():
    readme_install = _readme_commands()[0]
    assert readme_install.startswith("pip install"), readme_install  # the README opens with its install command
    ci_install = next(c for c in _ci_commands() if c.startswith("python -m pip"))
    assert _pip_target(ci_install) == _pip_target(readme_install), (ci_install, readme_install)


def test_ci_runs_the_readmes_full_test_command():
    readme_tests = [c for c in _readme_commands() if c.startswith("python -m pytest") and "not slow" not in c]
    assert len(readme_tests) == 1, readme_tests
    ci_tests = [c for c in _ci_commands() if c.startswith("python -m pytest")]
    assert ci_tests == readme_tests, (ci_tests, readme_tests)


def test_the_install_extras_bring_every_package_the_tests_import():
    """Every third-party package imported by a test file is a requirement or in the README's extra."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extra = _pip_target(_readme_commands()[0])[0].split("[")[1].rstrip("]")
    wanted = config["options"]["install_requires"] + config["options.extras_require"][extra]
    names = {re.split(r"[<>=\[ ]", line.strip())[0].lower().replace("-", "_")
             for line in wanted.splitlines() if line.strip() and not line.strip().startswith("#")}
    # import name -> the requirement that brings it (sqlalchemy is Optuna's own storage layer)
    distribution_of = {"absl": "absl_py", "xdist": "pytest_xdist", "sqlalchemy": "optuna"}
    imported = set()
    for path in (ROOT / "tests").glob("*.py"):
        text = path.read_text()
        for plain, dotted in re.findall(r"^\s*(?:import\s+([A-Za-z_]\w*)|from\s+([A-Za-z_]\w*)[\w.]*\s+import)",
                                        text, flags=re.M):
            imported.add(plain or dotted)
        imported |= set(re.findall(r"importorskip\(\"([A-Za-z_]\w*)", text))
    local = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"tp_keras"}
    import sys
    stdlib = set(sys.stdlib_module_names)
    third_party = {name for name in imported if name not in stdlib and name not in local}
    missing = sorted(n for n in third_party if distribution_of.get(n, n).lower() not in names)
    assert not missing, f"tests import {missing}, which the README's install command does not bring"
