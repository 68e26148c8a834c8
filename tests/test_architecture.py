"""The house rules, checked: floors with arrows only down, no cycles, small modules, no
private name reached across modules, and no document cited that the repository lacks."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tools", "agent", "evaluation")
MAX_LINES = 450


def modules() -> dict[str, Path]:
    """Every module of the floors under its installed name (tuneloop.tools.trials, ...);
    evaluation/api/ is the package `tuneloop` itself."""
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            rel = p.relative_to(ROOT).with_suffix("")
            name = "tuneloop." + ".".join(rel.parts).removesuffix(".__init__")
            out[name.replace("tuneloop.evaluation.api", "tuneloop")] = p
    return out


def imports_of(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(module, names) for every import in the file, inside functions included."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                base = f"{parent}.{base}".rstrip(".")
            found.append((base, [a.name for a in node.names]))
    return found


def test_every_import_uses_the_installed_name():
    """No module or test imports a floor by its folder name (`tools`, `agent`, ...): those
    generic names are not installed, and a user's own `tools/` would shadow them."""
    files = dict(modules()) | {f"tests.{p.stem}": p for p in (ROOT / "tests").glob("*.py")}
    bad = [f"{p.relative_to(ROOT)}: {m}" for name, p in files.items() for m, _ in imports_of(p, name)
           if m.split(".")[0] in (*PACKAGES, "prompts")]
    assert not bad, "\n".join(bad)


def test_import_linter_layers_contract_holds():
    """`lint-imports` with the contract in pyproject.toml: evaluation -> agent -> tools."""
    r = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                        "sys.argv = ['lint-imports']; lint_imports_command()"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Three floors, arrows only down KEPT" in r.stdout


def test_no_import_cycle_between_modules():
    mods = modules()
    graph = {m: {i for i, _ in imports_of(p, m) if i in mods and i != m} for m, p in mods.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(n):] + [m, n]))
            if n not in state:
                visit(n, stack + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_is_small(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES})"


def private_attributes_of_imported_modules(path: Path, name: str, mods: dict) -> list[str]:
    """`alias._name` where alias is a project module this file imported."""
    tree = ast.parse(path.read_text())
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {(a.asname or a.name): a.name for a in node.names if a.name in mods}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            aliases |= {(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names
                        if f"{node.module}.{a.name}" in mods}
    return [f"{path.relative_to(ROOT)}:{n.lineno}: {aliases[n.value.id]}.{n.attr}" for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
            and n.attr.startswith("_") and not n.attr.startswith("__")]


def test_no_private_name_imported_across_modules():
    mods = modules()
    files = dict(mods) | {f"tests.{p.stem}": p for p in (ROOT / "tests").glob("*.py")}
    bad = []
    for name, path in files.items():
        for module, names in imports_of(path, name):
            if module.split(".")[0] in ("tuneloop", "tests"):
                bad += [f"{path.relative_to(ROOT)}: {module}.{n}" for n in names
                        if n.startswith("_") and not n.startswith("__")]
                if any(part.startswith("_") and not part.startswith("__") for part in module.split(".")):
                    bad.append(f"{path.relative_to(ROOT)}: {module}")
        bad += private_attributes_of_imported_modules(path, name, mods)
    assert not bad, "private names used outside their module:\n" + "\n".join(bad)


def test_cited_documents_exist():
    """Every `something.md` the code, prompts or docs mention is in the repository, and
    nothing cites an issue, a brief or a file outside it."""
    texts = [p for p in ROOT.rglob("*") if p.suffix in (".py", ".md", ".txt", ".toml")
             and not any(part.startswith(".") or part in ("build", "runs", "results", "study") for part in p.parts)
             and p.is_file()]
    missing = set()
    for p in texts:
        for ref in re.findall(r"[\w./-]*\b[\w-]+\.md\b", p.read_text(errors="ignore")):
            ref = ref.lstrip("./")
            if p.name == "test_architecture.py" or ref.rsplit("/", 1)[-1] in ("summary.md", "study.md"):
                continue  # outputs tuneloop writes, not documents it cites
            if not ((ROOT / ref).exists() or (p.parent / ref).exists()):
                missing.add(f"{p.relative_to(ROOT)} cites {ref}")
        if p.name != "test_architecture.py" and re.search(
            r"\b(the|this) (issue|brief)\b|\.\./shared", p.read_text(errors="ignore")
        ):
            missing.add(f"{p.relative_to(ROOT)} cites a document outside the repository")
    assert not missing, "\n".join(sorted(missing))


def test_a_classical_eval_imports_no_langchain(tmp_path):
    """The run record lives below the LLM code: a study of classical methods never loads
    LangChain (measured in a fresh interpreter, the cells run in-process), its plots included."""
    code = ("import sys\nfrom tuneloop.evaluation.cli import main\n"
            f"code = main(['eval', '--functions', 'rosenbrock', '--methods', 'grid,random,cmaes,tpe', '--seeds', '0',"
            f" '--budget', '4', '--workers', '1', '--out', {str(tmp_path / 'out')!r}])\n"
            "assert code == 0, code\n"
            "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('langchain')}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
