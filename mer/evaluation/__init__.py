"""The evaluation stage: folds and seeds run, compared and reported.

stage            the driver: baselines and prior learning on every fold, then the search
search           the experiment: configurations x seeds x folds as Ray Tune trials
baselines        majority and linear (apex - onset) baselines on the same folds
results          an experiment's predictions read back, scored, intervals and paired tests
stats            bootstrap intervals, permutation tests, multiplicity adjustment
results_report   the leaderboard's table, files and plots
study, study_report   an ablation study: one experiment per variant, its table and plot
"""
