"""Optuna with tuneloop's methods behind it, one job and several (docs/tasks.md, "Behind
Optuna"). The objective waits 0.5 s, as a training run elsewhere would (a GPU box, a
cluster job): with n_jobs workers the study takes 1/n_jobs of the time.

    python docs/examples/optuna_parallel.py random cmaes tpe llm
"""

import sys
import time

import optuna

from tuneloop.integrations.optuna import AgentSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
         "momentum": optuna.distributions.FloatDistribution(0.0, 0.99)}


def objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("learning_rate", 1e-4, 1.0, log=True)
    m = trial.suggest_float("momentum", 0.0, 0.99)
    time.sleep(0.5)
    return (lr - 0.01) ** 2 + (m - 0.9) ** 2


for method in sys.argv[1:] or ["tpe"]:
    for jobs in (1, 2) if method == "llm" else (1, 2, 4):
        sampler = AgentSampler(method=method, budget=16, seed=0, runs_dir="runs-optuna", search_space=SPACE)
        study = optuna.create_study(sampler=sampler)
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=16, n_jobs=jobs)
        wall = time.perf_counter() - t0
        print(f"{method:7s} n_jobs={jobs}: 16 trials in {wall:5.2f} s, best {study.best_value:.4f}, {sampler.close()}")
