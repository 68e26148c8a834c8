"""Every module's docstring examples run, under the module's installed name (tuneloop.*).

The examples get `tmp`, a fresh temporary folder, for anything they write."""

import doctest
import importlib
import pkgutil

import pytest

import tuneloop

SKIP_PREFIXES = ("tuneloop.evaluation.service.static",)


def all_modules() -> list[str]:
    names = ["tuneloop"]
    for info in pkgutil.walk_packages(tuneloop.__path__, "tuneloop."):
        names.append(info.name)
    return sorted(n for n in names if not n.startswith(SKIP_PREFIXES))


def test_modules_are_found():
    mods = all_modules()
    assert {"tuneloop.tools.trials", "tuneloop.agent.gbnf", "tuneloop.evaluation.strategies"} <= set(mods)


@pytest.mark.parametrize("name", all_modules())
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes without `tmp` writes here, not in the repository
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(module, name, extraglobs={"tmp": tmp_path})
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_public_api_names_resolve():
    """`tuneloop.__all__` lists exactly the names the package resolves, each from its home."""
    for name in tuneloop.__all__:
        assert getattr(tuneloop, name) is not None, name
    assert sorted(tuneloop.__all__) == sorted(dir(tuneloop))
