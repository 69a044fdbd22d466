"""Every reference in the repository resolves to something a reader of the repository can open.

Three scanners, each a function of a repository root, so the tests below can also run them on a small bad
tree and see them fail:
- `outside_citations`: no citation of a document that is not in the repository (a summary written for implementers,
  a shared folder outside the repo, an issue or an issue tracker);
- `missing_paper_sections`: every `docs/paper.md §N` (and every bare `§N` outside the notebooks, which cites
  the same notes) names a heading of docs/paper.md, and every `§9 #K` a row of its §9 table;
- `missing_paths`: every repo-relative file named in backticks or linked in README.md and docs/ exists.
"""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("minimagic", "notebooks", "tests", "bench", "scripts", "docs", "README.md")
TEXT_SUFFIXES = (".py", ".md", ".ipynb", ".txt")
THIS_FILE = "tests/test_references.py"  # it spells out the patterns it looks for
OUTSIDE = [  # (pattern, what it cites)
    (re.compile(r"\bdigest\s*§|\bthe\s+digest\b|digest\.md", re.IGNORECASE), "the implementers' digest"),
    (re.compile(r"\.\./shared|/work/shared"), "a folder outside the repository"),
    (re.compile(r"\bissues?\s*(#\s*\d+|\"|“)", re.IGNORECASE), "an issue"),
    (re.compile(r"/issues\b|/pull/\d+|\bissue[- ]tracker\b", re.IGNORECASE), "an issue tracker"),
]
SECTION = re.compile(r"(docs/paper\.md\s*)?§\s*(\d+(?:\.\d+)*)(?:\s*#(\d+))?")
PAPER_HEADING = re.compile(r"^#+\s*§(\d+(?:\.\d+)*)\s", re.MULTILINE)
TOP_LEVEL = ("minimagic/", "notebooks/", "docs/", "tests/", "bench/", "scripts/", "data/")
FILE_SUFFIX = re.compile(r"\.(py|md|ipynb|json|png|gif|npz|csv|txt|toml|yml|yaml|safetensors)$")
NOTEBOOK_NAME = re.compile(r"^\d\d_[a-z0-9_]+$")
BACKTICKED = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")


def scanned_files(root: Path) -> list[Path]:
    files = []
    for name in SCANNED:
        path = root / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        files += [p for p in candidates if p.is_file() and p.suffix in TEXT_SUFFIXES
                  and ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts]
    return [p for p in files if p.relative_to(root).as_posix() != THIS_FILE]


def text_lines(path: Path) -> list[str]:
    """The file's lines; for a notebook, its cells' sources and text outputs (not the image data)."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8").splitlines()
    lines = []
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        lines += "".join(cell["source"]).splitlines()
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")] + [output.get("data", {}).get(kind, "")
                                                for kind in ("text/plain", "text/markdown")]
            lines += "".join("".join(t) for t in texts).splitlines()
    return lines


def occurrences(root: Path, pattern: re.Pattern, files: list[Path] | None = None):
    """(where, match) for every match of `pattern`, where = "path:line"."""
    for path in files if files is not None else scanned_files(root):
        for number, line in enumerate(text_lines(path), 1):
            for match in pattern.finditer(line):
                yield f"{path.relative_to(root).as_posix()}:{number}", match


def outside_citations(root: Path) -> list[str]:
    return [f"{where}: cites {what} ({match.group(0)!r})"
            for pattern, what in OUTSIDE for where, match in occurrences(root, pattern)]


def paper_sections(root: Path) -> tuple[set[str], set[int]]:
    """The § numbers of docs/paper.md's headings, and the row numbers # of its §9 table."""
    paper = root / "docs" / "paper.md"
    if not paper.is_file():
        return set(), set()
    text = paper.read_text(encoding="utf-8")
    section_9 = re.split(r"^#+\s*§", text, flags=re.MULTILINE)
    rows = {int(row) for part in section_9 if part.startswith("9 ") for row in re.findall(r"^\|\s*(\d+)\s*\|", part,
                                                                                          re.MULTILINE)}
    return set(PAPER_HEADING.findall(text)), rows


def missing_paper_sections(root: Path) -> list[str]:
    """Notebooks are checked for `docs/paper.md §N`; other files for every `§N`, which cites the same notes."""
    sections, rows = paper_sections(root)
    problems = []
    for where, match in occurrences(root, SECTION):
        cited, section, row = match.group(1), match.group(2), match.group(3)
        if cited is None and ".ipynb:" in where:
            continue
        if section not in sections:
            problems.append(f"{where}: §{section} is not a section of docs/paper.md")
        elif row is not None and (section != "9" or int(row) not in rows):
            problems.append(f"{where}: docs/paper.md §{section} has no row #{row}")
    return problems


def cited_paths(text: str) -> list[str]:
    """Repo-relative paths named in backticks (files under a top-level folder, notebook names) or linked."""
    paths = []
    for span in BACKTICKED.findall(text):
        for token in span.split():
            token = token.strip(".,;:()'\"")
            if NOTEBOOK_NAME.match(token):
                paths.append(f"notebooks/{token}.ipynb")
            elif token.startswith(TOP_LEVEL) and FILE_SUFFIX.search(token) and not re.search(r"[*<>{}]|NAME", token):
                paths.append(token)
    return paths


def missing_paths(root: Path) -> list[str]:
    problems = []
    documents = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    for document in [d for d in documents if d.is_file()]:
        text, name = document.read_text(encoding="utf-8"), document.relative_to(root).as_posix()
        missing = [path for path in dict.fromkeys(cited_paths(text)) if not (root / path).exists()]
        problems += [f"{name}: `{path}` does not exist" for path in missing]
        for link in [a or b for a, b in LINK.findall(text)]:
            target = link.split("#")[0]
            if target and not re.match(r"[a-z]+:", target) and not (document.parent / target).exists():
                problems.append(f"{name}: link {link} does not resolve")
    return problems


def test_nothing_cites_a_document_outside_the_repository():
    assert outside_citations(ROOT) == []


def test_every_cited_paper_section_exists():
    assert missing_paper_sections(ROOT) == []


def test_every_path_in_readme_and_docs_exists():
    assert missing_paths(ROOT) == []


def write(root: Path, name: str, text: str) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text, encoding="utf-8")


def test_the_scanners_accept_a_good_tree_and_name_every_fault_in_a_bad_one(tmp_path):
    write(tmp_path, "docs/paper.md", "# notes\n## §1 Pipeline\n### §1.1 Stages\n## §9 Choices\n| # | a |\n|---|---|\n"
                                     "| 1 | x |\n| 2 | y |\n")
    write(tmp_path, "minimagic/good.py", '"""Keyframes (docs/paper.md §1.1, §9 #2), the centroid tracker."""\n'
                                         "digest = hashlib.sha1()\n")
    write(tmp_path, "README.md", "See `minimagic/good.py`, `00_data` and [notes](docs/paper.md).\n")
    write(tmp_path, "notebooks/00_data.ipynb", json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["The pipeline (docs/paper.md §1)."]}]}))
    assert outside_citations(tmp_path) == missing_paper_sections(tmp_path) == missing_paths(tmp_path) == []

    write(tmp_path, "minimagic/bad.py", '"""As the digest §5 says; see issue #18 and issue "Evaluation"."""\n'
                                        "# docs/paper.md §7, §1.2, §9 #4; ../shared/paper; github.com/o/r/issues\n")
    write(tmp_path, "notebooks/01_x.ipynb", json.dumps({"cells": [{"cell_type": "code", "source": ["x = 1"],
                                                                    "outputs": [{"text": ["see the digest"]}]}]}))
    write(tmp_path, "docs/more.md", "`docs/results/gone.md`, `02_missing` and ![fig](figures/none.png)\n")
    outside = "\n".join(outside_citations(tmp_path))
    for fault in ("minimagic/bad.py:1: cites the implementers' digest", "an issue ('issue #18')",
                  "an issue ('issue \"')", "minimagic/bad.py:2: cites a folder outside", "an issue tracker",
                  "notebooks/01_x.ipynb:2: cites the implementers' digest"):
        assert fault in outside
    assert missing_paper_sections(tmp_path) == [
        "minimagic/bad.py:1: §5 is not a section of docs/paper.md",
        "minimagic/bad.py:2: §7 is not a section of docs/paper.md",
        "minimagic/bad.py:2: §1.2 is not a section of docs/paper.md",
        "minimagic/bad.py:2: docs/paper.md §9 has no row #4",
    ]
    assert missing_paths(tmp_path) == ["docs/more.md: `docs/results/gone.md` does not exist",
                                       "docs/more.md: `notebooks/02_missing.ipynb` does not exist",
                                       "docs/more.md: link figures/none.png does not resolve"]
