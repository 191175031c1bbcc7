"""The synthetic dataset: settings and presets (settings), what each clip shows (plan), the
procedural faces (faces) and the generator writing real dataset layouts (generator)."""
