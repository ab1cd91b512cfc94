"""Research measurements (camera control, fit calibration, the 3D-aware gain), run by benchmarks/: production code never imports them."""
