"""The README's examples run as written (issue 9, section 6).

* Every ```python block of README.md runs, in README order, in one fresh interpreter, each
  block in a namespace of its own (a reader copies one block, not the page), in a temporary
  directory with ``TRADING_CACHE_DB`` on a temporary file, offline (demo source, no Alpaca
  keys, no Prefect server). A statement whose line ends with a ``# -> expected`` comment is
  checked: a ``print(...)`` must print ``expected``, an expression's ``repr`` must equal it
  (text after the last ``-> ``, up to two spaces that start a note).
* Every command in a ```bash / ```sh block (and every ``$ `` line of a ```console block) that
  starts with a program of the virtualenv (``prefect``, ``cache-manager``, ``python``, ``dask``,
  ...) names it as ``.venv/bin/...``, or follows a line that activates the venv: the commands
  must work in a fresh shell, where ``prefect`` is not on the ``PATH``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent


def fenced_blocks(text: str, languages: set[str]) -> list[tuple[int, str, str]]:
    """``(first line number, language, code)`` of the fenced blocks in ``languages``."""
    out: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^```(\w*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        lang, start = match.group(1), i + 1
        end = start
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if lang in languages:
            out.append((start + 1, lang, "\n".join(lines[start:end]) + "\n"))
        i = end + 1
    return out


def test_the_block_extractor_finds_every_python_block():
    text = "x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = 2\n```\n"
    assert fenced_blocks(text, {"python"}) == [(3, "python", "a = 1\n"), (9, "python", "b = 2\n")]
    assert len(fenced_blocks(README.read_text(), {"python"})) == 6


# Runs in the subprocess: argv[1] is a JSON list of [line, code]; prints one JSON result.
_RUNNER = r'''
import ast, contextlib, io, json, re, sys, traceback

def expected_of(line):
    if "#" not in line or "-> " not in line:
        return None
    tail = line.split("#", 1)[1].rsplit("-> ", 1)[1]
    return tail.split("  ")[0].strip()

results = []
for first_line, code in json.loads(sys.argv[1]):
    lines = code.splitlines()
    namespace = {"__name__": "__readme__"}
    checks, error = [], None
    try:
        for stmt in ast.parse(code).body:
            want = expected_of(lines[stmt.end_lineno - 1])
            piece = compile(ast.Module([stmt], []), f"README.md:{first_line + stmt.lineno - 1}", "exec")
            if want is None:
                exec(piece, namespace)
                continue
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and getattr(stmt.value.func, "id", "") == "print":
                buffer = io.StringIO()
                with contextlib.redirect_stdout(buffer):
                    exec(piece, namespace)
                got = buffer.getvalue().strip()
            elif isinstance(stmt, ast.Expr):
                got = repr(eval(compile(ast.Expression(stmt.value), "README.md", "eval"), namespace))
            else:
                raise AssertionError(f"line {first_line + stmt.lineno - 1}: '# -> ' after a statement that is not an expression")
            checks.append([first_line + stmt.lineno - 1, want, got])
    except BaseException:
        error = traceback.format_exc(limit=6)
    results.append({"line": first_line, "error": error, "checks": checks})
print("\n@@RESULTS@@" + json.dumps(results))
'''


@pytest.fixture(scope="module")
def python_results(tmp_path_factory) -> dict[int, dict]:
    blocks = fenced_blocks(README.read_text(), {"python"})
    work = tmp_path_factory.mktemp("readme")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "ALPACA_"))}
    env.update(TRADING_CACHE_DB=str(work / "cache.db"), PYTHONPATH=str(ROOT), DO_NOT_TRACK="1",
               PREFECT_SERVER_EPHEMERAL_ENABLED="false")
    proc = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps([[line, code] for line, _, code in blocks])],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.rsplit("@@RESULTS@@", 1)[1])
    return {r["line"]: r for r in results}


@pytest.mark.parametrize("line", [line for line, _, _ in fenced_blocks(README.read_text(), {"python"})],
                         ids=lambda line: f"README.md:{line}")
def test_readme_python_block_runs_as_written(python_results, line):
    result = python_results[line]
    assert result["error"] is None, result["error"]
    for at, want, got in result["checks"]:
        assert got == want, f"README.md:{at} documents {want!r}, the code gives {got!r}"


def test_readme_documents_outputs_that_are_checked(python_results):
    """The examples keep their documented outputs (each is checked above)."""
    checked = [c for r in python_results.values() for c in r["checks"]]
    assert len(checked) >= 8
    assert ["1 504"] in [[want] for _, want, _ in checked]  # the sync of two symbols over 2024


# -- shell commands ------------------------------------------------------------------------------

_ACTIVATE = re.compile(r"^(\.|source)\s+\.venv/bin/activate\b")


def shell_commands(code: str, lang: str) -> list[str]:
    """The command lines of a block (continuations joined, comments and output dropped)."""
    out: list[str] = []
    pending = ""
    for raw in code.splitlines():
        line = raw.strip()
        if lang == "console" and not pending:  # a transcript: only "$ " lines are commands
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        line = pending + line
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        out.append(line.split(" #", 1)[0].strip())
    return out


def program_of(command: str) -> str:
    """The program a command runs (leading ``VAR=value`` assignments skipped)."""
    words = shlex.split(command)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)
    return words[0] if words else ""


def unreachable_commands(text: str) -> list[str]:
    bad = []
    for line, lang, code in fenced_blocks(text, {"bash", "sh", "shell", "console"}):
        activated = False
        for command in shell_commands(code, lang):
            if _ACTIVATE.match(command):
                activated = True
                continue
            program = program_of(command)
            if "/" in program or activated:
                continue
            if (VENV_BIN / program).exists() and program not in ("pip", "pip3"):
                bad.append(f"README.md:{line}: {command}")
    return bad


def test_the_command_check_bites():
    text = ("```bash\nprefect server start\nX=1 python deployments/serve.py\n```\n"
            "```console\n$ cache-manager stats\nBars 5\n```\n"
            "```bash\n. .venv/bin/activate\nprefect worker start --pool p\n.venv/bin/cache-manager stats\nmake test\n```\n")
    assert unreachable_commands(text) == [
        "README.md:2: prefect server start",
        "README.md:2: X=1 python deployments/serve.py",
        "README.md:6: cache-manager stats",
    ]


def test_readme_shell_commands_work_without_an_activated_venv():
    assert unreachable_commands(README.read_text()) == []


def test_every_test_the_guarantees_name_exists():
    """The Guarantees section names the tests that prove each promise: each must exist."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(test_\w+\.py)(?:::(test_\w+))?`|`::(test_\w+)`", section)
    assert len(named) >= 15, "the Guarantees table lost its test references"
    current_file = None
    for file_name, test_name, bare_test in named:
        if file_name:
            current_file = file_name
            assert (ROOT / "tests" / file_name).exists(), file_name
        name = test_name or bare_test
        if name:
            assert current_file is not None
            source = (ROOT / "tests" / current_file).read_text(encoding="utf-8")
            assert re.search(rf"^def {name}\(", source, re.M), f"{current_file}::{name} is gone"
