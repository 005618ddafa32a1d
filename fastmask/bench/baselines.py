"""The libraries fastmask is compared with, loaded as they are: never restated in fastmask.

Transformers4Rec (``t4rec`` rows): the installed ``transformers4rec`` when it imports; otherwise, when
the user names a transformers4rec archive (a wheel, or the sdist that ``pip download --no-deps
transformers4rec==23.12.0`` fetches), its ``torch/masking.py``, ``torch/ranking_metric.py`` and the
modules they import (``torch/utils/torch_utils.py``, ``torch/typing.py``, ``config/schema.py``) are
executed from the archive at run time, and ``LogUniformSampler`` is taken alone from
``torch/model/prediction_task.py`` (that module pulls in T4Rec's whole model stack). Imports of
Merlin packages that are not installed get the small stand-ins below, which only let those files load.

RecBole (``recbole`` rows): its ``MaskItemSequence`` transform when ``recbole`` imports.
"""
from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import os
import sys
import tarfile
import types
import zipfile
from dataclasses import dataclass
from typing import Optional

T4REC_PACKAGE = "transformers4rec"
# Modules executed from an archive, in import order: torch_utils imports masking in a class body,
# so it must start first (masking then finds OutputSizeMixin already defined), as in T4Rec itself.
ARCHIVE_MODULES = [
    "transformers4rec.torch.typing",
    "transformers4rec.config.schema",
    "transformers4rec.torch.utils.torch_utils",
    "transformers4rec.torch.masking",
    "transformers4rec.torch.ranking_metric",
]
PREDICTION_TASK = "transformers4rec.torch.model.prediction_task"
SAMPLER_CLASS = "LogUniformSampler"


@dataclass
class T4Rec:
    """Transformers4Rec's modules as the benchmark uses them."""

    label: str  # says what was loaded, from where
    masking: types.ModuleType
    metrics: types.ModuleType  # transformers4rec.torch.ranking_metric
    utils: types.ModuleType  # transformers4rec.torch.utils.torch_utils
    sampler: Optional[type]  # LogUniformSampler, or None (see sampler_note)
    sampler_note: Optional[str] = None


class BaselineError(Exception):
    """A baseline the user asked for could not be loaded."""


# -- installed -----------------------------------------------------------------------------------
def load_installed_t4rec() -> T4Rec:
    """The installed transformers4rec; ImportError when it does not import."""
    import transformers4rec
    from transformers4rec.torch import masking, ranking_metric
    from transformers4rec.torch.model.prediction_task import LogUniformSampler
    from transformers4rec.torch.utils import torch_utils

    version = getattr(transformers4rec, "__version__", None) or _installed_version()
    return T4Rec(f"transformers4rec {version} (installed)", masking, ranking_metric, torch_utils, LogUniformSampler)


def _installed_version() -> str:
    from importlib import metadata

    try:
        return metadata.version(T4REC_PACKAGE)
    except metadata.PackageNotFoundError:
        return "?"


# -- stand-ins -----------------------------------------------------------------------------------
class Registry:
    """Stand-in for Merlin's registry: T4Rec's modules register their classes under short names."""

    def __init__(self, name: str):
        self.name = name
        self.entries: dict = {}

    @classmethod
    def class_registry(cls, name: str) -> "Registry":
        return cls(name)

    def register_with_multiple_names(self, *names):
        def register(obj):
            self.entries.update(dict.fromkeys(names, obj))
            return obj
        return register


def docstring_parameter(*args, **kwargs):
    """Stand-in for Merlin's docstring templating: leaves the object as it is (documentation only)."""
    return lambda obj: obj


class _Unused:
    """Stand-in for a Merlin schema type that the benchmarked code never touches."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("a Merlin schema stand-in was used: install merlin to run this part of T4Rec")


def _unused_function(*args, **kwargs):
    raise RuntimeError("a Merlin schema stand-in was used: install merlin to run this part of T4Rec")


# Module -> the names T4Rec's files import from it (used only where the module does not import).
STAND_INS = {
    "merlin.models.utils.registry": {"Registry": Registry},
    "merlin.models.utils.doc_utils": {"docstring_parameter": docstring_parameter},
    "merlin.schema": {"Schema": _Unused},
    "merlin.schema.io.proto_utils": {"has_field": _unused_function},
    "merlin.schema.tags": {"Tags": _Unused},
    "merlin_standard_lib": {"Schema": _Unused},
    "merlin_standard_lib.schema.schema": {"ColumnSchema": _Unused},
}


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


# -- archive -------------------------------------------------------------------------------------
class _Archive:
    """A transformers4rec wheel (zip) or sdist (tar.gz): the package's files by module name."""

    def __init__(self, path: str):
        self.path = path
        try:
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    files = {name: archive.read(name) for name in archive.namelist() if self._wanted(name)}
            elif tarfile.is_tarfile(path):
                with tarfile.open(path) as archive:
                    files = {m.name: archive.extractfile(m).read() for m in archive.getmembers()
                             if m.isfile() and self._wanted(m.name)}
            else:
                raise BaselineError(f"{path} is neither a wheel (zip) nor an sdist (tar)")
        except OSError as error:
            raise BaselineError(f"cannot read {path}: {error}") from None
        anchor = f"{T4REC_PACKAGE}/torch/masking.py"
        roots = sorted((name[: -len(anchor)] for name in files if name.endswith(anchor)
                        and name[: -len(anchor)].count("/") <= 1), key=len)
        if not roots:
            raise BaselineError(f"{path} holds no {anchor}: not a transformers4rec wheel or sdist")
        self.root = roots[0]  # "" in a wheel, "transformers4rec-23.12.0/" in an sdist
        self.files = files
        self.version = self._version()

    @staticmethod
    def _wanted(name: str) -> bool:
        return name.endswith((".py", "METADATA", "PKG-INFO"))

    def _version(self) -> str:
        for name, data in self.files.items():
            if name.endswith(("/METADATA", "PKG-INFO")) and name.count("/") <= 1:
                for line in data.decode("utf-8", "replace").splitlines():
                    if line.startswith("Version:"):
                        return line.split(":", 1)[1].strip()
        return "?"

    def member(self, module: str) -> Optional[str]:
        name = self.root + module.replace(".", "/") + ".py"
        return name if name in self.files else None

    def source(self, module: str) -> tuple[str, str]:
        """(source text, file name for tracebacks) of ``module``."""
        member = self.member(module)
        if member is None:
            raise BaselineError(f"{self.path} holds no {module.replace('.', '/')}.py")
        filename = f"{self.path}/{member}"
        text = self.files[member].decode("utf-8")
        linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
        return text, filename


class _ArchiveFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the archive's modules, their parent packages (empty: their __init__ files import all of
    T4Rec) and the stand-ins, while the benchmark loads them."""

    def __init__(self, archive: _Archive, stand_ins: dict):
        self.archive = archive
        self.stand_ins = stand_ins
        packages = {T4REC_PACKAGE}
        for name in [*ARCHIVE_MODULES, *stand_ins]:
            parts = name.split(".")
            packages.update(".".join(parts[:i]) for i in range(1, len(parts)))
        self.packages = {name for name in packages if name.startswith(T4REC_PACKAGE) or not _importable(name)}

    def find_spec(self, fullname, path=None, target=None):
        if fullname in ARCHIVE_MODULES or fullname in self.stand_ins or fullname in self.packages:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname in self.packages)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__name__
        if name in self.packages:
            module.__path__ = []
        if name in self.stand_ins:
            module.__dict__.update(self.stand_ins[name])
        elif name in ARCHIVE_MODULES:
            text, filename = self.archive.source(name)
            module.__file__ = filename
            exec(compile(text, filename, "exec"), module.__dict__)


def _loaded(names) -> dict:
    """The entries of ``sys.modules`` among ``names`` or under ``transformers4rec``."""
    return {name: module for name, module in sys.modules.items()
            if name in names or name == T4REC_PACKAGE or name.startswith(T4REC_PACKAGE + ".")}


def load_archive_t4rec(path: str) -> T4Rec:
    """Transformers4Rec's masking and metric modules executed from the archive at ``path``."""
    archive = _Archive(path)
    stand_ins = {name: names for name, names in STAND_INS.items() if not _importable(name)}
    finder = _ArchiveFinder(archive, stand_ins)
    served = {*ARCHIVE_MODULES, *finder.packages, *stand_ins}
    saved = _loaded(served)  # an installed transformers4rec must not answer the archive's imports
    for name in saved:
        del sys.modules[name]
    sys.meta_path.insert(0, finder)
    try:
        modules = {name: importlib.import_module(name) for name in ARCHIVE_MODULES}
    except BaselineError:
        raise
    except Exception as error:
        raise BaselineError(f"T4Rec's files from {path} did not load: {type(error).__name__}: {error}") from error
    finally:
        # The loaded modules keep working through their own globals; the names go back as they were,
        # so nothing else in the process sees a partial transformers4rec or a stand-in.
        sys.meta_path.remove(finder)
        for name in _loaded(served):
            del sys.modules[name]
        sys.modules.update(saved)
    sampler, note = _archive_sampler(archive)
    used = ", ".join(sorted(stand_ins)) or "none"
    label = (f"transformers4rec {archive.version} (masking.py, ranking_metric.py and their imports run from "
             f"{os.path.basename(path)}; stand-ins for {used})")
    return T4Rec(label, modules["transformers4rec.torch.masking"], modules["transformers4rec.torch.ranking_metric"],
                 modules["transformers4rec.torch.utils.torch_utils"], sampler, note)


def _archive_sampler(archive: _Archive) -> tuple[Optional[type], Optional[str]]:
    """``LogUniformSampler`` alone from prediction_task.py: the module's absolute imports (standard
    library, torch, torchmetrics) and that class definition, executed from the archive."""
    try:
        text, filename = archive.source(PREDICTION_TASK)
        tree = ast.parse(text, filename)
        body = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                and getattr(node, "level", 0) == 0]
        classes = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == SAMPLER_CLASS]
        if not classes:
            return None, f"{filename} defines no {SAMPLER_CLASS}"
        module = types.ModuleType(PREDICTION_TASK)
        module.__file__ = filename
        exec(compile(ast.Module(body=body + classes, type_ignores=[]), filename, "exec"), module.__dict__)
        return module.__dict__[SAMPLER_CLASS], None
    except Exception as error:  # the sampler cases then have no T4Rec row, with this reason
        return None, f"{SAMPLER_CLASS} did not load from {archive.path}: {type(error).__name__}: {error}"


def load_t4rec(choice: str = "auto", archive: Optional[str] = None) -> tuple[Optional[T4Rec], str]:
    """(Transformers4Rec or None, a line saying what was loaded or why nothing was).

    ``archive`` (a path) loads T4Rec's files from that wheel or sdist and fails loudly if it cannot.
    ``choice``: ``auto`` imports the installed package when there is one, ``installed`` requires it,
    ``none`` compares with the reference only. Raises ``BaselineError`` for what was asked and failed.
    """
    if choice == "none":
        return None, "not timed (--t4rec none): only fastmask's reference was compared"
    if archive is not None:
        if choice == "installed":
            raise BaselineError("--t4rec installed and --t4rec-wheel ask for two different baselines")
        t4rec = load_archive_t4rec(archive)
        return t4rec, t4rec.label
    try:
        t4rec = load_installed_t4rec()
    except ImportError as error:
        if choice == "installed":
            raise BaselineError(f"--t4rec installed, but transformers4rec does not import: {error}") from None
        return None, (f"not loaded (transformers4rec does not import: {error}; pass --t4rec-wheel PATH): "
                      "only fastmask's reference was compared")
    return t4rec, t4rec.label


# -- RecBole -------------------------------------------------------------------------------------
class RecBole:
    """RecBole's BERT4Rec ``mask_itemseq`` transform (``recbole.data.transform.MaskItemSequence``)."""

    def __init__(self):
        import recbole
        from recbole.data.interaction import Interaction
        from recbole.data.transform import MaskItemSequence

        self.interaction = Interaction
        self.transform = MaskItemSequence
        self.label = f"recbole {getattr(recbole, '__version__', '?')} MaskItemSequence (installed)"

    def mask_itemseq(self, item_seq, n_items: int, mask_ratio: float, max_seq_length: int):
        """The transform's call on a batch ``item_seq`` of a dataset with ``n_items`` items."""
        config = {  # the configuration keys the transform reads
            "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list", "ITEM_LIST_LENGTH_FIELD": "item_length",
            "MAX_ITEM_LIST_LENGTH": max_seq_length, "mask_ratio": mask_ratio,
        }
        transform = self.transform(config)
        dataset = _ItemCount(n_items)
        interaction = self.interaction({"item_id_list": item_seq})
        return lambda: transform(dataset, interaction)


class _ItemCount:
    """What the transform asks of a RecBole dataset: its number of items."""

    def __init__(self, n_items: int):
        self.n_items = n_items

    def num(self, field: str) -> int:
        return self.n_items


def load_recbole() -> tuple[Optional[RecBole], str]:
    try:
        recbole = RecBole()
    except ImportError as error:
        return None, f"not loaded (recbole does not import: {error}): the BERT4Rec cases have no baseline"
    return recbole, recbole.label


@dataclass
class Baselines:
    """Every baseline library of a run, by the name the cases use, with a line on each."""

    libraries: dict  # name -> loaded library or None
    notes: dict  # name -> what was loaded, or why not

    def get(self, name: Optional[str]):
        return self.libraries.get(name) if name else None
