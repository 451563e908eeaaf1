"""The README and the pages in docs/ as a reader meets them: every code block runs, and every
relative link leads somewhere.

Each page runs in a fresh folder, its blocks in the order they appear: Python blocks in one
namespace (a later block uses what an earlier one made), bash blocks a command at a time, each
`basegpt ...` through `basegpt.cli.main` in this process (exit code 0, or the test fails with
its stderr), JSON blocks parsed. The few blocks and commands that cannot run here are listed
below with the reason, and a block that is neither run nor listed fails the test.

Training commands keep every flag they are written with and get flags appended that make the
model tiny and the budget two steps (later flags win), so what is tested is that the command
line is valid and the workflow goes through, not the sizes. The files a reader is assumed to
have (their notes, books, a config file) are made first. Nothing is downloaded: where the
tinyshakespeare file (SHAKESPEARE) is absent, a command that needs it must fail with the
message that says where to put the file.

Marked slow: the pages train a few small models and import transformers (~40 s in all on a
busy 2-core machine).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ORIGINAL_SNIPPET

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

# A new run: the preset's block count stays (the docs name layers), everything else shrinks.
TINY_RUN = ["--n-embed", "32", "--n-head", "2", "--n-k", "16", "--n-v", "16", "--n-ff", "64",
            "--n-context", "32", "--batch-size", "4", "--vocab-size", "300",
            "--max-bytes", "200000", "--eval-tokens", "2048", "--device", "cpu",
            "--max-steps", "2"]
# A run on a folder made by `basegpt prepare`: its text is tokenized already, so the text
# settings (vocabulary, corpus size) are not given.
PREPARED_RUN = [arg for flag, value in zip(TINY_RUN[::2], TINY_RUN[1::2])
                if flag not in ("--vocab-size", "--max-bytes") for arg in (flag, value)]
# A resume goes two steps further; a fine-tuning run keeps its source's model, so only the
# training settings shrink.
RESUME = ["--max-steps", "4"]
# A comparison: each run tiny and two steps long, one seed (its budget flag replaces the page's),
# one run at a time here (starting worker processes would take longer than the runs).
COMPARE_RUN = [arg for flag, value in zip(TINY_RUN[::2], TINY_RUN[1::2])
               if flag != "--max-steps" for arg in (flag, value)] + [
    "--budget-tokens", "256", "--seeds", "1", "--jobs", "1"]
INIT_FROM = ["--batch-size", "4", "--eval-tokens", "2048", "--device", "cpu", "--max-steps", "2"]

# Blocks that are not run, by (page, first line): why, and what tests the claim instead.
NOT_RUN_BLOCKS = {
    ("model.md", "# basegpt/model/feedforward.py"):
        "an edit to two source files; tests/test_model_components.py applies the same recipe "
        "at runtime (test_the_readme_recipe_adds_an_activation)",
    ("serve.md", "from openai import OpenAI"):
        "a client of a running server; tests/test_serve_api.py makes the same calls with the "
        "same client against a live server",
}
# Commands that are not run: why. Their basegpt arguments are still parsed.
NOT_RUN_COMMANDS = {
    "pip": "installing is what .ci/run does on a fresh machine",
    "python -m pytest": "the test suite itself",
    "torchrun": "several processes (tests/test_distributed.py trains with two) or several "
                "machines",
    "basegpt serve": "a server that runs until Ctrl-C; tests/test_serve_api.py runs the "
                     "command as a process and talks to it",
    "curl": "a request to that running server; tests/test_serve_api.py sends the same ones",
}



@dataclass(frozen=True)
class Block:
    page: Path
    line: int                 # 1-based line of the opening fence
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """The fenced (```) code blocks of a Markdown page, in order."""
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), number, []
            else:
                blocks.append(Block(page, start, lang, "\n".join(body) + "\n"))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"{page.name}:{start}: a code block is never closed"
    return blocks


def commands(block: Block) -> list[list[str]]:
    """The commands of a bash block as argv lists, as a shell splits them: continuation lines
    joined, comments dropped, `a && b` two commands."""
    found = []
    for line in block.code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            found.append(words[:end])
            words = words[end + 1:]
    return found


# ------------------------------------------------------------------------ fast checks

def test_every_block_has_a_language_the_runner_knows():
    for page in PAGES:
        for block in code_blocks(page):
            assert block.lang in {"python", "bash", "json", "text"}, \
                f"{block.where}: ```{block.lang}: tag the block python, bash, json or text"


def test_the_listed_blocks_that_do_not_run_still_exist():
    first_lines = {(b.page.name, b.code.splitlines()[0]) for p in PAGES for b in code_blocks(p)}
    stale = set(NOT_RUN_BLOCKS) - first_lines
    assert not stale, f"NOT_RUN_BLOCKS lists blocks no page has: {stale}"


def test_readme_test_command_is_the_one_ci_runs():
    """The README's two commands, and its second is what .ci/run runs, step for step (the
    comment there says to keep them in sync)."""
    quickstart = code_blocks(README)[0]
    steps = [shlex.join(argv) for argv in commands(quickstart)]
    assert steps == ["pip install torch==2.13.0", "pip install -e .", "basegpt train",
                     "pip install torch==2.13.0", "pip install -e '.[test]'", "python -m pytest -n auto"], \
        steps
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for step in ('pip install torch==2.13.0', 'pip install -e ".[test]"', "python -m pytest -n auto"):
        assert step in ci, f".ci/run no longer runs the README's `{step}`"
        assert step in quickstart.code, f"the README no longer says `{step}`"


def test_readme_shows_the_original_usage_example_verbatim():
    python = [b.code for b in code_blocks(README) if b.lang == "python"]
    assert any(ORIGINAL_SNIPPET in code for code in python), \
        "the README's Python example no longer holds the original design's snippet verbatim"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen, fence = set(), {}, False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"#+ (.*)", line)):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link and image outside code."""
    found, fence = [], False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        prose = re.sub(r"`[^`]*`", "", line)
        found += [(number, target) for target in re.findall(r"\]\(([^)\s]+)\)", prose)]
    return found


@pytest.mark.parametrize("page", [*PAGES, ROOT / "BENCHMARKS.md"], ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = []
    for number, target in links(page):
        if re.match(r"[a-z]+:", target):
            continue                                   # https:, mailto:: not ours to check
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{page.name}:{number}: {target}: no file {file.relative_to(ROOT)}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{page.name}:{number}: {target}: no heading #{anchor} in {file.name}")
    assert not broken, "\n".join(broken)


def test_the_links_checker_catches_a_missing_file_and_a_missing_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title: here\n\n[ok](#a-title-here) [gone](nope.md) [bad](#nope)\n"
                    "`[not a link](nope.md)`\n")
    targets = [target for _, target in links(page)]
    assert targets == ["#a-title-here", "nope.md", "#nope"], targets
    assert anchors(page) == {"a-title-here"}


def test_readme_links_every_docs_page():
    linked = {target.partition("#")[0] for _, target in links(README)}
    missing = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


# ------------------------------------------------------------------------ running the pages

def shrunk(argv: list[str]) -> list[str]:
    if argv[:1] == ["compare"]:
        return [arg for i, arg in enumerate(argv) if not _is_budget(argv, i)] + COMPARE_RUN
    if argv[:1] != ["train"]:
        return argv
    if "--resume" in argv:
        return argv + RESUME
    if "--init-from" in argv:
        return argv + INIT_FROM
    from basegpt.data.pipeline import is_prepared
    if len(argv) > 1 and is_prepared(argv[1]):
        return argv + PREPARED_RUN
    return argv + TINY_RUN


def _is_budget(argv: list[str], i: int) -> bool:
    """argv[i] is a --budget-* flag or its value (which COMPARE_RUN replaces: the budgets
    exclude one another)."""
    return argv[i].startswith("--budget-") or (i > 0 and argv[i - 1].startswith("--budget-"))


def reader_files(folder: Path) -> None:
    """What the pages assume a reader has: notes and books of their own, a prompt file, the
    config file that docs/training.md shows, the grid file that docs/compare.md shows, and
    the study's grid where docs/study.md finds it (it runs in the repository)."""
    from basegpt import builtin_corpus
    docs = list(builtin_corpus(400_000))
    pieces = ["".join(docs[i::6]) for i in range(6)]
    for name, text in [("notes/ideas.md", pieces[0]), ("notes/todo.md", pieces[1]),
                       ("notes/2024/march.md", pieces[2]), ("books/one.txt", pieces[3]),
                       ("books/two.txt", pieces[4]), ("books/more/three.txt", pieces[5][:60_000]),
                       ("books/more/four.txt", pieces[5][60_000:])]:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text[:60_000], encoding="utf-8")
    (folder / "start.txt").write_text("def fib(n):\n", encoding="utf-8")
    config = next(b.code for b in code_blocks(ROOT / "docs" / "training.md")
                  if b.lang == "json" and b.code.startswith('{"model"'))
    (folder / "my.json").write_text(config, encoding="utf-8")
    grid = next(b.code for b in code_blocks(ROOT / "docs" / "compare.md")
                if b.lang == "text" and b.code.startswith("# grid.toml"))
    (folder / "grid.toml").write_text(grid, encoding="utf-8")
    study = folder / "docs" / "study"                   # docs/study.md runs from the repo's root
    study.mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "study" / "grid.toml", study / "grid.toml")


# What a page expects to exist before it starts, made the way its text says: generation.md
# samples from the main job's run.
BEFORE = {"generation.md": [["train"]]}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache for all pages (tokenizers and shards are reused), with tinyshakespeare in
    it when this machine has the file."""
    folder = tmp_path_factory.mktemp("cache")
    if SHAKESPEARE.is_file():
        shutil.copy(SHAKESPEARE, folder / "shakespeare.txt")
    return folder


def offline(*args, **kwargs):
    raise urllib.error.URLError("the tests never download")


def run_basegpt(argv: list[str], where: str) -> None:
    from basegpt.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(shrunk(argv))
        except SystemExit as stop:              # argparse's own errors exit, as in a shell
            code = stop.code
    if code == 2 and "could not download dataset 'shakespeare'" in err.getvalue():
        assert not SHAKESPEARE.is_file(), f"{where}: `basegpt {shlex.join(argv)}` downloaded"
        assert "copy the file by hand to" in err.getvalue(), err.getvalue()
        return                       # offline without the file: the documented message
    assert code == 0, (f"{where}: `basegpt {shlex.join(shrunk(argv))}` exited {code}:\n"
                       f"{err.getvalue()[-3000:]}")


def run_command(words: list[str], where: str) -> None:
    command = shlex.join(words)
    reason = next((why for start, why in NOT_RUN_COMMANDS.items()
                   if command == start or command.startswith(start + " ")), None)
    if words[0] == "basegpt" and not reason:
        run_basegpt(words[1:], where)
        return
    assert reason, f"{where}: `{command}` is a command the docs runner does not know"
    from basegpt.cli import build_parser
    if words[0] == "basegpt":
        build_parser().parse_args(words[1:])                       # its flags are still valid
    elif "-m" in words and words[words.index("-m") + 1] == "basegpt":
        build_parser().parse_args(words[words.index("-m") + 2:])   # its flags are still valid


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_code_block_runs(page, cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASEGPT_CACHE", str(cache))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr("sys.stdin", io.StringIO("def \n"))       # for --interactive
    reader_files(tmp_path)
    before = set(tmp_path.rglob("*"))
    for argv in BEFORE.get(page.name, []):
        run_basegpt(argv, f"{page.name} (before it)")
    namespace: dict = {"__name__": "__docs__"}
    for block in code_blocks(page):
        if (page.name, block.code.splitlines()[0]) in NOT_RUN_BLOCKS:
            continue
        if block.lang == "python":
            exec(compile(block.code, block.where, "exec"), namespace)
        elif block.lang == "bash":
            for words in commands(block):
                run_command(words, block.where)
        elif block.lang == "json":
            json.loads(block.code)
    written = sorted(p.relative_to(tmp_path) for p in set(tmp_path.rglob("*")) - before
                     if p.is_file())
    tracked = not_ignored(written)
    assert not tracked, (f"{page.name} writes files that git would offer to commit, were its "
                         f"commands run in the repository: {tracked}; add them to .gitignore")


def not_ignored(paths: list[Path]) -> list[str]:
    """Those of `paths` (relative to the repository root) that .gitignore does not cover."""
    import subprocess
    if not paths or not (ROOT / ".git").exists():        # no checkout: nothing to commit
        return []
    names = [p.as_posix() for p in paths]
    # --no-index: the rules alone decide, whatever the index holds; exit 1 = none ignored
    proc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "--stdin"],
                          input="\n".join(names), capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    ignored = set(proc.stdout.splitlines())
    return [name for name in names if name not in ignored]
