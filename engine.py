"""The scheduling engine, for scripts and tools: `from engine import CarbonEngine, build_engine`
(a `Job` is imported from carbon_optimizer.scheduling.model, its one import path).

The service builds its engine in `carbon_optimizer.web.app.create_app`; the engine itself lives in
`carbon_optimizer/engine.py` and knows nothing of HTTP.
"""

from carbon_optimizer.engine import CarbonEngine, build_engine  # noqa: F401
