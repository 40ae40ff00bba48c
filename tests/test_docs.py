"""The documentation: the site builds strictly, and the README is a short first page whose two
commands come first and whose every relative link leads to a file that exists.

`mkdocs build --strict` (mkdocs.yml: strict, every validation at `warn`) fails on a link to a
missing page or heading, on a page left out of the nav and on a nav entry without its page.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
INSTALL_AND_RUN = "pip install -e . && python -m runner"
INSTALL_AND_TEST = 'pip install -e ".[test]" && python -m pytest'
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def code_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, content) of each fenced block, in order."""
    blocks, start, body = [], None, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if start is None:
                start, body = number, []
            else:
                blocks.append((start, "\n".join(body).strip()))
                start = None
        elif start is not None:
            body.append(line)
    return blocks


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "benchmarks" / "index.html").exists()


def test_a_strict_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    """The check above can fail: the same configuration over a page with a dead link aborts."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[gone](missing.md), [no heading](index.md#nowhere)\n")
    config = (ROOT / "mkdocs.yml").read_text()
    config = re.sub(r"(?ms)^nav:.*", "nav:\n  - Home: index.md\n", config)
    (tmp_path / "mkdocs.yml").write_text(config)
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "missing.md" in proc.stderr and "#nowhere" in proc.stderr


def test_the_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    blocks = code_blocks(text)
    assert [body for _, body in blocks[:2]] == [INSTALL_AND_RUN, INSTALL_AND_TEST]
    assert blocks[1][0] <= 20, "the two commands belong on the first screen"
    # CI runs the README's test command, word for word
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == INSTALL_AND_TEST


def test_the_readme_is_a_first_page_not_the_manual() -> None:
    assert len(README.read_text().splitlines()) <= 300


def test_every_relative_link_in_the_readme_leads_to_a_file() -> None:
    targets = LINK.findall(README.read_text())
    relative = [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    assert len(relative) >= 10  # the docs pages and a picture: the pattern finds them
    missing = [t for t in relative if not (ROOT / unquote(t.split("#", 1)[0])).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_the_docs_speak_to_a_user() -> None:
    """No issue numbers, agents or sessions: what a thing means for a user."""
    pattern = re.compile(r"\bissue \d+|\bagents?\b|\bsessions?\b", re.IGNORECASE)
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        hits = [line for line in page.read_text().splitlines() if pattern.search(line)]
        assert not hits, f"{page.relative_to(ROOT)}: {hits}"
