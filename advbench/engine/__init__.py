"""Training and evaluation loops.

- :mod:`~advbench.engine.train`: the training loop (``Trainer``), ``start_run`` and ``resume_run``;
- :mod:`~advbench.engine.setup`: a run's set-up (runtime checks, data, the model builder, speed flags, optimizer);
- :mod:`~advbench.engine.state`: what a run writes (config.json, metrics, summary.json, checkpoint state);
- :mod:`~advbench.engine.evaluate`: the evaluation loop (``evaluate_suite``) and validation accuracies;
- :mod:`~advbench.engine.job`: what an evaluation is (``EvalJob``, its fingerprint, the evaluated data);
- :mod:`~advbench.engine.shards`: sharded, resumable evaluation (resume files, the ranks' end);
- :mod:`~advbench.engine.results`: the result JSON from per-batch records;
- :mod:`~advbench.engine.hygiene`: the checks stored with every result and the model probe behind them;
- :mod:`~advbench.engine.checklist`: the checks from the published checklists (Carlini et al.; Tramèr et al.);
- :mod:`~advbench.engine.adapt`: the kinds of gradient masking the probe shows and ``--adapt``'s attack for them;
- :mod:`~advbench.engine.verdict`: a verdict per number (trustworthy, likely inflated, not meaningful).
"""
