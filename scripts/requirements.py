"""Print pyproject.toml's requirements one a line, for a pip install that leaves Norse's
declared torchvision out (Norse is then installed with --no-deps).

  python scripts/requirements.py [EXTRA ...]   every requirement but Norse (with extras)
  python scripts/requirements.py --norse       Norse's requirement alone

Used by scripts/setup.sh and deploy/container/Dockerfile.
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())[
    "project"
]
wanted = list(project["dependencies"])
args = sys.argv[1:]
for extra in (a for a in args if a != "--norse"):
    wanted += project["optional-dependencies"][extra]


def name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower()


norse = [s for s in wanted if name(s) == "norse"]
print("\n".join(norse if "--norse" in args else [s for s in wanted if name(s) != "norse"]))
