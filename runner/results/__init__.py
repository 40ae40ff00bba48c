"""A sweep's results: reading run folders, ranking, replicate statistics, parameter importance,
Pareto fronts, best.json's repeat command, pictures and report.html.
"""
