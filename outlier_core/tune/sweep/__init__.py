"""Sweeps: a grid of budgets × methods × seeds (× mask-rule settings), each trial one run
process, stored in SQLite beside the runs, summarised over seeds with a 95% interval.

    config.py   the grid and the trials it expands to (each trial's RunConfig replays it)
    store.py    the SQLite file: sweeps, trials, their states and metrics
    runner.py   runs the trials not yet done, and resumes a sweep that died
    results.py  a trial's metrics, the summary over seeds, the Pareto front, the tables
    plots.py    the Pareto figures, exported as PNG and SVG
"""
