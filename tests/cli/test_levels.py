"""A taxonomy's levels on the command line: evaluate with --label-map, export's level columns, bad maps."""

from __future__ import annotations

import csv
import io

from ..commands.test_levels import tiered  # noqa: F401 (fixture: the scripted method with levels)
from .conftest import one_error_line


def test_evaluate_and_export_show_every_level(cli, tiered, tmp_path) -> None:  # noqa: F811
    assert cli("cluster", "--method", "tiered", "--depth", "2").code == 0
    (tmp_path / "map.csv").write_text("cat,animal\ndog,animal\ncow,animal\npig,animal\ncar,vehicle\nbus,vehicle\n"
                                      "ship,vehicle\njet,vehicle\n")
    res = cli("evaluate", "tiered", "--label-map", str(tmp_path / "map.csv"))
    assert res.code == 0, res.err
    assert "levels and scores against the mapped labels" in res.out and "tiered.level1" in res.out
    line = next(row for row in res.out.splitlines() if row.startswith("│ tiered.level1") and "of 2" in row)
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    assert cells[2:6] == ["-", "4", "2", "0.500"]  # 4 coarse clusters against animal/vehicle: one each matched
    fine = next(row for row in res.out.splitlines() if row.startswith("│ tiered ") and "2 of 2" in row)
    assert "tiered.level1" in fine
    exported = cli("export", "tiered")
    rows = list(csv.DictReader(io.StringIO(exported.out)))
    assert exported.code == 0 and rows[0]["level1_name"] == "pet" and rows[-1]["level1_name"] == "sea/air"
    assert rows[-1]["parent"] == "3" and rows[-1]["level2_name"] == "jet"
    (tmp_path / "bad.csv").write_text("cat\n")
    bad = cli("evaluate", "tiered", "--label-map", str(tmp_path / "bad.csv"))
    assert bad.code == 2 and one_error_line(bad).startswith("clipclust: error: --label-map: ")
