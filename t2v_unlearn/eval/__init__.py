"""Evaluation of concept erasure: zero-shot detection, frame-level M-Score with intervals, reports.

`metrics` (pure functions of arrays), `detector` (a CLIP zero-shot classifier), `suites` (concept suites as
data), `runner` (resumable, shardable generation), `evaluate` (the procedure), `report` (HTML). The `eval` command is
`t2v_unlearn.commands.eval`.
"""
