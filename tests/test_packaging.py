"""The wheel installs one import namespace, `acepilot`.

Generic top-level names (`server`, `training`) in site-packages collide with any
other distribution that has them; everything Acepilot ships lives under
`acepilot.` and the wheel's top-level entries say so.
"""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_wheel_has_one_top_level_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=REPO_ROOT,
        check=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("acepilot-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {
        "acepilot",
        f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info",
    }
    # the subpackages travel inside it, and the console script points into it
    assert "acepilot/server/cli.py" in names
    assert "acepilot/training/cli.py" in names
    assert "acepilot/server/lsp/server.py" in names
    entry_points = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith("entry_points.txt")))
        .decode()
    )
    assert "acepilot = acepilot.server.cli:main" in entry_points
