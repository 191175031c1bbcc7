"""Spotting: where in a long video the micro-expressions are (MEGC's spotting task).

Long videos (mer.datasets.long_videos) are cut into overlapping windows, each frame gets a
score, peaks become intervals, and intervals are scored against the ground truth with the
MEGC metric (IoU >= 0.5 with an interval of the same type).
"""
