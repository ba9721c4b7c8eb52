"""How cnn-tune's processes behave: Ctrl-C, SIGTERM and SIGHUP stop a trial cooperatively
(``interrupts``), a worker dies with its parent (``lifeline``), and stdout/stderr survive a
hung-up terminal or a closed pipe (``streams``).

May import: nothing else of cnn_tune; every other part may use it.
"""

# The modules other folders (and the tests and benchmarks) may import; the rest are this folder's own.
__all__ = ["interrupts", "lifeline", "streams"]
