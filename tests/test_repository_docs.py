"""Every document and test file the code cites exists in the repository (a clone has no ../shared/docs)."""
import re
import subprocess

from conftest import ROOT

CITED = re.compile(r"(?<![\w/.])((?:docs|tests|bench|tools|weights)/[\w./-]+\.(?:md|py|sh|json))")


def _tracked(*folders):
    out = subprocess.run(["git", "ls-files", *folders], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / f for f in out.stdout.split() if f.endswith((".py", ".md", ".sh", ".toml"))]


def test_cited_files_exist():
    missing = []
    for path in _tracked("core", "echomask_blender", "tests", "bench", "tools", "docs", "weights", "README.md"):
        for cited in CITED.findall(path.read_text(encoding="utf-8")):
            if not (ROOT / cited).exists():
                missing.append(f"{path.relative_to(ROOT)} cites {cited}")
    assert not missing, "\n".join(missing)


def test_no_citation_of_the_shared_docs():
    bad = [str(p.relative_to(ROOT)) for p in _tracked("core", "echomask_blender")
           if "shared/docs" in p.read_text(encoding="utf-8")]
    assert not bad, bad
