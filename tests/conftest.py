import os

# numba's thread pool: the two cores of the machines this runs on
os.environ.setdefault("NUMBA_NUM_THREADS", "2")
