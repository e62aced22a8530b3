"""Airlock redactor: the only service that sees raw PII."""

import os

#: Thread counts for the numeric libraries under spaCy, applied before numpy loads (an explicit
#: setting in the environment wins). The NER runs on one detector thread per process by design;
#: a multi-threaded BLAS beside it only spins, and on shared or CPU-limited cores (a pod's limit
#: is not what OpenBLAS counts) each matrix product then waits for a descheduled BLAS worker.
#: Measured on the local mesh (2 shared cores, 20 requests/s offered): 4.5–6.6 requests/s
#: drained with OpenBLAS's default threads, 14.5/s with one.
SINGLE_THREADED_MATH = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

for _name, _value in SINGLE_THREADED_MATH.items():
    os.environ.setdefault(_name, _value)
