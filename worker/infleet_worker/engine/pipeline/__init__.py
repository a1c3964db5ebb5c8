"""Pipeline parallelism inside one worker: a model split into stages over several devices.

- :mod:`.schedule`: the GPipe fill/drain clock cycles and micro-batch sizes (pure).
- :mod:`.partition`: the model's blocks, balanced into stages or split where the user said.
- :mod:`.packet`: packets between stages, tasks and answers.
- :mod:`.stage`: one thread, device and CUDA stream per stage; cross-device copies.
- :mod:`.runner`: the driver (a Runner), errors per batch, the watchdog, shutdown.
- :mod:`.build`: ``load_pipeline_engine(cfg)``, what the loader calls for N > 1.
"""

from infleet_worker.engine.pipeline.schedule import clock_cycles, split_sizes

__all__ = ["clock_cycles", "split_sizes"]
