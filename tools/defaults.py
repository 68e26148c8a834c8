"""Defaults of the kernel's run settings, as plain constants so that the CLI can show
them without importing numba. tools.momentum re-exports them; nothing else restates them."""

DEFAULT_X0 = (-1.5, 2.0)  # the study's start point
DEFAULT_MAX_ITER = 5000  # the study's T for the grid
DEFAULT_TOL = 1e-6  # stop when ||v_{t+1}|| < tol
DEFAULT_NESTEROV = False  # the knobs of the update (tools/knobs.py), all off: plain heavy-ball momentum
DEFAULT_LR_DECAY = 0.0  # alpha_t = alpha / (1 + lr_decay t)
DEFAULT_GRAD_CLIP: float | None = None  # clip the gradient's norm at this; None: never
START_SPECS = ("paper", "random")  # named start points: the study's, or one drawn from the seed
SWEEP_LR = (1e-5, 1e-1)  # the default box of a landscape sweep (and of `tuneloop bench`'s workload)
SWEEP_MOMENTUM = (0.0, 0.99)
