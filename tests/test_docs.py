"""The documentation: the mkdocs site builds with --strict (broken links, anchors and
docstring references fail it), and every relative link in README.md names an existing file."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")


def relative_links(markdown: str) -> list[str]:
    """Link targets of a Markdown text that are paths in the repository (no scheme, not a
    bare #anchor), outside code."""
    text = INLINE_CODE.sub("", FENCE.sub("", markdown))
    targets = [*INLINE_LINK.findall(text), *REFERENCE_LINK.findall(text), *HTML_LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^#|^//", t)]


def test_relative_links_parsed():
    text = ("[a](docs/a.md) [b](docs/b.md#part) [c](https://x.org/y) [d](#here) `[e](no.md)`\n"
            "```\n[f](no.md)\n```\n[g]: docs/g.md\n<img src=\"docs/h.png\">")
    assert relative_links(text) == ["docs/a.md", "docs/b.md#part", "docs/g.md", "docs/h.png"]


def test_readme_relative_links_exist():
    readme = ROOT / "README.md"
    links = relative_links(readme.read_text(encoding="utf-8"))
    assert links, "README.md links into docs/"
    missing = [t for t in links if not (readme.parent / t.split("#")[0].split("?")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-f",
         str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (site / "index.html").is_file()
    api = (site / "reference" / "unet_jax" / "index.html").read_text(encoding="utf-8")
    for name in ("list_models", "create_model", "load_torch", "to_torch_state_dict", "load",
                 "save", "predict"):
        assert f'id="unet_jax.{name}"' in api, f"unet_jax.{name} missing from the API reference"
