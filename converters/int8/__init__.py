"""INT8: calibration, the Q/DQ placements per target, the check against FP32, and accuracy-controlled fallback."""
