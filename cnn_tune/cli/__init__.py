"""The command line: Typer commands that parse options, call one library function each and
render its result (``main`` registers them; ``search_commands``, ``study_commands`` and
``model_commands`` hold them; ``options`` declares the shared options once; ``app`` turns every
error into one line and an exit code). What each command shows: ``views`` and ``model_views``
built with the one formatter ``output``; live progress (``progress``); plots and the report
(``plots``).

May import every other part; nothing imports it.
"""

# The modules other folders (and the tests and benchmarks) may import; the rest are this folder's own.
__all__ = ["main", "plots"]
