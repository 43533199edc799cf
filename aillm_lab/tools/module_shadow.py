"""Which files would shadow a module this Python imports, and so run inside the Lab.

The trap: the workspace is the notebook's working folder, and ipykernel puts ``''`` (the
working folder) first on ``sys.path``. A tool writes ``duckdb.py`` there; the next
``sql_query`` imports duckdb lazily and runs that file in the Lab's own process, with every
API key, outside the jail and the sandbox. The rule does not judge the file's content: a
module file (``NAME.py``, ``NAME.pyc``, ``NAME.*.so``, ``NAME.pyd``) lying directly in a
folder on this process's ``sys.path``, or anywhere below a folder ``NAME/`` there (a
package's ``__init__``, a namespace package's new part), is refused
when ``NAME`` is a top-level name this Python can import, or that an installed package may
import optionally (``importable``). Any other name
(``my_helpers.py``) is fine, and so is the same file in a folder not on ``sys.path``, and
the very file a module this process has imported was loaded from (the notebook's own
``helpers.py``: editing it changes the user's code, as editing any project file does).

The path is read at each check (a notebook may ``chdir`` or extend ``sys.path``); the
names of the standard library and installed distributions are read once, and
``sys.modules`` at each check.
"""

from __future__ import annotations

import functools
import os
import re
import sys

_MODULE_SUFFIXES = ("py", "pyc", "pyw", "so", "pyd")
_REQUIREMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # PEP 508: the name comes first


@functools.cache
def _installed_names() -> frozenset[str]:
    """The standard library's top-level names, those of installed distributions, and the
    names of the distributions they require, extras included (read once: it opens every
    distribution's metadata).

    The required names catch optional imports of modules that are not installed: duckdb
    imports pyarrow when it finds one, so a planted ``pyarrow.py`` would run too. A
    distribution's name is its module's name only by convention (``readability-lxml``
    imports ``readability``), so such a module is caught only where they agree.
    """
    from importlib.metadata import distributions, packages_distributions

    required: set[str] = set()
    for dist in distributions():
        for requirement in dist.requires or ():
            if found := _REQUIREMENT.match(requirement):
                required.add(re.sub(r"[-.]+", "_", found.group(0)).lower())
    return frozenset(sys.stdlib_module_names) | frozenset(packages_distributions()) | required


def importable(name: str) -> bool:
    """Whether ``name`` is a top-level module this process imports or could import."""
    return name in sys.modules or name in _installed_names()


def path_folders() -> set[str]:
    """The real paths of the folders on ``sys.path`` (``''`` is the working folder)."""
    found: set[str] = set()
    for entry in sys.path:
        if isinstance(entry, str):
            try:
                found.add(os.path.realpath(entry or os.getcwd()))
            except OSError:  # the working folder is gone
                continue
    return found


def module_name(filename: str) -> str | None:
    """The module a file called ``filename`` is imported as (``a.cpython-311.so`` -> ``a``),
    or None for a name Python does not import."""
    stem, _, rest = filename.partition(".")
    if not rest or rest.rsplit(".", 1)[-1] not in _MODULE_SUFFIXES or not stem.isidentifier():
        return None
    return stem


def shadowed_by(path: str, on_path: set[str] | None = None) -> str | None:
    """The importable module (dotted) that the module file at real absolute ``path`` would
    shadow or join, or None.

    A file anywhere below a folder ``NAME/`` that lies directly in a folder on ``sys.path``
    counts, not only ``NAME/__init__.py``: where ``NAME`` is a namespace package
    (``mpl_toolkits``, ``google``), a ``mpl_toolkits/mplot3d/__init__.py`` there comes before
    the installed one. ``on_path``: ``path_folders()``, when checking many files at once.
    """
    module = module_name(os.path.basename(path))
    if module is None:
        return None
    on_path = path_folders() if on_path is None else on_path
    folder = os.path.dirname(path)
    names = [] if module == "__init__" else [module]
    while folder not in on_path:
        parent, part = os.path.split(folder)
        if parent == folder or not part.isidentifier():
            return None  # no folder on sys.path above it, or not importable from one
        names.insert(0, part)
        folder = parent
    if not names or not importable(names[0]):
        return None
    dotted = ".".join(names)
    loaded = getattr(sys.modules.get(dotted), "__file__", None)
    if isinstance(loaded, str) and os.path.realpath(loaded) == path:
        return None  # the module itself, loaded from here: the user's own, not a shadow
    package = getattr(sys.modules.get(names[0]), "__path__", None) or ()
    if os.path.join(folder, names[0]) in {os.path.realpath(p) for p in package}:
        return None  # inside a package this process imported from here: the user's own
    return dotted


__all__ = ["importable", "module_name", "path_folders", "shadowed_by"]
