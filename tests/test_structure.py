"""The shape of the code: imports flow one way, one storage open per process, the plan's
rules, the search space declared once, short functions, and the linter."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path

import optuna
import pytest
from conftest import write_mnist
from helpers import cli_env, cnn_tune
from optuna.distributions import CategoricalDistribution, FloatDistribution

from cnn_tune.errors import ProtocolConflict, UsageError
from cnn_tune.model import space
from cnn_tune.search.plan import (
    OptimizeOptions,
    check_options,
    make_protocol,
    never_set_up,
    resolve_length,
    resolve_patience,
    resolve_pruner,
    resolve_search,
    resolve_threads,
    resolve_workers,
)
from cnn_tune.search.presets import PRESETS, Search
from cnn_tune.storage.protocol import DEFAULT_EPOCHS

PACKAGE = Path(__file__).resolve().parent.parent / "cnn_tune"


# --- imports ---------------------------------------------------------------------------------


def module_name(package: Path, path: Path) -> str:
    """``cnn_tune/search/worker.py`` → ``search.worker``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(package).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports, at the top or inside functions alike (names
    relative to ``package``: ``search.worker``), relative or absolute imports alike."""
    modules = {module_name(package, p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            elif (node.module or "").startswith("cnn_tune"):
                base = node.module[len("cnn_tune.") :] if node.module != "cnn_tune" else ""
            else:
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                deps.add(full if full in modules else (base or "__init__"))
        graph[name] = deps - {name}
    return graph


def layers(graph: dict[str, set[str]]) -> dict[str, int]:
    """A module stands one layer above everything it imports (a module importing nothing: 1)."""
    memo: dict[str, int] = {}

    def layer(module: str) -> int:
        if module not in memo:
            memo[module] = 1 + max((layer(d) for d in graph.get(module, ())), default=0)
        return memo[module]

    return {m: layer(m) for m in graph}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A chain of imports that comes back to its start, or None."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        if state.get(module) == "open":
            return path + [module]
        if state.get(module) == "done":
            return None
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            cycle = visit(dep, path + [module])
            if cycle:
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def test_cnn_tune_modules_import_each_other_without_a_cycle():
    graph = import_graph(PACKAGE)
    assert {"search.worker", "search.events", "search.records"} <= graph["search.parallel"]
    assert "search.optimize" not in graph["search.parallel"]
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph) or [])


# The parts, bottom to top: a part may import only the parts before it (and errors, files).
PARTS = ["processes", "data", "storage", "model", "search", "cli"]


def test_the_parts_import_downwards_only_and_stack_at_most_ten_layers():
    graph = import_graph(PACKAGE)
    upward = [
        f"{m} → {d}"
        for m, deps in graph.items()
        for d in deps
        if m.split(".")[0] in PARTS
        and d.split(".")[0] in PARTS
        and PARTS.index(d.split(".")[0]) > PARTS.index(m.split(".")[0])
    ]
    assert not upward, upward
    assert {
        m
        for m, deps in graph.items()
        if m.split(".")[0] not in ("cli", "__main__")
        for d in deps
        if d.startswith("cli")
    } == set()
    depth = layers(graph)
    assert max(depth.values()) <= 10, sorted(depth.items(), key=lambda kv: -kv[1])[:12]


def test_the_house_has_rooms_with_a_plan_on_each_door():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "errors.py", "files.py"], top
    for part in PARTS:
        doc = ast.get_docstring(ast.parse((PACKAGE / part / "__init__.py").read_text()))
        assert doc and "may import" in doc.lower(), f"{part}/__init__.py says what it owns and may import"
    too_long = {
        module_name(PACKAGE, p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400
    }
    assert not too_long, too_long


def _public(part: str) -> list[str]:
    """The modules ``part``'s ``__init__.py`` names in ``__all__``."""
    for node in ast.parse((PACKAGE / part / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def test_each_part_names_what_the_others_may_use_and_they_keep_to_it():
    """Other folders, the tests and the benchmarks import only the modules a part's ``__all__``
    names, and no name with a leading underscore from any module of cnn_tune."""
    public = {part: _public(part) for part in PARTS}
    assert all(public.values()), public
    assert all((PACKAGE / part / f"{m}.py").is_file() for part in PARTS for m in public[part])
    wrong, private = [], []
    root = PACKAGE.parent
    for path in [*PACKAGE.rglob("*.py"), *(root / "tests").rglob("*.py"), *(root / "benchmarks").rglob("*.py")]:
        rel = path.relative_to(root).parts
        here = rel[1] if rel[0] == "cnn_tune" and len(rel) > 2 else rel[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("cnn_tune"):
                continue
            parts = node.module.split(".")
            if len(parts) >= 3 and parts[1] in PARTS and parts[1] != here and parts[2] not in public[parts[1]]:
                wrong.append(f"{'/'.join(rel)} imports {node.module}")
            if here != (parts[1] if len(parts) > 2 else None):
                private += [
                    f"{'/'.join(rel)} imports {a.name} from {node.module}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.endswith("__")
                ]
    assert not wrong, wrong
    assert not private, private


def test_every_class_another_module_uses_says_what_it_is():
    defined = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                defined[node.name] = (path, ast.get_docstring(node) is not None)
    undocumented = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                undocumented |= {
                    a.name
                    for a in node.names
                    if a.name in defined and defined[a.name][0] != path and not defined[a.name][1]
                }
    assert not undocumented, sorted(undocumented)


def test_the_views_do_not_load_torch():
    """What a command shows is rendered from torch-free records: `best`, `trials` and
    `studies` never pay torch's import (0.5 GB, seconds)."""
    code = (
        "import sys; import cnn_tune.cli.views, cnn_tune.cli.main, cnn_tune.storage.inspection; "
        "print('torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stdout + r.stderr


def test_the_walk_finds_a_cycle_through_a_lazy_import(tmp_path):
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .c import y\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    assert find_cycle(import_graph(tmp_path)) == ["a", "b", "c", "a"]


# --- one storage open per process ------------------------------------------------------------

SITECUSTOMIZE = """
import os
if os.environ.get("OPEN_LOG"):
    import optuna.storages

    _init = optuna.storages.RDBStorage.__init__

    def _counted(self, *args, **kwargs):
        with open(os.environ["OPEN_LOG"], "a") as log:
            log.write(f"{os.getpid()}\\n")
        _init(self, *args, **kwargs)

    optuna.storages.RDBStorage.__init__ = _counted
"""


@pytest.fixture()
def counted(tmp_path):
    """Run the real CLI in fresh processes (spawned workers too) that log each Optuna storage
    they construct: one line per open, naming the process."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    data = write_mnist(tmp_path / "data", n_train=200, n_test=20)
    log = tmp_path / "opens.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(hook),
        "OPEN_LOG": str(log),
        "CNN_TUNE_DATA_DIR": str(data),
        "CNN_TUNE_STORAGE": f"sqlite:///{tmp_path / 'o.db'}",
        "CNN_TUNE_DEBUG": "",
    }

    def run(*args: str) -> list[str]:
        log.unlink(missing_ok=True)
        r = subprocess.run(cnn_tune(*args), env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return log.read_text().split() if log.exists() else []

    return run


def test_one_storage_open_per_process(counted, tmp_path):
    fast = ["--epochs", "1", "--device", "cpu", "--pruner", "none"]
    assert len(counted("optimize", "--trials", "1", *fast)) == 1  # a new database
    assert len(counted("optimize", "--trials", "1", *fast)) == 1  # resuming it
    opens = counted("optimize", "--trials", "2", "--workers", "2", *fast)
    assert len(opens) == 3 and len(set(opens)) == 3  # the parent and each worker: once each
    model = str(tmp_path / "m.pt")
    for command in (
        ["trials"],
        ["best"],
        ["studies"],
        ["plot", "report", "-o", str(tmp_path / "r.html")],
        ["confirm", "--top", "1", "--seeds", "1", "--workers", "1", "--device", "cpu"],
        ["retrain", "--device", "cpu", "-o", model],
        ["backup", str(tmp_path / "copy.db")],
    ):
        assert len(counted(*command)) == 1, command  # every command that reads the study: once
    assert counted("evaluate", model, "--device", "cpu") == []  # the checkpoint alone: no database


# The real CLI, run inside this script's own process, then: was torch ever imported here?
IN_PROCESS = """
import sys
from cnn_tune.cli.main import main
sys.argv = ["cnn-tune", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    print("exit", exit.code, "torch loaded:", "torch" in sys.modules)
"""


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_the_parent_of_worker_processes_never_imports_torch(tmp_path, device):
    """The parent only waits on its workers: torch's import alone would cost it ~345 MB (the
    CUDA build). One worker trains in this process, and loads torch."""
    from cnn_tune.model.device import no_gpu_possible

    if device == "auto" and not no_gpu_possible():
        pytest.skip("a GPU driver's device node is here: --device auto asks torch whether CUDA works")
    data = write_mnist(tmp_path / "data", n_train=200, n_test=20)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    fast = ["--epochs", "1", "--device", device, "--pruner", "none", "--patience", "0"]

    def run(workers: str) -> str:
        r = subprocess.run(
            [sys.executable, "-c", IN_PROCESS, "optimize", "--trials", "2", "--workers", workers, *fast],
            env=cli_env(data, url),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().splitlines()[-1]

    assert run("2") == "exit 0 torch loaded: False"
    assert run("1") == "exit 0 torch loaded: True"
    trials = optuna.load_study(study_name="mnist-cnn", storage=url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4


# --- the plan's rules, without data or training ----------------------------------------------


def _stored(epochs: int = 3, limit: int | None = 200):
    return make_protocol(epochs, limit, 400, "f" * 16)


def test_epochs_and_limit_come_from_the_study_unless_asked():
    assert resolve_length(OptimizeOptions(), None) == (DEFAULT_EPOCHS, None)
    assert resolve_length(OptimizeOptions(epochs=4, train_limit=100), None) == (4, 100)
    assert resolve_length(OptimizeOptions(), _stored()) == (3, 200)
    assert resolve_length(OptimizeOptions(epochs=3, train_limit=200), _stored()) == (3, 200)


@pytest.mark.parametrize("options", [OptimizeOptions(epochs=5), OptimizeOptions(train_limit=300)])
def test_asking_a_study_for_another_length_is_a_conflict(options):
    with pytest.raises(ProtocolConflict, match="runs 3 epochs on 200 training images"):
        resolve_length(options, _stored())


def test_a_study_without_protocol_is_adopted_only_while_empty():
    assert never_set_up(has_protocol=False, n_trials=0)
    assert not never_set_up(has_protocol=False, n_trials=1)
    assert not never_set_up(has_protocol=True, n_trials=0)


def test_workers_and_threads():
    assert resolve_workers(2, 5) == (2, None)
    workers, note = resolve_workers(5, 2)
    assert workers == 2 and "starting 2 worker(s)" in note
    assert resolve_threads(1, None, cores=16) is None  # one worker: torch's own default
    assert resolve_threads(4, None, cores=16) == 4 and resolve_threads(4, None, cores=2) == 1
    assert resolve_threads(4, 3, cores=2) == 3  # asked for: kept


def test_protocol_checks_the_train_limit_against_the_data():
    assert make_protocol(10, 100, 400, "x").n_train + make_protocol(10, 100, 400, "x").n_val == 100
    with pytest.raises(UsageError, match="between 10 and 400"):
        make_protocol(10, 401, 400, "x")


@pytest.mark.parametrize(
    "options, fragment",
    [
        (OptimizeOptions(sampler="annealing"), "unknown sampler"),
        (OptimizeOptions(pruner="patience"), "unknown pruner"),
        (OptimizeOptions(preset="quickest"), "unknown preset"),
    ],
)
def test_unknown_names_are_refused_before_anything_opens(options, fragment):
    with pytest.raises(UsageError, match=fragment):
        check_options(options)


def test_a_preset_fills_only_what_was_not_asked():
    assert resolve_search(OptimizeOptions()) == PRESETS["fast"] == Search("tpe-mv", "auto", True, "auto", None, "wide")
    assert resolve_search(OptimizeOptions(preset="article")) == Search("tpe", "median", False, 1, 0, "article")
    assert resolve_search(OptimizeOptions(preset="article", pruner="leader", workers="auto", warm_start=True)) == (
        Search("tpe", "leader", True, "auto", 0, "article")
    )
    assert resolve_search(OptimizeOptions(sampler="gp", warm_start=False, workers=3, space="article")) == (
        Search("gp", "auto", False, 3, None, "article")
    )
    assert resolve_search(OptimizeOptions(patience=0)).patience == 0
    # the preset's "auto" pruner is the one measured for the study's space
    assert (resolve_pruner(PRESETS["fast"], "wide"), resolve_pruner(PRESETS["fast"], "article")) == (
        "halving",
        "narrowing",
    )
    assert resolve_pruner(Search("tpe", "median", False, 1), "wide") == "median"  # asked for: kept
    # and its patience: 5 for the wide space, 8 (0.7's, measured) for the article's
    assert (resolve_patience(PRESETS["fast"], "wide"), resolve_patience(PRESETS["fast"], "article")) == (5, 8)
    assert resolve_patience(resolve_search(OptimizeOptions(patience=3)), "wide") == 3


def test_the_options_are_frozen():
    with pytest.raises(FrozenInstanceError):
        OptimizeOptions().workers = 3  # type: ignore[misc]


# --- the search space, declared once ---------------------------------------------------------


@dataclass(frozen=True)
class Tiny:
    """A second search space is one declaration."""

    width: float = space.param(0.5, FloatDistribution(0.1, 1.0), "w", ".2f", contour=True)
    act: str = space.param("relu", CategoricalDistribution(["relu", "tanh"]), "", contour=True)


def test_a_second_search_space_is_one_declaration():
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    tiny = space.suggest(trial, Tiny)
    assert isinstance(tiny, Tiny) and trial.distributions == space.distributions(Tiny)
    assert space.from_params(Tiny, trial.params) == tiny
    assert space.short_text({"width": 0.25, "act": "tanh"}, Tiny) == "w=0.25 tanh"
    assert space.contour_default(Tiny) == ["width", "act"]
    with pytest.raises(ValueError, match="width must be in"):
        space.check_values(Tiny, {"width": 2.0, "act": "relu"})


def test_the_articles_space_derives_everything_from_its_fields():
    assert space.contour_default() == ["lr", "batch_size"]
    assert space.short_text(space.Hyperparams().as_dict()) == "drop=0.2 fc=128 drop2=0.1 Adam lr=1.0e-03 bs=128"
    with pytest.raises(ValueError, match="batch_size must be in 64–256"):
        space.Hyperparams(batch_size=1000)


# --- short functions, clean lint -------------------------------------------------------------


def test_no_long_function_without_a_reason():
    """Over 50 lines, a function says why it must be that long (a ``# Long:`` comment above it).
    50 as `ruff format` writes code: it spreads a long call one argument per line, and the
    functions of 40 lines before it (the limit then) came out at 41–49."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 50:
                top = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if not any("# Long:" in ln for ln in lines[max(0, top - 3) : top]):
                    long.append(f"{path.name}:{node.lineno} {node.name}")
    assert not long, long


@pytest.mark.parametrize("task", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_finds_nothing(task):
    """The linter finds nothing, and the code is as `ruff format` writes it (pyproject.toml)."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' brings it)")
    root = PACKAGE.parent
    r = subprocess.run([ruff, *task, "cnn_tune", "tests", "benchmarks"], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --- --workers auto ------------------------------------------------------------------------------


def test_auto_workers_share_out_cores_within_memory():
    from cnn_tune.search.plan import auto_workers, available_memory_gb

    assert auto_workers("cpu", None, cores=2, memory_gb=24) == 2  # one 1-thread worker per core
    assert auto_workers("cpu", 2, cores=8, memory_gb=24) == 4
    assert auto_workers("cpu", None, cores=16, memory_gb=3.5) == 3  # ~1 GB per worker
    assert auto_workers("cpu", None, cores=4, memory_gb=0.5) == 1
    assert auto_workers("cuda", None, cores=16, memory_gb=64) == 1
    with pytest.raises(UsageError, match="--threads 3 is more than the 2 core"):
        auto_workers("cpu", 3, cores=2, memory_gb=24)
    assert available_memory_gb("MemTotal: 100 kB\nMemAvailable:   2097152 kB\n") == 2.0
    assert available_memory_gb("nothing here") is None


# --- warnings ------------------------------------------------------------------------------------


def test_no_warning_is_silenced_without_a_name():
    """Only warnings named by category (and message) are hidden: never all of them at once."""
    blanket = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("simplefilter", "filterwarnings")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value == "ignore"
                and len(node.args) < 2
                and not any(k.arg == "category" for k in node.keywords)
            ):
                blanket.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not blanket, blanket


@pytest.mark.parametrize(
    "module", ["cnn_tune.search.worker", "optuna.study.study", "torch.serialization", "typer.main", "plotly.io"]
)
@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning])
def test_the_suite_fails_on_a_deprecation_from_cnn_tune_or_its_libraries(module, category):
    import warnings

    with pytest.raises(category):
        warnings.warn_explicit("going away", category, "somewhere.py", 1, module=module)
