"""The wheel carries the dashboard's page, script, styles and chart library (package data)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGE_DATA = [
    "vermilion/dashboard/templates/index.html",
    "vermilion/dashboard/static/dashboard.js",
    "vermilion/dashboard/static/dashboard.css",
    "vermilion/dashboard/static/uPlot.iife.min.js",
    "vermilion/dashboard/static/uPlot.min.css",
    "vermilion/dashboard/static/uPlot.LICENSE",
]


def test_the_wheel_holds_the_dashboards_files(tmp_path: Path) -> None:
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path)]
    subprocess.run([*build, str(ROOT)], check=True, timeout=300)
    [wheel] = tmp_path.glob("vermilion-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in PACKAGE_DATA:
            assert name in names, name
            assert archive.read(name) == (ROOT / "src" / name).read_bytes(), name
