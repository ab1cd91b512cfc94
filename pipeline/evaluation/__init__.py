"""The evaluation protocol (jobs/evaluate.py), the ground truth it scores against, and the main job's result scores."""
