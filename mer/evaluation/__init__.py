"""The evaluation stage: folds and seeds run, compared and reported.

stage            the driver: baselines and prior learning on every fold, then the search
search           the experiment: configurations x seeds x folds as Ray Tune trials
baselines        majority and linear (apex - onset) baselines on the same folds
results          an experiment's predictions read back, scored, intervals and paired tests
stats            bootstrap intervals, permutation tests, multiplicity adjustment
results_report   the leaderboard's table, files and plots
study            an ablation study's definition: variants, presets, comparisons, their configs
study_registration   a study registered before it runs, and checked against it after
study_table      the study's table: rows, paired tests, Holm families, claims
study_report     the study's table rendered: Markdown, CSV, plot, report.html
study_run        a study run: every variant's experiment, then the table's files
"""
