"""The house rules that a reader relies on: kernels in their own room, one-way imports, private
APIs in one module, no script or test imported by the library."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "spade_tf"


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """Every module imported by ``path`` (at any level of the file). ``from pkg import sub``
    counts as an import of the submodule ``pkg.sub``, not of ``pkg``'s ``__init__``."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            modules = {m for m in subs if _is_module(m)}
            out |= modules
            if len(modules) < len(subs):
                out.add(node.module)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def test_kernels_import_nothing_from_spade_tf_but_config():
    for path in (PACKAGE / "kernels").glob("*.py"):
        deps = {m for m in _imports(path) if m.startswith("spade_tf")}
        outside = {m for m in deps if not m.startswith(("spade_tf.kernels", "spade_tf.config"))}
        assert not outside, (path.name, outside)


def test_layers_define_no_kernel():
    """layers.py keeps the reference layers and small dispatchers; no custom-gradient kernel
    and none of the kernels' functions is defined there."""
    text = (PACKAGE / "layers.py").read_text()
    assert "tf.custom_gradient" not in text
    kernel_names = set()
    for path in (PACKAGE / "kernels").glob("*.py"):
        kernel_names |= set(re.findall(r"^def (\w+)", path.read_text(), re.M))
    defined = set(re.findall(r"^\s*def (\w+)", text, re.M))
    assert kernel_names and not defined & kernel_names, defined & kernel_names


def test_the_package_has_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack + [node, dep]))
            if dep not in state:
                visit(dep, stack + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_the_layers_sit_above_config_and_below_the_networks():
    graph = _graph()

    def reaches(a, b, seen=None):
        seen = seen or set()
        return b in graph[a] or any(reaches(d, b, seen | {a}) for d in graph[a] if d not in seen)

    assert not reaches("spade_tf.config", "spade_tf.layers")
    assert not reaches("spade_tf.layers", "spade_tf.models.spade.generator")
    assert not reaches("spade_tf.losses", "spade_tf.convert")
    assert not reaches("spade_tf.losses", "spade_tf.models.spade.generator")


def test_private_apis_are_reached_only_through_tf_internals():
    pattern = re.compile(r"tensorflow\.python|keras\.src|\._pywrap|\._is_stateful|"
                         r"\._functions\b|\._momentums|\._velocities|_get_variable_index|"
                         r"tensorflow\.lite\.(python|tools)|_flatten_layers|"
                         r"def _maybe_symbolic_build")
    for path in PACKAGE.rglob("*.py"):
        if path.name == "tf_internals.py":
            continue
        hits = [line for line in path.read_text().splitlines()
                if pattern.search(line) and not line.lstrip().startswith("#")]
        assert not hits, (path.name, hits)


def test_nothing_in_the_package_or_scripts_imports_tests_or_scripts():
    for path in list(PACKAGE.rglob("*.py")) + list((REPO / "scripts").glob("*.py")):
        for m in _imports(path):
            assert not m.startswith(("tests", "scripts", "conftest")), (path, m)
        assert "sys.path" not in path.read_text(), path


def test_setup_cfg_ships_every_package_and_its_data_files():
    """A wheel holds only the packages setup.cfg lists (spade_tf.kernels was once missing: the
    editable install of the tests hid it), and only the data files it names."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    value = cfg["options"]["packages"].strip()
    # setuptools' list syntax: one entry per line when the value has several lines (commas are
    # then part of an entry: a mixed list once named a package "spade_tf, spade_tf.data, ..."),
    # else comma-separated
    listed = {p.strip() for p in (value.splitlines() if "\n" in value else value.split(","))
              if p.strip()}
    present = {_module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")
               if "__pycache__" not in p.parts}
    assert present <= listed, sorted(present - listed)
    data = cfg["options.package_data"]
    folders = {package: REPO / "configs" if package == "spade_tf.configs"
               else REPO.joinpath(*package.split(".")) for package in listed}
    for folder in set(folders.values()):
        for f in folder.rglob("*"):
            if not f.is_file() or f.suffix in (".py", ".pyc") or "__pycache__" in f.parts:
                continue
            # the file belongs to the deepest package folder that holds it
            package = max((p for p, d in folders.items() if d in f.parents),
                          key=lambda p: len(folders[p].parts))
            rel = f.relative_to(folders[package]).as_posix()
            patterns = [g.strip() for g in data.get(package, "").split(",") if g.strip()]
            assert any(Path(rel).match(g) for g in patterns), (package, rel, patterns)
