"""The library's lines are at most 120 characters (ruff's E501, pyproject.toml), except the first line of each module's
generated `__all__`: nbdev_export wraps the names at 120 and then puts `__all__ = ` in front, which no setting changes.

    python tests/check_lines.py        (the test command runs it after nbdev_export)
"""
import json
import subprocess
import sys
from pathlib import Path

found = json.loads(subprocess.run(["ruff", "check", "memcurv", "--output-format", "json", "--exit-zero"],
                                  capture_output=True, text=True, check=True).stdout)
lines = lambda f: Path(f).read_text().splitlines()
long = [v for v in found
        if not lines(v["filename"])[v["location"]["row"] - 1].startswith("__all__ = [")]
for v in long: print(f"{v['filename']}:{v['location']['row']}: {v['code']} {v['message']}")
sys.exit(1 if long else 0)
