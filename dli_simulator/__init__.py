"""A local DLI (Data Lake Insight) simulator, standard library only: ``python -m dli_simulator``.

For the tests, the demo and ``dli-cancel simulator``; the deployed function never imports it
and the wheel does not contain it. See :mod:`dli_simulator.simulator` for what it serves.
"""

from dli_simulator.model import Fault, Headers, RequestRecord
from dli_simulator.simulator import Simulator, main

__all__ = ["Fault", "Headers", "RequestRecord", "Simulator", "main"]
