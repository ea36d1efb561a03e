"""The local stack: the Pub/Sub emulator, the DLI simulator and the function under
functions-framework, each run as a subprocess (``stack.py``), and ``dli-cancel demo``
(``demo.py``). Used by the end-to-end tests, the demo and ``make bench``; never by the function.
"""
