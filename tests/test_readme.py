from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```")
    # the first two fenced blocks are the two set-up commands
    return [b.strip().removeprefix("bash").strip() for b in blocks[1:4:2]]


def test_ci_runs_the_readme_test_command_verbatim():
    main_cmd, test_cmd = _readme_commands()
    assert "pytest" in test_cmd and "pip install" in test_cmd
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
    assert main_cmd.startswith("pip install") and "tuneloop" in main_cmd


def test_the_readme_rebuilds_llama_cpp_with_the_flags_ci_uses():
    """The AMX-free build is written twice, for CI and for a user who copies the README's
    line: the two must be one set of flags."""
    import re

    def flags(text: str) -> list[str]:
        return re.findall(r'CMAKE_ARGS="([^"$]+)"', text)

    ci, readme = flags((ROOT / ".ci" / "run").read_text()), flags((ROOT / "README.md").read_text())
    assert len(ci) == 1 and "-DGGML_NATIVE=OFF" in ci[0] and not re.search(r"AMX\w*=ON", ci[0])
    assert readme == ci
