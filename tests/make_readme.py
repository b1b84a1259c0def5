"""README.md is generated from nbs/index.ipynb: `python tests/make_readme.py` writes it, `--check` fails if it is stale."""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_text() -> str:
    nb = json.loads((ROOT / "nbs" / "index.ipynb").read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code":
            src = f"```python\n{src}\n```"
        # nbdev's "> summary" line under the title renders as a blockquote in Markdown as well
        parts.append(re.sub(r"\n{3,}", "\n\n", src.strip()))
    return "<!-- generated from nbs/index.ipynb by tests/make_readme.py: edit the notebook, not this file -->\n\n" + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    target = ROOT / "README.md"
    if "--check" in sys.argv:
        if not target.exists() or target.read_text(encoding="utf-8") != readme_text():
            sys.exit("README.md is out of sync with nbs/index.ipynb: run `python tests/make_readme.py`.")
    else:
        target.write_text(readme_text(), encoding="utf-8")
