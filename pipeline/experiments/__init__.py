"""Research measurements (camera control, fit calibration, the 3D-aware gain, distillation against controls), run by
benchmarks/ (their command line: ``command.run_experiment``) and tests: production code never imports them."""
