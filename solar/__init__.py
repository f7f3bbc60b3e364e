"""SOLAR: depth up-scaling, instruction tuning, alignment, merging and H6 evaluation.

The library layer of the pipeline. Every stage is a plain function from a spec and
input directories to an output directory; it knows nothing of Prefect.
"""

__version__ = "0.1.0"
