"""Reporting: MLflow runs and sweeps, charts, HTML tearsheet, overfitting statistics.

Modules (imported on demand; ``mlflow`` itself is imported only when a run is logged):

* :mod:`btsys.report.mlflow_log` — ``log_run``, ``find_logged_run``, ``log_sweep_table``,
  ``record_failure``;
* :mod:`btsys.report.callback` — ``MlflowSweepCallback`` (Hydra multirun parent/child runs);
* :mod:`btsys.report.charts` — per-run PNG charts and the sweep heatmap;
* :mod:`btsys.report.tearsheet` — ``render_tearsheet`` (self-contained HTML);
* :mod:`btsys.report.stats` — daily returns, deflated Sharpe ratio, PBO by CSCV.
"""
