"""Reports: run directories -> one tidy DataFrame -> a grid -> markdown / csv / latex / json."""

from advbench.report.frame import load_frame
from advbench.report.grids import comparison_grid
from advbench.report.render import FORMATS, render

__all__ = ["FORMATS", "comparison_grid", "load_frame", "render"]
